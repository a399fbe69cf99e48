"""Helpers of the store conformance suite, including the code its child processes run.

Child processes are started with the 'spawn' method, so everything they run lives here, at
module level, and talks to the store only through ``dragonflow.store.connect(url)``. Results
come back as JSON files written into the test's tmp_path.
"""
import json
import multiprocessing
import threading
import time
from typing import Optional

from dragonflow import store as nb
from dragonflow.store import api

COUNTER = ('counter', 'shared')  # the object the writers increment with compare-and-swap
DONE = ('control', 'done')  # written once every writer has finished; watchers stop on it
START_TIMEOUT = 60.0


def until(condition, timeout: float = 10.0):
    """condition()'s first true value, asked until ``timeout``; fail if there is none."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, 'the condition did not come true in time'
        time.sleep(0.02)
    return result


def event_row(event: api.Event) -> list:
    """An event as plain JSON-able data, comparable across processes."""
    return [event.revision, event.table, event.id, event.value]


def all_changes(store: api.Store, after: int = 0, limit: int = 1000) -> list[api.Event]:
    """Every change kept after ``after``, paging through changes()."""
    events: list[api.Event] = []
    while True:
        batch = store.changes(after, limit)
        if not batch:
            return events
        events.extend(batch)
        after = batch[-1].revision


def commits(events: list[api.Event]) -> list[list[api.Event]]:
    """Events grouped by commit (consecutive events of one revision)."""
    groups: list[list[api.Event]] = []
    for event in events:
        if groups and groups[-1][0].revision == event.revision:
            groups[-1].append(event)
        else:
            groups.append([event])
    return groups


def replay(records: list[api.Record], events: list[api.Event]) -> dict:
    """Apply ``events`` to a state given as records: {(table, id): (value, revision)}."""
    state = {(r.table, r.id): (r.value, r.revision) for r in records}
    for event in events:
        if event.deleted:
            del state[event.table, event.id]
        else:
            state[event.table, event.id] = (event.value, event.revision)
    return state


def state_of(records: list[api.Record]) -> dict:
    return replay(records, [])


class Collector:
    """Runs ``store.watch(after)`` in a thread, collecting events until told to stop.

    With ``limit`` it stops by itself once it has seen that many events; give a commit
    boundary so that resuming from the last seen revision is exact.
    """

    def __init__(self, store: api.Store, after: int, limit: Optional[int] = None):
        self.events: list[api.Event] = []
        self._store, self._after = store, after
        self._stop = threading.Event()
        self._limit = limit
        self.error: Optional[BaseException] = None
        self.changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for event in self._store.watch(self._after, stop=self._stop, poll=0.05):
                with self.changed:
                    self.events.append(event)
                    self.changed.notify_all()
                if self._limit is not None and len(self.events) >= self._limit:
                    return
        except BaseException as e:  # handed to the test thread
            self.error = e

    def wait_for(self, count: int, timeout: float = 10.0) -> list[api.Event]:
        with self.changed:
            self.changed.wait_for(lambda: len(self.events) >= count, timeout)
        return list(self.events)

    def stop(self, timeout: float = 10.0) -> list[api.Event]:
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), 'watcher did not stop'
        if self.error is not None:
            raise self.error
        return list(self.events)


# --- multi-process ---------------------------------------------------------------------------

def spawn() -> multiprocessing.context.BaseContext:
    return multiprocessing.get_context('spawn')


def run_all(processes: list, timeout: float) -> None:
    """Join started processes; fail (and kill the rest) if any hangs or exits non-zero."""
    try:
        for proc in processes:
            proc.join(timeout)
            assert not proc.is_alive(), f'{proc.name} did not finish within {timeout}s'
            assert proc.exitcode == 0, f'{proc.name} exited with {proc.exitcode}'
    finally:
        for proc in processes:
            if proc.is_alive():
                proc.kill()
                proc.join()


def _dump(path: str, data) -> None:
    with open(path, 'w') as f:
        json.dump(data, f)


def allocate_keys(url: str, kinds: list[str], rounds: int, barrier, out: str) -> None:
    """Allocate ``rounds`` keys of every kind, interleaved; write [[kind, key], ...].

    Every process opens the store at the same moment: opening a new store concurrently works.
    """
    barrier.wait(START_TIMEOUT)
    store = nb.connect(url)
    keys = [[kind, store.allocate_key(kind)] for _ in range(rounds) for kind in kinds]
    store.close()
    _dump(out, keys)


def write(url: str, writer: int, count: int, barrier, out: str) -> None:
    """Make ``count`` commits; write what each successful commit wrote and its revision.

    The commits cycle through: a compare-and-swap increment of COUNTER (retried on Conflict),
    a two-object commit, a create (expect MUST_NOT_EXIST), and a commit that updates the
    created object at its known revision and deletes one of the two objects before.
    Output: {"log": [[revision, [[table, id, value-or-null], ...]], ...],
             "increments": n, "conflicts": n}.
    """
    store = nb.connect(url)
    barrier.wait(START_TIMEOUT)
    log, increments, conflicts = [], 0, 0
    created: dict[str, int] = {}  # id -> revision, for the writer's own CAS updates

    def commit(ops: list[api.Operation]) -> int:
        revision = store.commit(ops)
        log.append([revision, [[op.table, op.id, getattr(op, 'value', None)]
                               for op in ops if not isinstance(op, api.Check)]])
        return revision

    for i in range(count):
        name = f'w{writer}-{i}'
        step = i % 4
        if step == 0:
            while True:
                current = store.get(*COUNTER)
                value = {'n': current.value['n'] + 1, 'writer': writer, 'i': i}
                try:
                    commit([api.Put(*COUNTER, value, expect=current.revision)])
                except api.Conflict:
                    conflicts += 1
                    continue
                increments += 1
                break
        elif step == 1:
            commit([api.Put('item', name, {'writer': writer, 'i': i}),
                    api.Put('item', name + '-b', {'writer': writer, 'i': i, 'b': True})])
        elif step == 2:
            created[name] = commit([api.Put('item', name, {'writer': writer, 'i': i},
                                            expect=api.MUST_NOT_EXIST)])
        else:
            target = f'w{writer}-{i - 1}'
            commit([api.Put('item', target, {'writer': writer, 'i': i - 1, 'updated': True},
                            expect=created.pop(target)),
                    api.Delete('item', f'w{writer}-{i - 2}-b')])
    store.close()
    _dump(out, {'log': log, 'increments': increments, 'conflicts': conflicts})


def watch_continuously(url: str, barrier, out: str) -> None:
    """Watch from revision 0 with one watch() until DONE; write every event seen."""
    store = nb.connect(url)
    barrier.wait(START_TIMEOUT)
    seen = []
    for event in store.watch(0, poll=0.1):
        seen.append(event_row(event))
        if (event.table, event.id) == DONE:
            break
    store.close()
    _dump(out, seen)


def watch_resuming(url: str, barrier, out: str) -> None:
    """Watch from revision 0 in small pages, reconnecting every few pages, until DONE.

    Each reconnect opens a new store and resumes from the last revision seen; pages hold whole
    commits, so the last revision seen is always fully processed.
    """
    store = nb.connect(url)
    barrier.wait(START_TIMEOUT)
    seen, after, pages = [], 0, 0
    while not seen or (seen[-1][1], seen[-1][2]) != DONE:
        batch = store.changes(after, limit=7)
        if not batch:
            store.wait(after, 0.5)
            continue
        seen.extend(event_row(e) for e in batch)
        after = batch[-1].revision
        pages += 1
        if pages % 5 == 0:
            store.close()
            store = nb.connect(url)
    store.close()
    _dump(out, seen)


def open_new_stores(urls: list[str], barrier, out: str) -> None:
    """Open each (new) store in turn, all processes at the same moment; write any errors."""
    errors = []
    for url in urls:
        barrier.wait(START_TIMEOUT)
        try:
            store = nb.connect(url)
            store.allocate_key('k')
            store.close()
        except Exception as e:
            errors.append(f'{url}: {type(e).__name__}: {e}')
    _dump(out, errors)
