"""The compaction policy (dragonflow/store/compaction.py) against a real sqlite store, with a
clock moved by hand."""
import logging
import random
import threading

import pytest
from oslo_config import cfg

from dragonflow import conf as df_conf
from dragonflow import store as nb
from dragonflow.store import api
from dragonflow.store.compaction import Compactor, run
from tests.unit.clock import Clock

from .helpers import all_changes, until


@pytest.fixture
def store(tmp_path):
    store = nb.connect(f'sqlite://{tmp_path / "nb.sqlite"}')
    yield store
    store.close()


def _commit(store, n=1):
    for _ in range(n):
        revision = store.put('item', str(store.revision() % 5), {'r': store.revision()})
    return revision


def _kept_from(store) -> int:
    """The oldest revision whose changes are kept (sqlite revisions are consecutive)."""
    after = store.revision()
    while after > 0:
        try:
            store.changes(after - 1)
        except api.Compacted:
            break
        after -= 1
    return after + 1


def test_nothing_younger_than_keep_seconds_goes(store):
    clock = Clock()
    compactor = Compactor(store, keep_revisions=0, keep_seconds=60, clock=clock)
    _commit(store, 50)
    assert compactor.tick() is None
    clock.now += 59
    _commit(store, 50)
    assert compactor.tick() is None, '59 s old, however many commits came after'
    assert _kept_from(store) == 1
    clock.now += 1
    assert compactor.tick() == 50, 'what was there 60 s ago'
    assert _kept_from(store) == 51


def test_the_latest_keep_revisions_commits_stay(store):
    clock = Clock()
    compactor = Compactor(store, keep_revisions=10, keep_seconds=0, clock=clock)
    _commit(store, 5)
    assert compactor.tick() is None, 'only 5 commits'
    clock.now += 3600
    _commit(store, 9)
    assert compactor.tick() is None, '9 commits after the sample at 5'
    _commit(store)
    assert compactor.tick() == 5, '10 commits after it now'
    assert len(all_changes(store, 5)) == 10


def test_only_changes_past_both_limits_go(store):
    clock = Clock()
    compactor = Compactor(store, keep_revisions=3, keep_seconds=15, clock=clock)
    for _ in range(3):  # samples: t=100 r=5, t=110 r=10, t=120 r=15
        _commit(store, 5)
        compactor.tick()
        clock.now += 10
    clock.now = 125
    assert compactor.tick() == 10, 'the newest sample 15 s old (t=110), 5 commits back'
    compactor = Compactor(store, keep_revisions=8, keep_seconds=15, clock=clock)
    _commit(store, 2)  # r=17
    compactor.tick()   # t=125 r=17
    clock.now = 140
    _commit(store, 8)  # r=25
    assert compactor.tick() == 17, 'the 15 s limit: t=125'
    clock.now = 200
    assert compactor.tick() is None, 'the 8 commits limit: r=17 is the newest sample before'


def test_zero_limits_compact_to_the_head(store):
    compactor = Compactor(store, keep_revisions=0, keep_seconds=0, clock=Clock())
    assert compactor.tick() is None, 'an empty store'
    head = _commit(store, 3)
    assert compactor.tick() == head
    assert compactor.tick() is None, 'nothing new'
    assert store.changes(head) == []


def test_the_policy_never_forgets_a_change_it_keeps(store):
    """A random walk of commits, clock moves and ticks. After every tick each change among the
    latest keep_revisions commits or younger than keep_seconds is still in the log, and the log
    starts right after the newest head seen at a tick past both limits."""
    rng = random.Random(13)
    clock = Clock()
    keep_revisions, keep_seconds = 20, 30.0
    compactor = Compactor(store, keep_revisions, keep_seconds, clock)
    committed_at = {}  # revision -> time
    ticks = []  # (time, head)
    for _ in range(300):
        for _ in range(rng.choice([0, 0, 1, 3, 10])):
            committed_at[_commit(store)] = clock.now
            clock.now += rng.random() * 0.5
        clock.now += rng.choice([1.0, 5.0, 20.0])
        head = store.revision()
        ticks.append((clock.now, head))
        compactor.tick()
        kept_from = _kept_from(store)
        must_keep = [r for r, t in committed_at.items()
                     if r > head - keep_revisions or clock.now - t < keep_seconds]
        assert not must_keep or kept_from <= min(must_keep)
        past_both = [h for t, h in ticks
                     if t <= clock.now - keep_seconds and h <= head - keep_revisions]
        assert kept_from == max(past_both, default=0) + 1
    assert kept_from > 100, 'it compacted'


def test_replicas_compact_the_same_store(store, tmp_path):
    """Two compactors, each with its own samples and clock: no error, the furthest wins."""
    other = nb.connect(f'sqlite://{tmp_path / "nb.sqlite"}')
    clocks = [Clock(), Clock()]
    compactors = [Compactor(s, 2, 10, c) for s, c in zip([store, other], clocks, strict=True)]
    compactors[0].tick()
    _commit(store, 5)
    compactors[1].tick()
    _commit(store, 5)
    for clock in clocks:
        clock.now += 10
    assert compactors[1].tick() == 5
    assert compactors[0].tick() is None, 'revision 0: nothing'
    clocks[0].now += 10
    _commit(store, 2)
    assert compactors[0].tick() == 10
    assert compactors[1].tick() is None, 'its samples are 10 s behind'
    clocks[1].now += 10
    assert compactors[1].tick() == 10, 'done already: a no-op'
    assert _kept_from(store) == 11
    other.close()


class _Flaky:
    """A store whose head() fails the first time it is asked."""

    def __init__(self, store):
        self.store, self.failed = store, False

    def head(self):
        if not self.failed:
            self.failed = True
            raise api.Unavailable('no answer')
        return self.store.head()

    def compact(self, revision):
        self.store.compact(revision)


def _conf(**options):
    conf = cfg.ConfigOpts()
    df_conf.register_opts(conf)
    conf([])
    for name, value in options.items():
        conf.set_override(name, value, group='store')
    return conf


def test_run_compacts_in_a_thread_and_survives_store_errors(store, caplog):
    head = _commit(store, 5)
    conf = _conf(compact_keep_revisions=0, compact_keep_seconds=0, compact_interval=1)
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger='dragonflow.store.compaction')
    thread = run(_Flaky(store), conf, stop)
    try:
        until(lambda: _kept_from(store) == head + 1)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert 'no answer' in caplog.text
    assert f'compacted up to revision {head}' in caplog.text
