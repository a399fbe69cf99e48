"""Compaction of the change log by policy, from any number of df-api replicas at once.

A change is forgotten only once it is past both limits: it is not among the latest
``keep_revisions`` commits, and it is older than ``keep_seconds``. A watcher further behind than
that gets Compacted and resyncs from a snapshot (see api.py).

The store keeps no time per revision, so the compactor samples ``(now, store.head())`` every
tick: a revision first seen at ``t`` was committed at ``t`` or before, so at ``now`` everything
up to it is at least ``now - t`` old. Likewise ``head().commits`` says how many commits came
after a sampled revision. "The latest N revisions" counts commits, not revision numbers: etcd's
revisions skip numbers (every write of its cluster takes one), so subtracting N from the head
would keep fewer than N commits there. Each tick compacts up to the newest sample past both
limits: changes are kept at least as long as the policy says, and at most one interval longer.

Compaction is idempotent (compacting to a revision already compacted is a no-op), so replicas
need no coordination: each compacts to what its own samples allow, and the store keeps the
furthest. Time comes from the clock passed in (monotonic seconds).
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Callable, Optional

from dragonflow.store import api

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Sample:
    time: float         # when the revision was first seen
    revision: int
    commits: int        # commits made up to it


class Compactor:
    """Compacts ``store``'s change log on every tick(), by the policy above."""

    def __init__(self, store: api.Store, keep_revisions: int, keep_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        if keep_revisions < 0 or keep_seconds < 0:
            raise ValueError('keep_revisions and keep_seconds must not be negative')
        self.store, self.keep_revisions, self.keep_seconds = store, keep_revisions, keep_seconds
        self._clock = clock
        self._samples: collections.deque[_Sample] = collections.deque()
        self.compacted = 0  # the last revision this compactor compacted to

    def tick(self) -> Optional[int]:
        """Sample the head and compact as far as the policy allows; the revision compacted
        to, or None if nothing new may go."""
        now = self._clock()
        head = self.store.head()
        if self._samples and head.revision < self._samples[-1].revision:
            self._samples.clear()  # a store started afresh: its old revisions mean nothing
        if not self._samples or head.revision > self._samples[-1].revision:
            self._samples.append(_Sample(now, head.revision, head.commits))
        past = [s for s in self._samples
                if s.time <= now - self.keep_seconds
                and s.commits <= head.commits - self.keep_revisions]
        if not past:
            return None
        newest = past[-1]
        # Older samples can never be the newest past both limits again.
        while self._samples[0] is not newest:
            self._samples.popleft()
        if newest.revision <= self.compacted:
            return None
        self.store.compact(newest.revision)
        self.compacted = newest.revision
        return newest.revision

    def run(self, interval: float, stop: threading.Event) -> None:
        """tick() every ``interval`` seconds until ``stop`` is set; a failed tick is logged
        and the next one tries again."""
        while not stop.is_set():
            try:
                revision = self.tick()
            except api.StoreError as e:
                LOG.warning('compaction of the change log failed, trying again in %ss: %s',
                            interval, e)
            except Exception:
                LOG.exception('compaction of the change log failed, trying again in %ss',
                              interval)
            else:
                if revision is not None:
                    LOG.info('change log compacted up to revision %d', revision)
            stop.wait(interval)


def run(store: api.Store, conf, stop: threading.Event,
        clock: Callable[[], float] = time.monotonic) -> threading.Thread:
    """Start a thread compacting ``store`` every ``[store] compact_interval`` seconds by the
    ``[store] compact_keep_revisions`` and ``compact_keep_seconds`` policy, until ``stop`` is
    set; return it (join it after setting ``stop``)."""
    options = conf.store
    compactor = Compactor(store, options.compact_keep_revisions, options.compact_keep_seconds,
                          clock)
    thread = threading.Thread(target=compactor.run, args=(options.compact_interval, stop),
                              name='compactor', daemon=True)
    thread.start()
    return thread
