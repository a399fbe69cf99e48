"""The etcd driver against a 3-member cluster whose leader is killed during a burst of writes.

Every commit must either succeed or raise Unavailable/Conflict within the timeout; afterwards
a surviving member holds exactly the writes that succeeded (a commit whose reply was lost is
settled, not applied twice nor reported failed while applied), the change log holds each of
them once, a watcher that lived through the kill saw exactly that log, and allocate_key never
handed out a number twice.
"""
import threading
import time
from collections import Counter

import pytest
import requests

from dragonflow.store import api
from dragonflow.store.etcd import EtcdStore

from . import servers
from .helpers import all_changes

TIMEOUT = 3.0           # the store's timeout
WRITERS = 4
BEFORE_KILL, AFTER_KILL = 0.7, 2.5   # seconds of writes before and after the kill


@pytest.fixture
def cluster():
    members = servers.start_etcd_cluster(3)
    try:
        yield members
    finally:
        for member in members:
            member.stop()


def leader_of(members) -> servers.Server:
    for member in members:
        status = requests.post(f'http://127.0.0.1:{member.port}/v3/maintenance/status',
                               json={}, timeout=2).json()
        if status['leader'] == status['header']['member_id']:
            return member
    raise AssertionError('no leader')


class Writer(threading.Thread):
    """Creates unique objects (expect MUST_NOT_EXIST) and allocates keys until stopped."""

    def __init__(self, store, n, stop):
        super().__init__(daemon=True)
        self.store, self.n, self.stop = store, n, stop
        self.succeeded: dict[str, int] = {}   # object id -> revision
        self.failed: dict[str, str] = {}      # object id -> the error's class
        self.keys: list[int] = []
        self.slowest = 0.0                    # seconds, of one commit or allocate_key
        self.errors: list[BaseException] = []

    def run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            id = f'w{self.n}-{i}'
            start = time.monotonic()
            try:
                self.succeeded[id] = self.store.commit(
                    [api.Put('item', id, {'writer': self.n, 'i': i}, expect=api.MUST_NOT_EXIST),
                     api.Put('last', str(self.n), {'i': i})])
            except (api.Unavailable, api.Conflict) as e:
                self.failed[id] = type(e).__name__
            except BaseException as e:
                self.errors.append(e)
                return
            self.slowest = max(self.slowest, time.monotonic() - start)
            start = time.monotonic()
            try:
                self.keys.append(self.store.allocate_key('port'))
            except api.Unavailable:
                pass
            self.slowest = max(self.slowest, time.monotonic() - start)


def test_killing_the_leader_during_writes(cluster):
    leader = leader_of(cluster)
    # The leader first: the writers are talking to it when it dies.
    ordered = [leader] + [m for m in cluster if m is not leader]
    endpoints = [('127.0.0.1', m.port) for m in ordered]
    store = EtcdStore(endpoints, '/cluster-test/', timeout=TIMEOUT)
    watching = EtcdStore(endpoints, '/cluster-test/', timeout=TIMEOUT)
    seen: list[api.Event] = []
    stop_watch = threading.Event()
    watch_errors: list[BaseException] = []

    def watch():
        try:
            for event in watching.watch(0, stop=stop_watch, poll=0.1):
                seen.append(event)
        except BaseException as e:
            watch_errors.append(e)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stop = threading.Event()
    writers = [Writer(store, n, stop) for n in range(WRITERS)]
    for writer in writers:
        writer.start()
    time.sleep(BEFORE_KILL)
    written_before_kill = sum(len(w.succeeded) for w in writers)
    leader.kill()
    time.sleep(AFTER_KILL)
    stop.set()
    for writer in writers:
        writer.join(TIMEOUT * 3)
        assert not writer.is_alive(), 'a writer hangs'
        assert not writer.errors, writer.errors

    succeeded = {id: rev for w in writers for id, rev in w.succeeded.items()}
    failed = {id: error for w in writers for id, error in w.failed.items()}
    assert written_before_kill > 0
    assert len(succeeded) > written_before_kill, 'no commit succeeded after the new election'
    assert max(w.slowest for w in writers) < TIMEOUT + 0.5

    # Read through a surviving member only.
    survivor = EtcdStore([('127.0.0.1', ordered[1].port)], '/cluster-test/', timeout=TIMEOUT)
    revision, records = survivor.snapshot()
    items = {r.id: r.revision for r in records if r.table == 'item'}
    assert items == succeeded, (
        f'applied but reported failed: {sorted(set(items) - set(succeeded))[:5]} '
        f'({failed}); reported but missing: {sorted(set(succeeded) - set(items))[:5]}')
    assert 'Conflict' not in failed.values(), 'a commit was applied twice'

    # The change log: each successful commit once, at its revision, with both its writes.
    log = all_changes(survivor)
    created = [(e.id, e.revision) for e in log if e.table == 'item']
    assert sorted(created) == sorted(succeeded.items())
    assert [e.revision for e in log] == sorted(e.revision for e in log)
    assert Counter(e.revision for e in log) == Counter({rev: 2 for rev in succeeded.values()})

    # The watcher lived through the kill and saw exactly the log.
    deadline = time.monotonic() + 10
    while (not seen or seen[-1].revision < revision) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop_watch.set()
    watcher.join(5)
    assert not watch_errors, watch_errors
    assert seen == log

    keys = [k for w in writers for k in w.keys]
    assert len(keys) > 0
    assert len(set(keys)) == len(keys), 'allocate_key handed out a number twice'
    for s in (store, watching, survivor):
        s.close()
