"""What only the sqlite driver does: the file, its lock, and errors mapped to the contract."""
import json
import multiprocessing
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from dragonflow import store as nb
from dragonflow.store import api, sqlite

from . import helpers

TIMEOUT = 0.2


@pytest.fixture
def path(tmp_path):
    return tmp_path / 'nb.sqlite'


@pytest.fixture
def locked(path):
    """A store with a few objects, then another connection holding sqlite's write lock."""
    store = nb.connect(f'sqlite://{path}', timeout=TIMEOUT)
    store.put('network', 'n1', {'v': 1})
    store.allocate_key('network')
    other = sqlite3.connect(path, isolation_level=None)
    other.execute('BEGIN IMMEDIATE')
    try:
        yield store
    finally:
        other.execute('ROLLBACK')
        other.close()
        store.close()


@pytest.mark.parametrize('call', [
    lambda s: s.put('network', 'n2', {}),
    lambda s: s.commit([api.Delete('network', 'n1')]),
    lambda s: s.allocate_key('network'),
    lambda s: s.compact(s.revision()),
], ids=['put', 'commit', 'allocate_key', 'compact'])
def test_a_write_blocked_longer_than_the_timeout_is_unavailable(locked, call):
    start = time.monotonic()
    with pytest.raises(api.Unavailable) as raised:
        call(locked)
    elapsed = time.monotonic() - start
    assert not isinstance(raised.value, sqlite3.Error)
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 2.0


def test_reads_go_on_while_another_process_writes(locked):
    """WAL: readers and watchers are not blocked by the writer's lock."""
    assert locked.get('network', 'n1').value == {'v': 1}
    assert [r.id for r in locked.list('network')] == ['n1']
    revision = locked.revision()
    assert locked.snapshot()[0] == revision
    assert len(locked.changes(0)) == 1
    assert locked.wait(revision, 0.05) is False


def test_opening_a_locked_store_is_unavailable(locked, path):
    with pytest.raises(api.Unavailable):
        nb.connect(f'sqlite://{path}', timeout=TIMEOUT)


def test_the_store_recovers_when_the_lock_is_released(path):
    store = nb.connect(f'sqlite://{path}', timeout=TIMEOUT)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute('BEGIN IMMEDIATE')
    with pytest.raises(api.Unavailable):
        store.put('network', 'n1', {})
    other.execute('ROLLBACK')
    other.close()
    revision = store.put('network', 'n1', {'v': 1})
    assert store.get('network', 'n1') == api.Record('network', 'n1', {'v': 1}, revision)
    store.close()


def test_a_lock_shorter_than_the_timeout_only_delays(path):
    store = nb.connect(f'sqlite://{path}', timeout=5.0)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute('BEGIN IMMEDIATE')
    release = threading.Timer(0.2, lambda: (other.execute('ROLLBACK'), other.close()))
    release.start()
    revision = store.put('network', 'n1', {})
    release.join()
    assert store.revision() == revision
    store.close()


def test_an_unusable_file_is_unavailable(tmp_path):
    directory = tmp_path / 'a-directory'
    directory.mkdir()
    with pytest.raises(api.Unavailable):
        nb.connect(f'sqlite://{directory}', timeout=TIMEOUT)


def test_processes_creating_one_new_file_at_once(tmp_path):
    """Opening a new file switches it to WAL; several processes doing it at once all succeed."""
    ctx, count = helpers.spawn(), 6
    urls = [f'sqlite://{tmp_path}/nb-{i}.sqlite' for i in range(30)]
    barrier = ctx.Barrier(count)
    outs = [str(tmp_path / f'errors-{i}.json') for i in range(count)]
    processes = [ctx.Process(target=helpers.open_new_stores, args=(urls, barrier, out),
                             daemon=True) for out in outs]
    for proc in processes:
        proc.start()
    helpers.run_all(processes, timeout=60)
    errors = [error for out in outs for error in json.loads(Path(out).read_text())]
    assert errors == []
    for url in urls:
        store = nb.connect(url)
        assert store.allocate_key('k') == count + 1, 'every process allocated one key'
        store.close()


def test_processes_share_one_file(path):
    """Two connections (as two processes would have) see one store."""
    first = nb.connect(f'sqlite://{path}')
    second = nb.connect(f'sqlite://{path}')
    revision = first.put('network', 'n1', {'v': 1})
    assert second.get('network', 'n1').revision == revision
    assert second.revision() == revision
    assert second.allocate_key('k') != first.allocate_key('k')
    first.close()
    second.close()


def test_a_forked_child_does_not_share_the_parents_connection(path):
    """sqlite connections must not cross a fork; the store opens a new one in the child."""
    store = nb.connect(f'sqlite://{path}')
    store.put('network', 'n1', {'v': 1})
    ctx = multiprocessing.get_context('fork')
    child = ctx.Process(target=_put_and_exit, args=(store,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert store.get('network', 'child').value == {'pid': child.pid}
    assert store.put('network', 'n1', {'v': 2}) > store.get('network', 'child').revision
    store.close()


def _put_and_exit(store):
    store.put('network', 'child', {'pid': os.getpid()})
    store.close()



@pytest.mark.parametrize('inotify', [True, False], ids=['inotify', 'inotify refused'])
def test_a_waiter_wakes_on_another_connections_commit(path, monkeypatch, inotify):
    """With inotify a waiter sleeps until the log is written (bench/store.py shows how fast);
    where the kernel refuses one more inotify instance, it polls."""
    if not inotify:
        def refused():
            raise OSError(24, 'Too many open files')
        monkeypatch.setattr('inotify_simple.INotify', refused)
    store, writer = nb.connect(f'sqlite://{path}'), nb.connect(f'sqlite://{path}')
    after = store.revision()
    assert not store.wait(after, timeout=0.05)
    threading.Timer(0.05, writer.put, ('network', 'n1', {})).start()
    assert store.wait(after, timeout=5)
    assert store.revision() == after + 1


# --- a damaged file --------------------------------------------------------------------------

def _damage(path, offset: int, size: int) -> None:
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(os.urandom(size))


@pytest.fixture
def closed(path):
    """A store with a few pages of objects, written through to its file and closed."""
    store = nb.connect(f'sqlite://{path}')
    store.commit([api.Put('port', f'p{i}', {'pad': 'x' * 500}) for i in range(50)])
    store.close()  # the last connection: sqlite folds the log into the file and removes it
    assert not Path(f'{path}-wal').exists()
    return path


def test_garbage_over_the_file_is_unusable(closed):
    _damage(closed, 0, closed.stat().st_size)
    with pytest.raises(api.Unusable) as raised:
        nb.connect(f'sqlite://{closed}')
    assert isinstance(raised.value, api.Unavailable), 'answered as the store unavailable: 503'
    assert 'SQLITE_NOTADB' in str(raised.value)


@pytest.mark.parametrize('call', [
    lambda s: s.list('port'),
    lambda s: s.snapshot(),
    lambda s: s.changes(0),
    lambda s: s.put('port', 'p1', {}),
], ids=['list', 'snapshot', 'changes', 'put'])
def test_a_damaged_page_is_unusable(closed, call):
    store = nb.connect(f'sqlite://{closed}')
    _damage(closed, 4096 * 2, 4096 * 20)  # the header and schema stay readable
    with pytest.raises(api.Unusable) as raised:
        call(store)
    assert not isinstance(raised.value, sqlite3.Error)
    assert 'SQLITE_CORRUPT' in str(raised.value)
    store.close()


def test_a_full_disk_is_unusable_and_the_commit_did_not_apply(path):
    store = nb.connect(f'sqlite://{path}')
    revision = store.put('network', 'n1', {})
    raw = sqlite3.connect(path, isolation_level=None)
    pages = raw.execute('PRAGMA page_count').fetchone()[0]
    raw.close()
    store._db().execute(f'PRAGMA max_page_count={pages}')  # as if the disk were full
    with pytest.raises(api.Unusable) as raised:
        store.put('port', 'big', {'pad': 'x' * 100000})
    assert 'SQLITE_FULL' in str(raised.value)
    assert store.revision() == revision and store.get('port', 'big') is None
    store.close()


# --- liveness ----------------------------------------------------------------------------------

def test_heartbeats_are_in_a_file_of_their_own(path):
    """Not in the store's file: they take no write lock from commits, and write no log."""
    store = nb.connect(f'sqlite://{path}')
    store.put('network', 'n1', {})
    log = Path(f'{path}-wal')
    before = log.stat()
    for i in range(20):
        store.heartbeat(f'c{i % 4}', {'i': i}, 30)
    assert (log.stat().st_size, log.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert Path(f'{path}-liveness').exists()
    store.close()


def test_heartbeats_go_on_while_a_commit_holds_the_lock(locked):
    locked.heartbeat('c1', {'v': 1}, 30)
    assert locked.heartbeats() == {'c1': {'v': 1}}


def test_a_waiter_is_not_woken_by_heartbeats(path, monkeypatch):
    """inotify watches the log itself: writes to other files of its directory (heartbeats)
    leave a waiter asleep, not even looking at the revision."""
    store, beater = nb.connect(f'sqlite://{path}'), nb.connect(f'sqlite://{path}')
    after = store.revision()
    looks = []
    revision = store.revision
    monkeypatch.setattr(store, 'revision', lambda: looks.append(1) or revision())
    stop = threading.Event()

    def beat():
        while not stop.is_set():
            beater.heartbeat('c1', {}, 30)
        beater.close()

    thread = threading.Thread(target=beat)
    thread.start()
    try:
        assert store.wait(after, 0.5) is False
    finally:
        stop.set()
        thread.join()
    assert len(looks) <= 2, 'looked once before sleeping (and once at the timeout)'
    store.close()


def test_expired_heartbeats_are_pruned_by_the_next(path):
    store = nb.connect(f'sqlite://{path}')
    store.heartbeat('gone', {}, 0.05)
    helpers.until(lambda: store.heartbeats() == {})
    store.heartbeat('c1', {}, 30)
    raw = sqlite3.connect(f'{path}-liveness')
    assert raw.execute('SELECT id FROM liveness').fetchall() == [('c1',)]
    raw.close()
    store.close()


def test_heartbeats_of_an_earlier_boot_are_expired(path, monkeypatch):
    """Expiries are CLOCK_MONOTONIC, which starts again at a reboot."""
    store = nb.connect(f'sqlite://{path}')
    store.heartbeat('c1', {}, 30)
    monkeypatch.setattr(sqlite, 'BOOT', 'another boot')
    assert store.heartbeats() == {}
    store.close()
