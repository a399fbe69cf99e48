"""The NB store contract (dragonflow/store/api.py), checked against every driver.

Only the contract is used here: these tests must pass unchanged for sqlite, etcd and redis.
"""
import threading
import time

import pytest

from dragonflow.store import api
from dragonflow.store.api import MUST_NOT_EXIST, Check, Delete, Put
from dragonflow.store.compaction import Compactor
from tests.unit.clock import Clock

from .helpers import Collector, all_changes, commits, replay, state_of, until

# --- reading and writing ---------------------------------------------------------------------


def test_empty_store(store):
    assert store.revision() == 0
    assert store.get('network', 'n1') is None
    assert store.list('network') == []
    assert store.snapshot() == (0, [])
    assert store.changes(0) == []


def test_put_get_round_trip(store):
    value = {'name': 'net-ü', 'mtu': 1450, 'shared': False, 'ratio': 0.5, 'desc': None,
             'subnets': ['s1', 's2'], 'nested': {'a': [1, {'b': True}]}}
    revision = store.put('network', 'n1', value)
    assert revision > 0
    assert store.get('network', 'n1') == api.Record('network', 'n1', value, revision)
    assert store.get('network', 'n2') is None
    assert store.get('port', 'n1') is None, 'tables are separate namespaces'


def test_put_replaces_the_document(store):
    first = store.put('network', 'n1', {'name': 'a', 'mtu': 1500})
    second = store.put('network', 'n1', {'name': 'b'})
    assert second > first
    assert store.get('network', 'n1') == api.Record('network', 'n1', {'name': 'b'}, second)


def test_list_is_ordered_by_id_and_per_table(store):
    for id in ['c', 'a', 'b10', 'b2']:
        store.put('network', id, {'id': id})
    store.put('port', 'p1', {'id': 'p1'})
    networks = store.list('network')
    assert [r.id for r in networks] == ['a', 'b10', 'b2', 'c']
    assert all(r.table == 'network' and r.value == {'id': r.id} for r in networks)
    assert [r.id for r in store.list('port')] == ['p1']
    assert store.list('router') == []


def test_delete(store):
    store.put('network', 'n1', {})
    store.put('network', 'n2', {})
    before = store.revision()
    revision = store.delete('network', 'n1')
    assert revision > before
    assert store.get('network', 'n1') is None
    assert [r.id for r in store.list('network')] == ['n2']
    assert store.revision() == revision


def test_a_deleted_object_can_be_created_again(store):
    store.put('network', 'n1', {'v': 1})
    store.delete('network', 'n1')
    revision = store.put('network', 'n1', {'v': 2}, expect=MUST_NOT_EXIST)
    assert store.get('network', 'n1') == api.Record('network', 'n1', {'v': 2}, revision)


def test_revision_starts_at_zero_and_increases_with_every_commit(store):
    seen = [store.revision()]
    assert seen == [0]
    for i in range(10):
        revision = store.put('network', f'n{i % 3}', {'i': i})
        assert revision > seen[-1]
        assert store.revision() == revision
        seen.append(revision)
    revision = store.delete('network', 'n0')
    assert revision > seen[-1]
    assert store.revision() == revision


def test_every_object_of_a_commit_carries_its_revision(store):
    store.put('network', 'old', {})
    revision = store.commit([Put('network', 'n1', {'a': 1}), Put('subnet', 's1', {'b': 2}),
                             Put('port', 'p1', {'c': 3}), Delete('network', 'old')])
    assert revision == store.revision()
    for table, id in [('network', 'n1'), ('subnet', 's1'), ('port', 'p1')]:
        assert store.get(table, id).revision == revision
    assert {(r.table, r.id): r.revision for r in store.snapshot()[1]} == {
        ('network', 'n1'): revision, ('subnet', 's1'): revision, ('port', 'p1'): revision}


def test_snapshot_is_every_object(store):
    store.put('network', 'n2', {'x': 1})
    store.put('network', 'n1', {'x': 2})
    store.put('port', 'p1', {'x': 3})
    store.delete('network', 'n2')
    revision, records = store.snapshot()
    assert revision == store.revision()
    assert sorted(records, key=lambda r: (r.table, r.id)) == \
        store.list('network') + store.list('port')


# --- compare-and-swap ------------------------------------------------------------------------

def test_put_must_not_exist(store):
    revision = store.put('network', 'n1', {'v': 1}, expect=MUST_NOT_EXIST)
    with pytest.raises(api.Conflict) as raised:
        store.put('network', 'n1', {'v': 2}, expect=MUST_NOT_EXIST)
    conflict = raised.value
    assert (conflict.table, conflict.id) == ('network', 'n1')
    assert (conflict.expected, conflict.actual) == (MUST_NOT_EXIST, revision)
    assert store.get('network', 'n1') == api.Record('network', 'n1', {'v': 1}, revision)
    assert store.revision() == revision


def test_put_with_stale_revision_conflicts(store):
    first = store.put('network', 'n1', {'v': 1})
    second = store.put('network', 'n1', {'v': 2}, expect=first)
    with pytest.raises(api.Conflict) as raised:
        store.put('network', 'n1', {'v': 3}, expect=first)
    assert (raised.value.expected, raised.value.actual) == (first, second)
    assert store.get('network', 'n1').value == {'v': 2}
    third = store.put('network', 'n1', {'v': 3}, expect=second)
    assert store.get('network', 'n1') == api.Record('network', 'n1', {'v': 3}, third)


def test_put_expecting_a_revision_of_a_missing_object_conflicts(store):
    revision = store.put('network', 'other', {})
    with pytest.raises(api.Conflict) as raised:
        store.put('network', 'n1', {}, expect=revision)
    assert raised.value.actual is None
    assert store.get('network', 'n1') is None


def test_delete_of_a_missing_object_conflicts(store):
    with pytest.raises(api.Conflict) as raised:
        store.delete('network', 'n1')
    assert (raised.value.table, raised.value.id, raised.value.actual) == ('network', 'n1', None)
    store.put('network', 'n1', {})
    store.delete('network', 'n1')
    before = store.revision()
    with pytest.raises(api.Conflict):
        store.delete('network', 'n1')
    assert store.revision() == before


def test_delete_with_expected_revision(store):
    first = store.put('network', 'n1', {'v': 1})
    second = store.put('network', 'n1', {'v': 2})
    with pytest.raises(api.Conflict) as raised:
        store.delete('network', 'n1', expect=first)
    assert (raised.value.expected, raised.value.actual) == (first, second)
    assert store.get('network', 'n1').revision == second
    store.delete('network', 'n1', expect=second)
    assert store.get('network', 'n1') is None


def test_check_guards_a_commit(store):
    network = store.put('network', 'n1', {})
    # Holds: the network is at that revision, the port does not exist.
    revision = store.commit([Check('network', 'n1', network),
                             Check('port', 'p1', MUST_NOT_EXIST),
                             Put('port', 'p1', {'network': 'n1'})])
    assert store.get('port', 'p1').revision == revision
    # Checks write nothing: the network keeps its revision.
    assert store.get('network', 'n1').revision == network
    store.put('network', 'n1', {'changed': True})
    for failing in [Check('network', 'n1', network),     # stale
                    Check('port', 'p1', MUST_NOT_EXIST),  # exists
                    Check('port', 'p2', revision)]:       # missing
        before = store.revision()
        with pytest.raises(api.Conflict):
            store.commit([failing, Put('port', 'p3', {})])
        assert store.get('port', 'p3') is None
        assert store.revision() == before


def test_a_commit_of_checks_only_writes_nothing(store):
    revision = store.put('network', 'n1', {})
    assert store.commit([Check('network', 'n1', revision)]) == revision
    assert store.commit([Check('network', 'n2', MUST_NOT_EXIST)]) == revision
    assert store.revision() == revision
    assert store.changes(revision) == []
    with pytest.raises(api.Conflict):
        store.commit([Check('network', 'n1', MUST_NOT_EXIST)])


@pytest.mark.parametrize('failing', [
    Delete('network', 'missing'),
    Put('network', 'n2', {'v': 'x'}, expect=MUST_NOT_EXIST),
    Check('network', 'n1', MUST_NOT_EXIST),
    Delete('network', 'n2', expect=MUST_NOT_EXIST + 10**9),
], ids=['delete-missing', 'put-exists', 'check', 'delete-stale'])
def test_a_commit_whose_last_operation_fails_writes_nothing(store, failing):
    original = store.put('network', 'n1', {'v': 1})
    store.put('network', 'n2', {'v': 1})  # (an object is written at most once per commit)
    store.put('port', 'p0', {'v': 0})
    before = store.revision()
    snapshot = store.snapshot()
    with pytest.raises(api.Conflict):
        store.commit([Put('port', 'p1', {'v': 1}),            # a create
                      Put('network', 'n1', {'v': 2}),         # an update
                      Delete('port', 'p0'),                   # a delete
                      failing])
    assert store.revision() == before
    assert store.snapshot() == snapshot
    assert store.get('network', 'n1') == api.Record('network', 'n1', {'v': 1}, original)
    assert store.get('port', 'p1') is None
    assert store.changes(before) == []
    assert store.wait(before, 0.1) is False
    # The store is still fully usable, and the next commit is the next change.
    revision = store.put('port', 'p1', {'v': 1})
    assert [(e.table, e.id, e.revision) for e in store.changes(before)] == \
        [('port', 'p1', revision)]


@pytest.mark.parametrize('twice', [
    [Put('network', 'n1', {'v': 2}), Put('network', 'n1', {'v': 3})],
    [Put('network', 'n1', {'v': 2}), Delete('network', 'n1')],
    [Delete('network', 'n1'), Put('network', 'n1', {'v': 2}, expect=MUST_NOT_EXIST)],
], ids=['put-put', 'put-delete', 'delete-put'])
def test_a_commit_writing_an_object_twice_is_refused(store, twice):
    before = store.put('network', 'n1', {'v': 1})
    with pytest.raises(ValueError):
        store.commit([Put('port', 'p1', {})] + twice)
    assert store.revision() == before
    assert store.snapshot() == (before, [api.Record('network', 'n1', {'v': 1}, before)])
    # A check and a write of the same object are fine: the check sees the state before.
    revision = store.commit([Check('network', 'n1', before), Put('network', 'n1', {'v': 2})])
    assert store.get('network', 'n1') == api.Record('network', 'n1', {'v': 2}, revision)


# --- the change log --------------------------------------------------------------------------

def _make_history(store):
    """Commits of several sizes, with updates and deletes; returns the expected events."""
    expected = []

    def commit(ops):
        revision = store.commit(ops)
        expected.extend(api.Event(revision, op.table, op.id, getattr(op, 'value', None))
                        for op in ops if not isinstance(op, Check))

    commit([Put('network', 'n1', {'v': 1})])
    commit([Put('subnet', 's1', {'v': 1}), Put('network', 'n2', {'v': 1}),
            Put('port', 'p1', {'v': 1})])
    commit([Put('network', 'n1', {'v': 2})])
    commit([Delete('port', 'p1'), Put('port', 'p2', {'v': 1})])
    commit([Check('network', 'n2', store.get('network', 'n2').revision),
            Put('router', 'r1', {'v': 1}), Put('router', 'r2', {'v': 1}),
            Put('router', 'r3', {'v': 1}), Put('router', 'r4', {'v': 1})])
    commit([Delete('network', 'n1')])
    commit([Put('port', 'p1', {'v': 2})])
    return expected


def test_changes_are_every_commit_in_order(store):
    expected = _make_history(store)
    assert store.changes(0) == expected
    revisions = [e.revision for e in expected]
    assert revisions == sorted(revisions)
    assert revisions[-1] == store.revision()
    # Each commit's events are consecutive, share its revision and follow its operations.
    assert [[(e.table, e.id) for e in group] for group in commits(expected)] == [
        [('network', 'n1')],
        [('subnet', 's1'), ('network', 'n2'), ('port', 'p1')],
        [('network', 'n1')],
        [('port', 'p1'), ('port', 'p2')],
        [('router', 'r1'), ('router', 'r2'), ('router', 'r3'), ('router', 'r4')],
        [('network', 'n1')],
        [('port', 'p1')]]


def test_changes_after_a_revision(store):
    expected = _make_history(store)
    for group in commits(expected):
        after = group[0].revision - 1
        assert store.changes(after) == [e for e in expected if e.revision > after]
        assert store.changes(group[0].revision) == \
            [e for e in expected if e.revision > group[0].revision]
    assert store.changes(store.revision()) == []


def test_deletes_appear_with_value_none(store):
    store.put('network', 'n1', {'v': 1})
    revision = store.delete('network', 'n1')
    [event] = store.changes(revision - 1)
    assert event == api.Event(revision, 'network', 'n1', None)
    assert event.deleted
    assert not store.changes(0)[0].deleted


def test_changes_with_a_limit_are_whole_commits(store):
    expected = _make_history(store)
    groups = commits(expected)
    boundaries = [0] + [g[0].revision for g in groups]
    for limit in range(1, len(expected) + 2):
        for after in boundaries:
            remaining = [e for e in expected if e.revision > after]
            batch = store.changes(after, limit)
            if not remaining:
                assert batch == []
                continue
            assert batch, 'a page always makes progress, even past a commit bigger than limit'
            assert batch == remaining[:len(batch)], 'a page is the oldest changes, in order'
            last = batch[-1].revision
            assert batch == [e for e in remaining if e.revision <= last], 'whole commits only'
            before_last = [e for e in batch if e.revision != last]
            assert len(before_last) < limit, 'a page stops at the commit that reaches limit'
        assert _paged(store, limit) == expected


def _paged(store, limit):
    events, after = [], 0
    while batch := store.changes(after, limit):
        events.extend(batch)
        after = batch[-1].revision
    return events


def test_watch_yields_every_change_then_new_ones(store):
    expected = _make_history(store)
    watcher = Collector(store, 0)
    assert watcher.wait_for(len(expected)) == expected
    revision = store.put('network', 'late', {'v': 1})
    expected.append(api.Event(revision, 'network', 'late', {'v': 1}))
    assert watcher.wait_for(len(expected)) == expected
    time.sleep(0.1)  # room for a duplicate to show up
    assert watcher.stop() == expected, 'nothing more, nothing twice'


def test_watch_from_a_revision(store):
    expected = _make_history(store)
    after = commits(expected)[2][0].revision
    watcher = Collector(store, after)
    tail = [e for e in expected if e.revision > after]
    assert watcher.wait_for(len(tail)) == tail
    assert watcher.stop() == tail


def test_a_watcher_resumes_from_its_last_revision(store, connect):
    expected = _make_history(store)
    first_part = sum(len(g) for g in commits(expected)[:3])  # a commit boundary
    watcher = Collector(connect(), 0, limit=first_part)
    watcher.wait_for(first_part)
    seen = watcher.stop()
    assert seen == expected[:first_part]
    # Commits while it is stopped, then it comes back with a new connection.
    for i in range(3):
        revision = store.commit([Put('network', f'x{i}', {'i': i}),
                                 Put('port', f'x{i}', {'i': i})])
        expected += [api.Event(revision, 'network', f'x{i}', {'i': i}),
                     api.Event(revision, 'port', f'x{i}', {'i': i})]
    resumed = Collector(connect(), seen[-1].revision)
    assert seen + resumed.wait_for(len(expected) - len(seen)) == expected
    revision = store.delete('network', 'x0')
    expected.append(api.Event(revision, 'network', 'x0', None))
    resumed.wait_for(len(expected) - len(seen))
    time.sleep(0.1)  # room for a duplicate to show up
    assert seen + resumed.stop() == expected


def test_a_watcher_stopped_between_commits_from_many_threads(store, connect):
    """Writers on other threads; a watcher stopped and resumed several times sees each once."""
    def writer(n):
        own = connect()
        for i in range(30):
            own.commit([Put('item', f'{n}-{i}', {'i': i}), Put('last', str(n), {'i': i})])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    seen, after = [], 0
    deadline = time.monotonic() + 20
    while len(seen) < 3 * 30 * 2 and time.monotonic() < deadline:
        watcher = Collector(connect(), after)
        time.sleep(0.02)
        groups = commits(watcher.stop())
        # Resume after the last complete commit (each has 2 events); drop a partial one.
        if groups and len(groups[-1]) < 2:
            groups.pop()
        for group in groups:
            seen.extend(group)
            after = group[0].revision
    for thread in threads:
        thread.join()
    assert seen == all_changes(store)
    assert len({(e.table, e.id, e.revision) for e in seen}) == len(seen)


# --- compaction and resync -------------------------------------------------------------------

def test_compacted_history_raises_compacted(store):
    expected = _make_history(store)
    groups = commits(expected)
    kept_from = groups[3][0].revision
    store.compact(groups[2][0].revision)
    for after in [0, groups[0][0].revision, groups[1][0].revision]:
        with pytest.raises(api.Compacted) as raised:
            store.changes(after)
        assert raised.value.requested == after
    with pytest.raises(api.Compacted):
        next(store.watch(0))
    # Everything after the compacted revision is still there.
    assert store.changes(groups[2][0].revision) == \
        [e for e in expected if e.revision >= kept_from]
    # Objects are untouched by compaction.
    assert state_of(store.snapshot()[1]) == replay([], expected)


def test_resync_from_snapshot_after_compaction_loses_nothing(store):
    expected = _make_history(store)
    store.compact(store.revision())
    with pytest.raises(api.Compacted):
        store.changes(0)
    revision, records = store.snapshot()
    assert revision == store.revision()
    assert state_of(records) == replay([], expected)
    later = [store.put('network', 'n9', {'v': 9}), store.delete('network', 'n2')]
    events = store.changes(revision)
    assert [e.revision for e in events] == later
    assert replay(records, events) == state_of(store.snapshot()[1])


def test_snapshot_is_consistent_under_concurrent_commits(store, connect):
    """Each snapshot is one moment: pairs written together agree, replay reaches the end."""
    stop = threading.Event()

    def writer():
        own = connect()
        i = 0
        while not stop.is_set():
            i += 1
            own.commit([Put('pair', 'a', {'i': i}), Put('pair', 'b', {'i': i}),
                        Put('item', str(i % 7), {'i': i})])
            if i % 10 == 0:
                own.compact(own.revision() - 5)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        snapshots = []
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline or len(snapshots) < 5:
            snapshots.append(store.snapshot())
    finally:
        stop.set()
        thread.join()
    final = state_of(store.snapshot()[1])
    for revision, records in snapshots:
        state = state_of(records)
        assert all(r.revision <= revision for r in records)
        if ('pair', 'a') in state:
            assert state['pair', 'a'] == state['pair', 'b']
        try:
            events = all_changes(store, revision)
        except api.Compacted:
            continue
        assert replay(records, events) == final
    assert len({revision for revision, _ in snapshots}) > 1, 'writes went on meanwhile'


def test_compact_keeps_the_revision_counter(store):
    store.put('network', 'n1', {})
    revision = store.put('network', 'n2', {})
    store.compact(revision)
    assert store.revision() == revision
    assert store.changes(revision) == []
    assert store.put('network', 'n3', {}) > revision


# --- wait ------------------------------------------------------------------------------------

def test_wait_returns_false_after_the_timeout(store):
    revision = store.put('network', 'n1', {})
    start = time.monotonic()
    assert store.wait(revision, 0.3) is False
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 2.0


def test_wait_returns_true_at_once_if_already_past(store):
    store.put('network', 'n1', {})
    start = time.monotonic()
    assert store.wait(0, 5.0) is True
    assert time.monotonic() - start < 1.0


def test_wait_returns_promptly_on_a_commit_from_another_thread(store, connect):
    revision = store.put('network', 'n1', {})
    other = connect()
    committed_at = []

    def commit_later():
        time.sleep(0.2)
        other.put('network', 'n2', {})
        committed_at.append(time.monotonic())

    thread = threading.Thread(target=commit_later)
    start = time.monotonic()
    thread.start()
    assert store.wait(revision, 10.0) is True
    woke = time.monotonic()
    thread.join()
    assert woke - start >= 0.15, 'woke before the commit'
    assert woke - committed_at[0] < 1.0, 'did not wake promptly'


# --- integer keys ----------------------------------------------------------------------------

def test_allocate_key_is_unique_and_positive(store):
    keys = [store.allocate_key('network') for _ in range(100)]
    assert all(isinstance(k, int) and k > 0 for k in keys)
    assert len(set(keys)) == len(keys)


def test_allocate_key_kinds_are_independent(store, connect):
    other = connect()
    keys = {'network': [], 'port': []}
    for i in range(40):
        for kind in keys:
            keys[kind].append((store if i % 2 else other).allocate_key(kind))
    for kind, allocated in keys.items():
        assert all(k > 0 for k in allocated)
        assert len(set(allocated)) == len(allocated), kind
    # Each kind is its own key space: one kind's allocations do not use up another's.
    assert set(keys['network']) & set(keys['port'])


def test_compact_is_idempotent(store):
    expected = _make_history(store)
    groups = commits(expected)
    middle, head = groups[3][0].revision, store.revision()
    store.compact(middle)
    for again in [middle, groups[1][0].revision, 0]:  # the same, lower: no-ops
        store.compact(again)
        assert store.changes(middle) == [e for e in expected if e.revision > middle]
        with pytest.raises(api.Compacted):
            store.changes(groups[2][0].revision)
    # Never past the head: a commit after compact() of a later revision is kept.
    store.compact(head + 10**6)
    store.compact(head)
    revision = store.put('network', 'after', {})
    assert store.changes(head) == [api.Event(revision, 'network', 'after', {})]
    assert state_of(store.snapshot()[1]) == replay([], expected + store.changes(head))


def test_compactions_at_once_keep_the_furthest(store, connect):
    expected = _make_history(store)
    revisions = [g[0].revision for g in commits(expected)]
    targets = revisions[1:-1] * 3
    errors = []

    def compact(own, n):
        mine = targets[n::4]
        if n % 2:
            mine.reverse()  # some go up, some down
        try:
            for target in mine:
                own.compact(target)
        except Exception as e:  # handed to the test thread
            errors.append(e)

    threads = [threading.Thread(target=compact, args=(connect(), n)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    furthest = revisions[-2]
    assert store.changes(furthest) == [e for e in expected if e.revision > furthest]
    with pytest.raises(api.Compacted):
        store.changes(revisions[-3])


def test_a_watcher_behind_the_compacted_point_resyncs(store, connect):
    """Compaction by policy (the latest 2 commits, 10 s) overtakes a stopped watcher: resuming,
    it gets Compacted, resyncs from a snapshot and goes on from the snapshot's revision."""
    expected = _make_history(store)
    first_part = sum(len(g) for g in commits(expected)[:2])
    watcher = Collector(connect(), 0, limit=first_part)
    seen = watcher.wait_for(first_part)
    assert watcher.stop() == expected[:first_part]
    clock = Clock()
    compactor = Compactor(store, keep_revisions=2, keep_seconds=10, clock=clock)
    assert compactor.tick() is None, 'nothing is old enough yet'
    sampled = store.revision()
    for i in range(3):
        store.put('network', f'later{i}', {'i': i})
    clock.now += 11
    assert compactor.tick() == sampled, 'the head of 11 s ago, 3 commits back'
    assert store.changes(sampled) == all_changes(store, sampled), 'the latest commits are kept'

    resumed = Collector(connect(), seen[-1].revision)
    assert isinstance(until(lambda: resumed.error), api.Compacted)
    revision, records = store.snapshot()
    assert revision >= sampled
    mirror = state_of(records)
    follower = Collector(connect(), revision)
    final = store.commit([Put('network', 'last', {}), Delete('network', 'later0')])
    events = follower.wait_for(2)
    assert [e.revision for e in follower.stop()] == [final, final]
    assert replay(records, events) == state_of(store.snapshot()[1]) != mirror


# --- liveness --------------------------------------------------------------------------------

def test_a_heartbeat_is_seen_and_replaced_by_the_next(store, connect):
    other = connect()
    assert store.heartbeats() == {}
    status = {'name': 'chassis-ü', 'revision_seen': 7, 'networks': ['n1'], 'ratio': 0.5}
    store.heartbeat('c1', status, 30)
    assert other.heartbeats() == {'c1': status}
    store.heartbeat('c1', {'revision_seen': 8}, 30)
    other.heartbeat('c2', {'revision_seen': 1}, 30)
    assert store.heartbeats() == other.heartbeats() == {'c1': {'revision_seen': 8},
                                                        'c2': {'revision_seen': 1}}


def test_a_heartbeat_expires_after_its_ttl(store):
    start = time.monotonic()
    store.heartbeat('short', {'v': 1}, 0.5)
    store.heartbeat('long', {'v': 1}, 60)
    assert set(store.heartbeats()) == {'short', 'long'}
    assert until(lambda: 'short' not in (alive := store.heartbeats()) and alive) == \
        {'long': {'v': 1}}
    assert time.monotonic() - start >= 0.5, 'never before its ttl'


def test_heartbeats_keep_a_member_alive_past_its_ttl(store):
    start = time.monotonic()
    while time.monotonic() - start < 2.5:  # more than twice the ttl (etcd's: 1 s at least)
        store.heartbeat('c1', {'v': 1}, 1.0)
        assert store.heartbeats() == {'c1': {'v': 1}}
        time.sleep(0.2)
    until(lambda: store.heartbeats() == {})


def test_a_member_comes_back_after_expiring(store):
    store.heartbeat('c1', {'v': 1}, 0.5)
    until(lambda: store.heartbeats() == {})
    store.heartbeat('c1', {'v': 1}, 0.5)
    assert store.heartbeats() == {'c1': {'v': 1}}


def test_each_heartbeat_sets_the_ttl(store):
    store.heartbeat('shortened', {}, 60)
    store.heartbeat('shortened', {}, 0.5)
    store.heartbeat('lengthened', {}, 0.5)
    store.heartbeat('lengthened', {}, 60)
    store.heartbeat('probe', {}, 0.5)
    until(lambda: 'probe' not in store.heartbeats())
    until(lambda: 'shortened' not in store.heartbeats())
    assert set(store.heartbeats()) == {'lengthened'}


def test_a_heartbeat_is_no_commit(store, connect):
    """No revision, no change, no snapshot entry, no wait() or watcher woken."""
    revision = store.put('network', 'n1', {'v': 1})
    head = store.head()
    watcher = Collector(connect(), revision)
    stop = threading.Event()

    def beat():
        own, i = connect(), 0
        while not stop.is_set():
            i += 1
            own.heartbeat(f'c{i % 3}', {'i': i}, 30)

    thread = threading.Thread(target=beat)
    thread.start()
    try:
        until(lambda: len(store.heartbeats()) == 3)
        assert store.wait(revision, 0.5) is False
    finally:
        stop.set()
        thread.join()
    assert store.revision() == revision and store.head() == head
    assert store.changes(revision) == []
    assert [e.revision for e in store.changes(0)] == [revision]
    assert store.snapshot() == (revision, [api.Record('network', 'n1', {'v': 1}, revision)])
    later = store.put('network', 'n2', {})
    assert watcher.wait_for(1) == [api.Event(later, 'network', 'n2', {})]
    assert watcher.stop() == [api.Event(later, 'network', 'n2', {})]


def test_heartbeats_of_many_members_at_once(store, connect):
    members, beats = 16, 20
    errors = []
    stores = [connect() for _ in range(members)]

    def beat(n):
        try:
            for i in range(beats):
                stores[n].heartbeat(f'chassis-{n}', {'n': n, 'i': i}, 30)
        except Exception as e:  # handed to the test thread
            errors.append(e)

    threads = [threading.Thread(target=beat, args=(n,)) for n in range(members)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.heartbeats() == {f'chassis-{n}': {'n': n, 'i': beats - 1}
                                  for n in range(members)}
    assert store.revision() == 0


def test_head_counts_commits(store):
    assert store.head() == api.Head(0, 0)
    store.put('network', 'n1', {})
    store.commit([Put('network', 'n2', {}), Put('port', 'p1', {})])
    store.commit([Check('network', 'n1', MUST_NOT_EXIST + store.get('network', 'n1').revision)])
    store.allocate_key('network')
    store.heartbeat('c1', {}, 30)
    revision = store.delete('network', 'n1')
    assert store.head() == api.Head(revision, 3)
