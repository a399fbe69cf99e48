"""Keeps the cache current from the store, in two threads of its own: the watcher follows the
change log; the refiller reloads the scope from a snapshot when it must (start-up, a scope
that widened to objects never kept, a change log compacted under the watcher, or a resync
asked for by the loop). Both resume after store errors with backoff; the flow loop never
waits on either (it is woken when the cache changed).

One reader of the store at a time: a snapshot loaded while the watcher applies later changes
would take the cache back in time, and those changes would never come again.
"""
import logging
import threading
from typing import Callable

from dragonflow.controller.cache import Cache
from dragonflow.model import Chassis
from dragonflow.store import api

LOG = logging.getLogger(__name__)
# From the first pause to the longest, doubling; short enough that a change made right after
# the store returns is applied within about a second.
BACKOFF = (0.1, 1.0)
WAIT_SECONDS = 1.0  # how long one wait for news lasts, so a stop is noticed


class StoreWatcher:
    def __init__(self, store: api.Store, cache: Cache, stop: threading.Event,
                 on_change: Callable[[], None]):
        self.store, self.cache, self.stop, self.on_change = store, cache, stop, on_change
        self._reads = threading.Lock()
        self._refill_asked = threading.Event()
        self._refill_asked.set()
        self._refilled = threading.Event()  # set by each refill: a compacted watcher waits

    def ask_refill(self) -> None:
        """Reload the scope from a snapshot, soon (from any thread; returns at once)."""
        with self.cache.lock:
            self.cache.needs_refill = True
        self._refill_asked.set()

    def refill_forever(self) -> None:
        pause = BACKOFF[0]
        while not self.stop.is_set():
            self._refill_asked.wait(timeout=WAIT_SECONDS)
            self._refill_asked.clear()  # before the flag: an ask after this is seen next time
            with self.cache.lock:
                due = self.cache.needs_refill
            if not due:
                continue
            try:
                self.refill()
                pause = BACKOFF[0]
            except api.StoreError as e:
                LOG.warning('cannot reload the scope, retrying in %.1f s: %s', pause, e)
                self._refill_asked.set()
                self.stop.wait(pause)
                pause = min(pause * 2, BACKOFF[1])

    def refill(self) -> None:
        with self._reads:
            revision, records = self.store.snapshot()
            with self.cache.lock:
                self.cache.load(revision, records)
                kept = sum(len(rows) for rows in self.cache.objects.values())
                unknown = len(self.cache.unknown_port_ids)
        LOG.info('scope reloaded at revision %d: %d objects kept; %d plugged interfaces name '
                 'ports the store does not have (yet)', revision, kept, unknown)
        self._refilled.set()
        self._fetch_missing_chassis()
        self.on_change()

    def watch_forever(self) -> None:
        pause = BACKOFF[0]
        while not self.stop.is_set():
            try:
                self.watch_once()
                pause = BACKOFF[0]
            except api.Compacted:
                LOG.warning('change log compacted past revision %d: resync', self.cache.revision)
                self._refilled.clear()
                self.ask_refill()
                self._refilled.wait(WAIT_SECONDS)  # the refiller takes it from here
            except api.StoreError as e:
                LOG.warning('store unavailable, retrying in %.1f s: %s', pause, e)
                self.stop.wait(pause)
                pause = min(pause * 2, BACKOFF[1])
            except Exception:  # noqa: BLE001 - e.g. a record this version cannot read
                # The watcher must outlive it: the data plane stays, the log says why, and
                # the batch is retried (an operator may fix the record or upgrade us).
                LOG.exception('cannot apply changes after revision %d, retrying in %.1f s',
                              self.cache.revision, BACKOFF[1])
                self.stop.wait(BACKOFF[1])

    def watch_once(self) -> None:
        """Apply the next page of changes, or wait for some."""
        with self._reads:
            with self.cache.lock:
                after, loaded = self.cache.revision, self.cache.loaded
            batch = self.store.changes(after) if loaded else []
            changed = False
            if batch:
                with self.cache.lock:
                    changed = self.cache.apply(batch)
                    refill = self.cache.needs_refill
        if not batch:
            if loaded:
                self.store.wait(after, timeout=WAIT_SECONDS)
            else:  # the refiller loads the first snapshot
                self.stop.wait(BACKOFF[0])
            return
        if refill:
            self._refill_asked.set()
        if self._fetch_missing_chassis() or changed:
            self.on_change()

    def _fetch_missing_chassis(self) -> bool:
        """The chassis records the scope names and the cache lacks; True if any came. Read
        as the store's one reader (a record read while the watcher applied a newer one
        would take it back), and kept only if the cache still lacks it."""
        fetched = False
        with self._reads:
            with self.cache.lock:
                missing = self.cache.missing_chassis()
            for chassis_id in missing:
                record = self.store.get(Chassis.table, chassis_id)
                if record is None:
                    continue
                with self.cache.lock:
                    if chassis_id not in self.cache.objects[Chassis.table]:
                        self.cache.add(Chassis.from_doc(record.value, record.revision))
                        fetched = True
        return fetched
