"""The three NB store drivers side by side, one run, one table:
  - writes/s: single-object commits from one client, and from 4 processes at once,
  - watch latency p50/p99: from the start of a commit to the event seen by a watcher in another
    process (store.watch, as df-controller runs it),
  - snapshot(): the time to read 10k objects (port-sized documents) at one revision.

sqlite is the embedded file (WAL); etcd is a one-member etcd 3.4 cluster and redis a
redis-server 7 without persistence, both started here on loopback ports, in directories under
--tmp (the default is the system's temporary directory, on disk; /dev/shm shows them without
fsync). Every measurement gets a fresh store (file, key prefix).

Run: .venv/bin/python bench/store.py [--writes 2000] [--latency 300] [--objects 10000]
"""
import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dragonflow import store as nb  # noqa: E402
from dragonflow.store import api  # noqa: E402
from tests.store import servers  # noqa: E402

PROCESSES = 4
START_TIMEOUT = 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--writes', type=int, default=2000, help='commits per client')
    parser.add_argument('--latency', type=int, default=300, help='commits watched')
    parser.add_argument('--objects', type=int, default=10000, help='objects in the snapshot')
    parser.add_argument('--tmp', default=None, help='where the stores live')
    parser.add_argument('--drivers', default='sqlite,etcd,redis')
    args = parser.parse_args()
    drivers = args.drivers.split(',')
    work = tempfile.mkdtemp(prefix='df-bench-store-', dir=args.tmp)
    started = []
    try:
        makers = {'sqlite': lambda: f'sqlite://{work}/{uuid.uuid4().hex}.sqlite'}
        if 'etcd' in drivers:
            etcd = servers.start_etcd(tmp=work)
            started.append(etcd)
            makers['etcd'] = lambda: f'etcd://127.0.0.1:{etcd.port}/bench-{uuid.uuid4().hex}/'
        if 'redis' in drivers:
            redis = servers.start_redis(tmp=work)
            started.append(redis)
            makers['redis'] = (lambda: f'redis://127.0.0.1:{redis.port}/0'
                               f'?prefix=bench-{uuid.uuid4().hex}')
        results = {}
        for name in drivers:
            print(f'{name}...', file=sys.stderr, flush=True)
            results[name] = measure(makers[name], args)
    finally:
        for server in started:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(results, args, work)
    return 0


def measure(new_url, args) -> dict:
    return {
        'writes_1': writes_one_client(new_url(), args.writes),
        'writes_n': writes_processes(new_url(), args.writes),
        'latency': watch_latency(new_url(), args.latency),
        'snapshot': snapshot_time(new_url(), args.objects),
    }


def writes_one_client(url: str, count: int) -> float:
    store = nb.connect(url)
    store.put('warm', 'up', {})
    start = time.perf_counter()
    for i in range(count):
        store.put('port', f'p{i}', _port(i))
    elapsed = time.perf_counter() - start
    store.close()
    return count / elapsed


def _writer(url: str, n: int, count: int, barrier, results) -> None:
    store = nb.connect(url)
    store.put('warm', str(n), {})
    barrier.wait(START_TIMEOUT)
    start = time.monotonic()
    for i in range(count):
        store.put('port', f'{n}-{i}', _port(i))
    results.put((start, time.monotonic()))
    store.close()


def writes_processes(url: str, count: int) -> float:
    nb.connect(url).close()  # create it once (sqlite: the file and its schema)
    ctx = multiprocessing.get_context('spawn')
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, n, count, barrier, results))
             for n in range(PROCESSES)]
    for proc in procs:
        proc.start()
    spans = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    return PROCESSES * count / (max(end for _, end in spans) - min(s for s, _ in spans))


def _watcher(url: str, count: int, ready, results) -> None:
    store = nb.connect(url)
    after = store.revision()
    ready.set()
    delays = []
    for event in store.watch(after, poll=1.0):
        delays.append(time.monotonic() - event.value['t'])
        if len(delays) == count:
            break
    results.put(delays)
    store.close()


def watch_latency(url: str, count: int) -> list[float]:
    store = nb.connect(url)
    store.put('warm', 'up', {})
    ctx = multiprocessing.get_context('spawn')
    ready, results = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_watcher, args=(url, count, ready, results))
    proc.start()
    assert ready.wait(START_TIMEOUT), 'the watcher did not start'
    time.sleep(0.5)  # the watcher is waiting
    for i in range(count):
        # CLOCK_MONOTONIC is one clock for every process of the machine.
        store.put('latency', str(i), {'t': time.monotonic()})
        time.sleep(0.005)
    delays = results.get(timeout=120)
    proc.join()
    store.close()
    return delays


def snapshot_time(url: str, objects: int) -> float:
    store = nb.connect(url)
    for start in range(0, objects, 100):
        store.commit([api.Put('port', f'port-{i:06d}', _port(i))
                      for i in range(start, min(start + 100, objects))])
    times = []
    for _ in range(3):
        begin = time.perf_counter()
        revision, records = store.snapshot()
        times.append(time.perf_counter() - begin)
        assert len(records) == objects and revision == store.revision()
    store.close()
    return statistics.median(times)


def _port(i: int) -> dict:
    """A port document the size of the real ones (about 400 bytes of JSON)."""
    return {'id': f'{uuid.UUID(int=i)}', 'name': f'port-{i}', 'network_id': str(uuid.UUID(int=7)),
            'mac_address': f'fa:16:3e:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}',
            'fixed_ips': [{'subnet_id': str(uuid.UUID(int=8)),
                           'ip_address': f'10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}'}],
            'admin_state_up': True, 'status': 'ACTIVE', 'device_owner': 'compute:nova',
            'security_groups': [str(uuid.UUID(int=9))], 'tunnel_key': i + 1,
            'binding': {'host': 'chassis-1', 'vif_type': 'ovs'}}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def report(results: dict, args, work: str) -> None:
    names = list(results)
    rows = [
        ('writes/s, 1 client', lambda r: f'{r["writes_1"]:.0f}'),
        (f'writes/s, {PROCESSES} processes', lambda r: f'{r["writes_n"]:.0f}'),
        ('watch latency p50 (ms)', lambda r: f'{_percentile(r["latency"], 0.5) * 1000:.1f}'),
        ('watch latency p99 (ms)', lambda r: f'{_percentile(r["latency"], 0.99) * 1000:.1f}'),
        (f'snapshot of {args.objects // 1000}k objects (ms)',
         lambda r: f'{r["snapshot"] * 1000:.0f}'),
    ]
    print(f'\nNB store drivers, one run: {os.cpu_count()} cores, stores under '
          f'{os.path.dirname(work)}; {args.writes} commits per client, {args.latency} watched')
    print(f'| {"":30} | ' + ' | '.join(f'{n:>8}' for n in names) + ' |')
    print(f'|{"-" * 32}|' + '|'.join('-' * 10 for _ in names) + '|')
    for label, cell in rows:
        print(f'| {label:30} | ' + ' | '.join(f'{cell(results[n]):>8}' for n in names) + ' |')


if __name__ == '__main__':
    sys.exit(main())
