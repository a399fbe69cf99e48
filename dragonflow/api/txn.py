"""One API call = one atomic, conditional store commit, retried when a condition fails.

A ``Txn`` reads through to the store and collects writes. Every write and check carries the
revision the handler read (compare-and-swap), so a commit fails as a whole when anything it
relied on changed meanwhile, in this process or in another df-api process. ``run`` then
re-plans the call from fresh reads; handlers are written as pure plans over a Txn and never
write to the store themselves. Nothing is half-written: a plan that raises commits nothing.
"""
import contextlib
import dataclasses
import random
import time
import uuid
from typing import Callable, Optional, TypeVar

from dragonflow.api import errors
from dragonflow.model import Fence, Model
from dragonflow.store import api

T = TypeVar('T')
M = TypeVar('M', bound=Model)

RETRY_DEADLINE = 30.0    # seconds a call keeps re-planning after failed conditions
# Seconds after which the fence of a deleter that vanished may be broken. Longer than
# RETRY_DEADLINE, so a live deleter is done (or has given up) before its fence expires.
FENCE_TTL = 2 * RETRY_DEADLINE


class Retry(Exception):
    """Raised by a plan that cannot go on now but may later (a delete is in progress)."""


@dataclasses.dataclass
class _Pending:
    kind: str                 # 'put', 'delete' or 'check'
    expect: Optional[int]     # what the store must hold first: a revision or MUST_NOT_EXIST
    value: Optional[dict] = None


class Txn:
    """Reads (cached, and showing this Txn's own pending writes) and conditional writes."""

    def __init__(self, store: api.Store):
        self.store = store
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._tables: dict[str, dict[str, api.Record]] = {}
        self._gets: dict[tuple[str, str], Optional[api.Record]] = {}
        self._all: dict[str, list] = {}   # all()'s answers, until this Txn writes the table

    # Reads

    def get(self, model: type[M], id: str) -> Optional[M]:
        key = (model.table, id)
        if key in self._pending and self._pending[key].kind != 'check':
            return self._from_pending(model, key)
        if model.table in self._tables:
            record = self._tables[model.table].get(id)
        else:
            if key not in self._gets:
                self._gets[key] = self.store.get(model.table, id)
            record = self._gets[key]
        return model.from_doc(record.value, record.revision) if record else None

    def all(self, model: type[M]) -> list[M]:
        """Every object of the model's table, this Txn's writes applied, ordered by id."""
        if model.table in self._all:
            return list(self._all[model.table])
        if model.table not in self._tables:
            self._tables[model.table] = {r.id: r for r in self.store.list(model.table)}
        ids = set(self._tables[model.table])
        ids.update(id for (table, id) in self._pending if table == model.table)
        objects = (self.get(model, id) for id in sorted(ids))
        self._all[model.table] = [obj for obj in objects if obj is not None]
        return list(self._all[model.table])

    def _from_pending(self, model, key) -> Optional[Model]:
        pending = self._pending[key]
        if pending.kind == 'delete':
            return None
        return model.from_doc(pending.value, pending.expect or 0)

    # Writes: each remembers the first expectation about the stored object and keeps it.

    def create(self, obj: Model) -> None:
        self._write(obj.table, obj.id, 'put', api.MUST_NOT_EXIST, obj.to_doc())

    def update(self, obj: Model) -> None:
        self._write(obj.table, obj.id, 'put', obj.revision or None, obj.to_doc())

    def delete(self, obj: Model) -> None:
        self._write(obj.table, obj.id, 'delete', obj.revision or None)

    def require(self, obj: Model) -> None:
        """Commit only if ``obj`` is still at the revision read."""
        self._write(obj.table, obj.id, 'check', obj.revision)

    def require_absent(self, table: str, id: str) -> None:
        self._write(table, id, 'check', api.MUST_NOT_EXIST)

    def _write(self, table, id, kind, expect, value=None) -> None:
        key = (table, id)
        self._all.pop(table, None)
        old = self._pending.get(key)
        if old is None:
            self._pending[key] = _Pending(kind, expect, value)
            return
        if kind == 'check':
            return  # an earlier write already carries the condition
        if kind == 'delete' and old.expect == api.MUST_NOT_EXIST:
            kind = 'check'  # created and deleted in this Txn: only the absence matters
        self._pending[key] = _Pending(kind, old.expect, value)

    def operations(self) -> list[api.Operation]:
        ops = []
        for (table, id), p in self._pending.items():
            if p.kind == 'put':
                ops.append(api.Put(table, id, p.value, p.expect))
            elif p.kind == 'delete':
                ops.append(api.Delete(table, id, p.expect))
            else:
                ops.append(api.Check(table, id, p.expect))
        return ops

    def commit(self) -> int:
        return self.store.commit(self.operations())


class Keys:
    """Data-plane keys for one API call, allocated once and reused by every retry."""

    def __init__(self, store: api.Store):
        self.store = store
        self._keys: dict[str, list[int]] = {}
        self._used: dict[str, int] = {}

    def next(self, kind: str) -> int:
        keys = self._keys.setdefault(kind, [])
        used = self._used.get(kind, 0)
        if used == len(keys):
            keys.append(self.store.allocate_key(kind))
        self._used[kind] = used + 1
        return keys[used]

    def rewind(self) -> None:
        self._used.clear()


def run(store: api.Store, plan: Callable[[Txn, Keys], T]) -> tuple[T, int]:
    """Plan and commit until the commit's conditions hold; the plan's result and revision."""
    keys = Keys(store)
    deadline = time.monotonic() + RETRY_DEADLINE
    for attempt in range(1_000_000):
        keys.rewind()
        txn = Txn(store)
        try:
            result = plan(txn, keys)
            return result, txn.commit()
        except (api.Conflict, Retry):
            if time.monotonic() > deadline:
                raise errors.ServiceUnavailable('too much contention, try again') from None
            # Jittered back-off so competing processes stop colliding on the same choice.
            time.sleep(random.uniform(0, min(0.002 * 2 ** attempt, 0.1)))
    raise AssertionError('unreachable')


def fence_id(model: type[Model], id: str) -> str:
    return f'{model.table}/{id}'


def require_unfenced(txn: Txn, model: type[Model], id: str) -> None:
    """Make the commit require that no delete of (model, id) is in progress."""
    fence = txn.get(Fence, fence_id(model, id))
    if fence is None:
        txn.require_absent(Fence.table, fence_id(model, id))
    elif fence.expires > time.time():
        raise Retry()
    else:
        txn.delete(fence)  # its deleter died: break the fence in the same commit


@contextlib.contextmanager
def fenced(store: api.Store, model: type[Model], id: str):
    """Hold a fence on (model, id) while the body checks dependents and deletes the object.

    Yields the fence; the deleting commit requires it (``txn.require``), so the delete fails
    rather than races if the fence was broken as expired meanwhile.
    """
    fence = Fence(id=fence_id(model, id), expires=time.time() + FENCE_TTL)
    _, fence.revision = run(store, lambda txn, _: _take_fence(txn, fence))
    try:
        yield fence
    finally:
        with contextlib.suppress(api.Conflict):
            store.delete(Fence.table, fence.id, expect=fence.revision)


def _take_fence(txn: Txn, fence: Fence) -> None:
    held = txn.get(Fence, fence.id)
    if held is None:
        txn.create(fence)
    elif held.expires > time.time():
        raise Retry()  # another delete of the same object is running: wait for it
    else:
        txn.update(fence.model_copy(update={'revision': held.revision}))


def new_id() -> str:
    return str(uuid.uuid4())
