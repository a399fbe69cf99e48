"""The northbound store contract every driver implements (see docs/architecture.md).

Objects are JSON documents keyed by (table, id). Every commit gets one store-wide revision,
strictly greater than any before it; every object written by that commit carries it. Commits
are atomic: all their operations apply, or none (a failed condition raises ``Conflict``).
``watch`` yields every change after a revision, in revision order, exactly once; all changes of
one commit come consecutively, in the order of the commit's operations. A watcher asking for
history the store no longer keeps gets ``Compacted`` and must resync from ``snapshot()``.

An object may be written (Put or Delete) at most once per commit: etcd refuses a transaction
that writes a key twice, so every driver refuses such a commit with ``ValueError`` before writing
anything. Checks are conditions on the state before the commit and may name a written object.

Revisions are store-wide and strictly increasing, not necessarily consecutive (etcd's count the
writes of its whole cluster); 0 means "before the first commit".

A watcher resumes safely only from a revision whose commit it processed whole (resuming from
the middle of a commit skips the rest of it): ``changes()`` pages end on commit boundaries, so
the last revision of a page is always such a revision.

Liveness is not topology: ``heartbeat(id, value, ttl)`` says a member (a chassis) is alive for
the next ``ttl`` seconds, and ``heartbeats()`` lists the members alive now with their last
values. A heartbeat is no commit: it takes no revision, is never in the change log, is in no
snapshot and wakes no watcher, so its cost does not grow with the number of watchers. Each driver
keeps it where its expiry costs nothing to maintain: etcd a lease, redis a key with a TTL, sqlite
a table of another file with an expiry column (see each driver). Expiry is never early; it may be
late by the driver's granularity (etcd: whole seconds). Keep the value to what changes rarely (a
status, not a timestamp): a driver may store it only when it changes and otherwise just extend
its life (etcd does: each stored value is a revision of etcd's history, kept until the change
log around it is compacted). A member's heartbeats come from one process at a time.

The change log is compacted by policy (dragonflow/store/compaction.py) from ``head()``: the
latest revision and the number of commits ever made, read together. Counting commits rather
than subtracting revisions keeps "the latest N changes" true where revisions are not consecutive.
``compact(revision)`` is idempotent and safe from any number of processes at once: compacting
to a revision at or below the one already compacted is a no-op.

``Unavailable`` means the store could not be reached within the timeout. A commit that raises
it did not apply, unless its message says the outcome is unknown (the request reached the store
and the store went silent until the timeout): read before writing again. No driver applies a
commit twice: one whose reply was lost is settled (etcd fences it, redis repeats it under the
same token) before it is retried. ``Unusable``, an Unavailable, means the store was reached but
cannot serve until an operator acts (sqlite: a corrupt or foreign file, a full or read-only
disk): retrying does not help, and a commit that raises it did not apply.
"""
from __future__ import annotations

import abc
import dataclasses
import threading
from typing import Iterator, Optional, Union

# ``expect`` values of a condition: MUST_NOT_EXIST or the object's exact current revision.
MUST_NOT_EXIST = 0


class StoreError(Exception):
    """Base of the store's errors."""


class Conflict(StoreError):
    """A condition of a commit did not hold; nothing was written."""

    def __init__(self, table: str, id: str, expected: int, actual: Optional[int]):
        super().__init__(f'{table}/{id}: expected revision {expected}, found {actual}')
        self.table, self.id, self.expected, self.actual = table, id, expected, actual


class Compacted(StoreError):
    """The change log before the requested revision is gone: resync from snapshot()."""

    def __init__(self, requested: int, oldest: int):
        super().__init__(f'changes after {requested} compacted; oldest kept is {oldest}')
        self.requested, self.oldest = requested, oldest


class Unavailable(StoreError):
    """The store cannot be reached within the configured timeout."""


class Unusable(Unavailable):
    """The store answers but cannot serve: its data is unreadable or cannot be written (a corrupt
    file, a full disk). Retrying does not help until an operator repairs it; as an Unavailable it
    is answered the same way (503)."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One object as stored: its document and the revision of the commit that wrote it."""
    table: str
    id: str
    value: dict
    revision: int


@dataclasses.dataclass(frozen=True)
class Event:
    """One change: ``value`` is the new document, or None when the object was deleted."""
    revision: int
    table: str
    id: str
    value: Optional[dict]

    @property
    def deleted(self) -> bool:
        return self.value is None


@dataclasses.dataclass(frozen=True)
class Head:
    """The end of the change log, read at one moment: the latest commit's revision (revision())
    and how many commits the store has ever made, compacted or not."""
    revision: int
    commits: int


@dataclasses.dataclass(frozen=True)
class Put:
    """Write ``value``; if ``expect`` is set the object's revision must equal it first."""
    table: str
    id: str
    value: dict
    expect: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class Delete:
    """Delete the object (it must exist); if ``expect`` is set its revision must equal it."""
    table: str
    id: str
    expect: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class Check:
    """Write nothing; the commit fails unless the object's revision equals ``expect``."""
    table: str
    id: str
    expect: int


Operation = Union[Put, Delete, Check]


def validate(operations: list[Operation]) -> None:
    """Refuse a commit that writes an object twice (see the module docstring)."""
    written = set()
    for op in operations:
        if not isinstance(op, (Put, Delete, Check)):
            raise TypeError(f'not a store operation: {op!r}')
        if isinstance(op, Check):
            continue
        if (op.table, op.id) in written:
            raise ValueError(f'{op.table}/{op.id} is written more than once in one commit')
        written.add((op.table, op.id))


class Store(abc.ABC):
    """A northbound store connection. Thread-safe; one per process is enough."""

    @abc.abstractmethod
    def get(self, table: str, id: str) -> Optional[Record]:
        """The object, or None."""

    @abc.abstractmethod
    def list(self, table: str) -> list[Record]:
        """Every object of ``table``, ordered by id."""

    @abc.abstractmethod
    def snapshot(self) -> tuple[int, list[Record]]:
        """A consistent view of every object and the revision it is current at."""

    @abc.abstractmethod
    def revision(self) -> int:
        """The revision of the latest commit (0 for an empty store)."""

    @abc.abstractmethod
    def head(self) -> Head:
        """revision() and the number of commits made so far, read together."""

    @abc.abstractmethod
    def commit(self, operations: list[Operation]) -> int:
        """Apply every operation atomically; return the new revision.

        Raises Conflict when a condition fails (a Delete of a missing object is a failed
        condition too), ValueError when an object is written twice. A commit with only Checks
        writes nothing and returns revision().
        """

    @abc.abstractmethod
    def allocate_key(self, kind: str) -> int:
        """A positive integer never returned before for ``kind`` (atomic across processes)."""

    @abc.abstractmethod
    def changes(self, after: int, limit: int = 1000) -> list[Event]:
        """Changes with revision > ``after``, oldest first; whole commits only.

        At most ``limit`` changes, except that the commit which reaches the limit comes whole:
        a page is never empty while changes remain, even if one commit exceeds ``limit``.
        Raises Compacted when changes after ``after`` are no longer all kept.
        """

    @abc.abstractmethod
    def wait(self, after: int, timeout: float) -> bool:
        """Block until a revision > ``after`` exists or ``timeout`` passes; True if it does."""

    @abc.abstractmethod
    def compact(self, revision: int) -> None:
        """Forget the change log up to and including ``revision`` (at most revision()).

        Idempotent, and safe from many processes at once: a revision at or below the one
        already compacted is a no-op.
        """

    @abc.abstractmethod
    def heartbeat(self, id: str, value: dict, ttl: float) -> None:
        """Say that member ``id`` (a chassis) is alive, with ``value`` (its status), for the
        next ``ttl`` seconds. Liveness is not topology: a heartbeat is no commit, takes no
        revision, is never in the change log or a snapshot and wakes no watcher (see the
        module docstring). Each heartbeat replaces the last one's value and ttl."""

    @abc.abstractmethod
    def heartbeats(self) -> dict[str, dict]:
        """The last value of every member whose last heartbeat has not expired, by id."""

    def close(self) -> None:  # noqa: B027 - optional: a no-op for drivers holding nothing
        """Release connections."""

    # Conveniences built on the primitives above, shared by every driver.

    def put(self, table: str, id: str, value: dict, expect: Optional[int] = None) -> int:
        return self.commit([Put(table, id, value, expect)])

    def delete(self, table: str, id: str, expect: Optional[int] = None) -> int:
        return self.commit([Delete(table, id, expect)])

    def watch(self, after: int, stop: Optional[threading.Event] = None,
              poll: float = 1.0) -> Iterator[Event]:
        """Yield every change after revision ``after``, forever or until ``stop`` is set.

        Raises Compacted (see changes()); the caller resyncs from snapshot() and watches again
        from the snapshot's revision.
        """
        stop = stop or threading.Event()
        while not stop.is_set():
            batch = self.changes(after)
            if not batch:
                self.wait(after, poll)
                continue
            for event in batch:
                yield event
            after = batch[-1].revision
