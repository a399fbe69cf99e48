"""Chassis heartbeats and the NB store: the change log's growth and the watchers' work, with
heartbeats as logged commits ("before") and as liveness records with compaction ("after").

N simulated chassis, each a process with one store client, as df-controller has: one thread
heartbeats every --interval seconds (time-compressed: the real interval is 2 s), another follows
the change log as the controller does (changes()/wait() in a loop, every document parsed into
its model, a resync from snapshot() on Compacted). The two modes run one after the other in one
run, each on a fresh store (and a fresh etcd or redis server):
  before  every heartbeat is a Put of the chassis record, as the controller did; no compaction
  after   every heartbeat is store.heartbeat() (a ChassisStatus, ttl 3 intervals);
          a compactor (dragonflow.store.compaction.run, df-api's) runs with the default policy,
          its times compressed like the heartbeats'
The store's size at the start and the end of each mode (sqlite: its files; redis: used memory
and the stream's length; etcd: its database size and revision) and the watchers' CPU seconds
(their threads' own clocks, summed) are printed side by side. No Open vSwitch is involved.

Run: .venv/bin/python bench/store_growth.py [--store sqlite|etcd|redis] [--chassis 10]
         [--interval 0.05] [--beats 900] [--tmp DIR]
"""
import argparse
import multiprocessing
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
import requests  # noqa: E402
from oslo_config import cfg  # noqa: E402

from dragonflow import conf as df_conf  # noqa: E402
from dragonflow import store as nb  # noqa: E402
from dragonflow.lab import stores  # noqa: E402
from dragonflow.model.objects import MODELS, ChassisStatus  # noqa: E402
from dragonflow.store import api, compaction  # noqa: E402

REAL_INTERVAL = 2.0     # seconds between a controller's heartbeats ([controller] default)
HOST = '127.0.0.1'
START_TIMEOUT = 120
NETWORKS = [str(uuid.UUID(int=n)) for n in range(1, 4)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--store', choices=['sqlite', 'etcd', 'redis'], default='sqlite')
    parser.add_argument('--chassis', type=int, default=10)
    parser.add_argument('--interval', type=float, default=0.05,
                        help='seconds between heartbeats here (the real interval is 2 s)')
    parser.add_argument('--beats', type=int, default=900,
                        help='heartbeats per chassis (900: 30 minutes at the real interval)')
    parser.add_argument('--with-time', action='store_true',
                        help='after: add a timestamp to the status, as the controller once did '
                             '(it changes with every beat, so on etcd every beat is a put)')
    parser.add_argument('--tmp', default=None, help='where the stores live')
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix='df-bench-growth-', dir=args.tmp)
    try:
        results = {mode: run_mode(mode, args, work) for mode in ('before', 'after')}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, args)
    return 0


# --- one mode ----------------------------------------------------------------------------------

def run_mode(mode: str, args, work: str) -> dict:
    print(f'{mode}...', file=sys.stderr, flush=True)
    with _fresh_store(args.store, os.path.join(work, mode)) as (url, measure):
        ctx = multiprocessing.get_context('spawn')
        registered, go = ctx.Barrier(args.chassis + 1), ctx.Barrier(args.chassis + 1)
        beaten, results = ctx.Queue(), ctx.Queue()
        origin, final = ctx.Value('q', 0), ctx.Value('q', 0)
        procs = [ctx.Process(target=chassis, daemon=True, name=f'chassis-{n}',
                             args=(url, n, mode, args, registered, go, beaten, origin, final,
                                   results))
                 for n in range(args.chassis)]
        for proc in procs:
            proc.start()
        store = nb.connect(url)
        stop = threading.Event()
        try:
            registered.wait(START_TIMEOUT)
            start = measure()
            origin.value = store.revision()  # every chassis registered: watchers start here
            compactor = compaction.run(store, _compaction_conf(args), stop) \
                if mode == 'after' else None
            go.wait(START_TIMEOUT)
            begin = time.monotonic()
            beat_times = [beaten.get(timeout=START_TIMEOUT + args.beats * args.interval * 10)
                          for _ in procs]
            elapsed = time.monotonic() - begin
            final.value = store.revision()  # every beat is in: the watchers drain up to here
            watchers = [results.get(timeout=START_TIMEOUT) for _ in procs]
            for proc in procs:
                proc.join(START_TIMEOUT)
            stop.set()
            if compactor is not None:
                compactor.join()
            end = measure()
            head = store.head()
        finally:
            stop.set()
            for proc in procs:
                if proc.is_alive():
                    proc.kill()
            store.close()
    return {'start': start, 'end': end, 'elapsed': elapsed, 'commits': head.commits,
            'beats': sum(b['beats'] for b in beat_times),
            'beat_cpu': sum(b['cpu'] for b in beat_times),
            'watch_cpu': sum(w['cpu'] for w in watchers),
            'events': sum(w['events'] for w in watchers),
            'resyncs': sum(w['resyncs'] for w in watchers)}


def _compaction_conf(args):
    """The default policy, its times compressed as the heartbeats' are."""
    conf = cfg.ConfigOpts()
    df_conf.register_opts(conf)
    conf([])
    scale = args.interval / REAL_INTERVAL
    conf.set_override('compact_keep_seconds', conf.store.compact_keep_seconds * scale, 'store')
    conf.set_override('compact_interval', max(conf.store.compact_interval * scale, 1.0),
                      'store')
    return conf


# --- a chassis (a child process) ---------------------------------------------------------------

def chassis(url, n, mode, args, registered, go, beaten, origin, final, results) -> None:
    store = nb.connect(url)
    name = f'chassis-{n}'
    store.put('chassis', name, _chassis_record(name, 0) if mode == 'before'
              else {'id': name, 'tunnel_ip': f'10.0.0.{n + 1}', 'tunnel_types': ['vxlan']})
    registered.wait(START_TIMEOUT)
    go.wait(START_TIMEOUT)
    watcher = Watcher(store, origin.value, final)
    watcher.thread.start()
    cpu, begin = time.thread_time(), time.monotonic()
    for k in range(args.beats):
        pause = begin + k * args.interval - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        if mode == 'before':
            store.put('chassis', name, _chassis_record(name, watcher.after))
        else:
            status = ChassisStatus(revision_seen=watcher.after, networks=NETWORKS).model_dump()
            if args.with_time:
                status['time'] = time.time()
            store.heartbeat(name, status, 3 * args.interval)
    beaten.put({'beats': args.beats, 'cpu': time.thread_time() - cpu})
    watcher.thread.join()
    results.put({'cpu': watcher.cpu, 'events': watcher.events, 'resyncs': watcher.resyncs})
    store.close()


def _chassis_record(name: str, revision_seen: int) -> dict:
    """The chassis record the controller wrote at every heartbeat."""
    return {'id': name, 'tunnel_ip': '10.0.0.1', 'tunnel_types': ['vxlan'],
            'heartbeat': time.time(), 'revision_seen': revision_seen, 'networks': NETWORKS,
            'routers': []}


class Watcher:
    """Follows the change log as the controller does, until it has seen ``final``'s revision
    (set by the parent once every heartbeat is in)."""

    def __init__(self, store: api.Store, after: int, final):
        self.store, self.after, self.final = store, after, final
        self.cpu, self.events, self.resyncs = 0.0, 0, 0
        self.thread = threading.Thread(target=self._run, name='watcher')

    def _run(self) -> None:
        cpu = time.thread_time()
        while True:
            try:
                batch = self.store.changes(self.after)
            except api.Compacted:
                self.after, records = self.store.snapshot()
                self.resyncs += 1
                for record in records:
                    MODELS[record.table].from_doc(record.value, record.revision)
                continue
            if not batch:
                if self.final.value and self.after >= self.final.value:
                    break
                self.store.wait(self.after, 0.5)
                continue
            for event in batch:
                if not event.deleted:
                    MODELS[event.table].from_doc(event.value, event.revision)
            self.events += len(batch)
            self.after = batch[-1].revision
        self.cpu = time.thread_time() - cpu


# --- stores and their sizes --------------------------------------------------------------------

class _fresh_store:
    """A fresh store of the driver (etcd and redis: a server of its own) and a function that
    measures its size."""

    def __init__(self, driver: str, directory: str):
        self.driver, self.directory, self.servers = driver, directory, []
        os.makedirs(directory)

    def __enter__(self):
        if self.driver == 'sqlite':
            path = os.path.join(self.directory, 'nb.db')
            return f'sqlite://{path}', lambda: _sqlite_size(path)
        if self.driver == 'etcd':
            self.servers = stores.start_all(stores.etcd_members(HOST, 1, tmp=self.directory))
            port = self.servers[0].port
            return f'etcd://{HOST}:{port}/dragonflow/', lambda: _etcd_size(port)
        self.servers = stores.start_all([stores.redis_server(HOST, tmp=self.directory)])
        port = self.servers[0].port
        return f'redis://{HOST}:{port}/0', lambda: _redis_size(port)

    def __exit__(self, *exc):
        for server in self.servers:
            server.stop()


def _sqlite_size(path: str) -> dict:
    def size(*names):
        return sum(os.path.getsize(n) for n in names if os.path.exists(n))

    db = sqlite3.connect(path)
    changes = db.execute('SELECT count(*) FROM changes').fetchone()[0]
    db.close()
    return {'store bytes (file + WAL)': size(path, path + '-wal'),
            'liveness bytes (file + WAL)': size(path + '-liveness', path + '-liveness-wal'),
            'changes kept': changes}


def _etcd_size(port: int) -> dict:
    status = requests.post(f'http://{HOST}:{port}/v3/maintenance/status', json={},
                           timeout=10).json()
    return {'db bytes': int(status['dbSize']), 'db bytes in use': int(status['dbSizeInUse']),
            'etcd revision': int(status['header']['revision'])}


def _redis_size(port: int) -> dict:
    client = redis.Redis(host=HOST, port=port, socket_timeout=10)
    try:
        return {'used memory bytes': client.info('memory')['used_memory'],
                'stream entries': client.xlen('dragonflow:log')}
    finally:
        client.close()


# --- report ------------------------------------------------------------------------------------

def report(results: dict, args) -> None:
    simulated = args.beats * REAL_INTERVAL / 60
    print(f'\nStore growth, {args.store}: {args.chassis} chassis, {args.beats} heartbeats each '
          f'every {args.interval} s (= {simulated:.0f} simulated minutes at {REAL_INTERVAL:.0f} '
          f's), one watcher per chassis; {os.cpu_count()} cores')
    rows = []
    for key in results['before']['start']:
        for when in ('start', 'end'):
            rows.append((f'{key}, {when}', lambda r, k=key, w=when: f'{r[w][k]:,}'))
    rows += [
        ('commits (whole run)', lambda r: f'{r["commits"]:,}'),
        ('heartbeats', lambda r: f'{r["beats"]:,}'),
        ('seconds', lambda r: f'{r["elapsed"]:.1f}'),
        ('events parsed by watchers', lambda r: f'{r["events"]:,}'),
        ('resyncs (Compacted)', lambda r: f'{r["resyncs"]}'),
        ('watchers CPU s', lambda r: f'{r["watch_cpu"]:.2f}'),
        ('heartbeat threads CPU s', lambda r: f'{r["beat_cpu"]:.2f}'),
    ]
    width = max(len(label) for label, _ in rows)
    print(f'| {"":{width}} | {"before":>14} | {"after":>14} |')
    print(f'|{"-" * (width + 2)}|{"-" * 16}|{"-" * 16}|')
    for label, cell in rows:
        print(f'| {label:{width}} | {cell(results["before"]):>14} | '
              f'{cell(results["after"]):>14} |')


if __name__ == '__main__':
    sys.exit(main())
