"""The contract under concurrency across processes, against every driver.

Children are spawned (not forked) and each opens its own store from the URL, as df-api
replicas and controllers on one machine would.
"""
import json
from collections import Counter

from dragonflow.store import api

from . import helpers
from .helpers import COUNTER, DONE

WRITERS, COMMITS_PER_WRITER, WATCHERS = 4, 200, 2


def _start(ctx, target, args_list, name):
    processes = [ctx.Process(target=target, args=args, name=f'{name}-{i}', daemon=True)
                 for i, args in enumerate(args_list)]
    for proc in processes:
        proc.start()
    return processes


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_allocate_key_is_unique_across_processes(store_url, connect, tmp_path):
    ctx = helpers.spawn()
    kinds, rounds, count = ['network', 'port', 'router'], 100, 4
    barrier = ctx.Barrier(count)
    outs = [str(tmp_path / f'keys-{i}.json') for i in range(count)]
    processes = _start(ctx, helpers.allocate_keys,
                       [(store_url, kinds, rounds, barrier, out) for out in outs], 'allocator')
    helpers.run_all(processes, timeout=60)
    allocated = [pair for out in outs for pair in _load(out)]
    assert len(allocated) == count * rounds * len(kinds)
    for kind in kinds:
        keys = [key for k, key in allocated if k == kind]
        assert len(keys) == count * rounds
        assert all(isinstance(key, int) and key > 0 for key in keys)
        duplicates = [key for key, n in Counter(keys).items() if n > 1]
        assert not duplicates, f'{kind} keys handed out twice: {duplicates[:10]}'
    # And a later connection continues without reusing any.
    networks = {key for kind, key in allocated if kind == 'network'}
    assert connect().allocate_key('network') not in networks


def test_writers_and_watchers_across_processes(store_url, store, tmp_path):
    """4 writers (with CAS increments of a shared counter) and 2 watchers from revision 0.

    Both watchers must see the exact change log; every writer's commit appears exactly once
    with exactly what it wrote; no increment of the counter is lost.
    """
    store.put(*COUNTER, {'n': 0}, expect=api.MUST_NOT_EXIST)
    ctx = helpers.spawn()
    barrier = ctx.Barrier(WRITERS + WATCHERS)
    writer_outs = [str(tmp_path / f'writer-{i}.json') for i in range(WRITERS)]
    watcher_outs = [str(tmp_path / f'watcher-{i}.json') for i in range(WATCHERS)]
    watchers = (_start(ctx, helpers.watch_continuously,
                       [(store_url, barrier, watcher_outs[0])], 'watcher') +
                _start(ctx, helpers.watch_resuming,
                       [(store_url, barrier, watcher_outs[1])], 'resuming-watcher'))
    try:
        writers = _start(ctx, helpers.write,
                         [(store_url, i, COMMITS_PER_WRITER, barrier, out)
                          for i, out in enumerate(writer_outs)], 'writer')
        helpers.run_all(writers, timeout=60)
        done = store.put(*DONE, {'done': True})
        helpers.run_all(watchers, timeout=30)
    finally:
        helpers.run_all(watchers, timeout=0)

    log = [helpers.event_row(e) for e in helpers.all_changes(store)]
    assert log[-1] == [done, *DONE, {'done': True}]
    revisions = [row[0] for row in log]
    assert revisions == sorted(revisions)

    # Both watchers saw exactly the change log: same events, same order, no gap, no repeat.
    for out in watcher_outs:
        seen = _load(out)
        assert len(seen) == len(log)
        assert seen == log

    # Every commit of every writer appears exactly once, with exactly its writes, in order.
    by_revision: dict[int, list] = {}
    for revision, table, id, value in log:
        by_revision.setdefault(revision, []).append([table, id, value])
    results = [_load(out) for out in writer_outs]
    committed = [entry for result in results for entry in result['log']]
    assert all(len(r['log']) == COMMITS_PER_WRITER for r in results)
    assert len({revision for revision, _ in committed}) == len(committed), 'revision reused'
    for revision, writes in committed:
        assert by_revision.pop(revision) == writes
    # What is left is the parent's two commits: the counter's creation and DONE.
    assert [writes for _, writes in sorted(by_revision.items())] == \
        [[[*COUNTER, {'n': 0}]], [[*DONE, {'done': True}]]]

    # No lost update: the counter went up by one per successful increment, one at a time.
    increments = sum(r['increments'] for r in results)
    assert increments == WRITERS * len(range(0, COMMITS_PER_WRITER, 4))
    assert store.get(*COUNTER).value['n'] == increments
    counter_values = [value['n'] for _, table, id, value in log if (table, id) == COUNTER]
    assert counter_values == list(range(increments + 1))

    # The change log replays to exactly the stored state.
    revision, records = store.snapshot()
    assert revision == done == store.revision()
    assert helpers.replay([], helpers.all_changes(store)) == helpers.state_of(records)
