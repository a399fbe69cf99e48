"""The embedded store: one sqlite file in WAL mode, shared by every process on the machine.

A commit runs in one ``BEGIN IMMEDIATE`` transaction (sqlite's single writer lock), so its
conditions, its writes, its change-log rows and the revision counter move together. Watchers
sleep on inotify until the write-ahead log is written to, then read the revision counter; WAL
lets them read while a writer commits.

Heartbeats live in a second file beside it, ``<path>-liveness``: one table, a row per member
with its expiry, filtered on read and pruned by every heartbeat. Another file because a
heartbeat written to the store's own would take its writer lock from commits and write the log
watchers sleep on. Expiries are CLOCK_MONOTONIC, one clock for every process of the machine,
tagged with the boot they were written in (the clock starts again at a reboot).

sqlite's errors leave as the contract's: a lock held past the timeout (SQLITE_BUSY, LOCKED) as
Unavailable, anything else sqlite reports about the file (corrupt, not a database, I/O error,
disk full, read-only, cannot open) as Unusable.
"""
import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from typing import Callable, Optional

import inotify_simple

from dragonflow.store import api

LOG = logging.getLogger(__name__)

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS objects (
        tbl TEXT NOT NULL, id TEXT NOT NULL, value TEXT NOT NULL, revision INTEGER NOT NULL,
        PRIMARY KEY (tbl, id))""",
    """CREATE TABLE IF NOT EXISTS changes (
        revision INTEGER NOT NULL, seq INTEGER NOT NULL, tbl TEXT NOT NULL, id TEXT NOT NULL,
        value TEXT, PRIMARY KEY (revision, seq))""",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO counters VALUES ('revision', 0), ('compacted', 0)",
]
LIVENESS_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS liveness (
        id TEXT PRIMARY KEY, value TEXT NOT NULL, boot TEXT NOT NULL, expires REAL NOT NULL)""",
]
LIVENESS_CHECKPOINT_PAGES = 16
LIVENESS_WAL_BYTES = 256 * 1024
WAL_RETRY_SECONDS = 0.01
POLL_SECONDS = 0.01
COMMIT_SETTLE_SECONDS = 0.05
SETTLE_POLL_SECONDS = 0.001


class SqliteStore(api.Store):
    def __init__(self, path: str, timeout: float = 5.0):
        self.path = path
        self.timeout = timeout
        self._local = threading.local()
        self.liveness_path = path + '-liveness'
        self._directory = os.path.dirname(os.path.abspath(path))
        # Every commit writes this file (sqlite recreates it after the last connection goes).
        self._log_name = os.path.basename(path) + '-wal'
        self._log_path = os.path.join(self._directory, self._log_name)
        os.makedirs(self._directory, exist_ok=True)
        # One write transaction, so that processes creating the file at once do not race.
        with self._transaction(immediate=True) as db:
            for statement in SCHEMA:
                db.execute(statement)

    # Connections are per thread (sqlite3 objects must not cross threads) and per process (a
    # connection must not be used on both sides of a fork).
    def _db(self) -> sqlite3.Connection:
        self._this_process()
        if self._local.db is None:
            self._local.db = self._open(self.path)
        return self._local.db

    def _live(self) -> sqlite3.Connection:
        """This thread's connection to the liveness file, which it creates if need be."""
        self._this_process()
        if self._local.live is None:
            db = self._open(self.liveness_path)
            try:
                # Its rows are few and rewritten every beat: checkpoint often and cut the
                # write-ahead log back, so the file stays small instead of growing to the
                # default checkpoint's thousand pages.
                db.execute(f'PRAGMA wal_autocheckpoint={LIVENESS_CHECKPOINT_PAGES}')
                db.execute(f'PRAGMA journal_size_limit={LIVENESS_WAL_BYTES}')
                with _Transaction(lambda: db, immediate=True):
                    for statement in LIVENESS_SCHEMA:
                        db.execute(statement)
            except BaseException:
                db.close()
                raise
            self._local.live = db
        return self._local.live

    def _this_process(self) -> None:
        if getattr(self._local, 'pid', None) != os.getpid():
            # A parent's connections and watch are not this process' (nor closed by it).
            self._local.db = self._local.live = self._local.log_writes = None
            self._local.pid = os.getpid()

    def _open(self, path: str) -> sqlite3.Connection:
        with _errors():
            db = sqlite3.connect(path, timeout=self.timeout, isolation_level=None,
                                 check_same_thread=False)
        try:
            with _errors():
                # Switching a new file to WAL needs an exclusive lock and sqlite does not wait
                # for it (no busy handler): when processes open a new file at once, retry.
                deadline = time.monotonic() + self.timeout
                while True:
                    try:
                        db.execute('PRAGMA journal_mode=WAL')
                        break
                    except sqlite3.OperationalError as e:
                        if time.monotonic() >= deadline or not _busy(e):
                            raise
                        time.sleep(WAL_RETRY_SECONDS)
                db.execute('PRAGMA synchronous=NORMAL')
        except BaseException:
            db.close()
            raise
        return db

    def _transaction(self, immediate=False):
        return _Transaction(self._db, immediate)

    def get(self, table, id):
        row = self._query('SELECT value, revision FROM objects WHERE tbl=? AND id=?',
                          (table, id))
        return api.Record(table, id, json.loads(row[0][0]), row[0][1]) if row else None

    def list(self, table):
        rows = self._query('SELECT id, value, revision FROM objects WHERE tbl=? ORDER BY id',
                           (table,))
        return [api.Record(table, id, json.loads(value), rev) for id, value, rev in rows]

    def snapshot(self):
        with self._transaction() as db:
            revision = _counter(db, 'revision')
            rows = db.execute('SELECT tbl, id, value, revision FROM objects '
                              'ORDER BY tbl, id').fetchall()
        return revision, [api.Record(t, i, json.loads(v), r) for t, i, v, r in rows]

    def revision(self):
        return self._query("SELECT value FROM counters WHERE name='revision'")[0][0]

    def head(self):
        revision = self.revision()
        return api.Head(revision, revision)  # revisions count the commits: 1, 2, 3...

    def commit(self, operations):
        api.validate(operations)
        with self._transaction(immediate=True) as db:
            for op in operations:
                _check(db, op)
            revision = _counter(db, 'revision')
            writes = [op for op in operations if not isinstance(op, api.Check)]
            if not writes:
                return revision
            revision += 1
            for seq, op in enumerate(writes):
                value = json.dumps(op.value) if isinstance(op, api.Put) else None
                if value is None:
                    db.execute('DELETE FROM objects WHERE tbl=? AND id=?', (op.table, op.id))
                else:
                    db.execute('INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?)',
                               (op.table, op.id, value, revision))
                db.execute('INSERT INTO changes VALUES (?, ?, ?, ?, ?)',
                           (revision, seq, op.table, op.id, value))
            db.execute("UPDATE counters SET value=? WHERE name='revision'", (revision,))
            return revision

    def allocate_key(self, kind):
        name = 'key:' + kind
        with self._transaction(immediate=True) as db:
            db.execute('INSERT OR IGNORE INTO counters VALUES (?, 0)', (name,))
            db.execute('UPDATE counters SET value = value + 1 WHERE name=?', (name,))
            return _counter(db, name)

    def changes(self, after, limit=1000):
        with self._transaction() as db:
            compacted = _counter(db, 'compacted')
            if after < compacted:
                raise api.Compacted(after, compacted)
            # Whole commits only: take revisions up to the limit'th change's revision.
            last = db.execute('SELECT revision FROM changes WHERE revision > ? '
                              'ORDER BY revision, seq LIMIT 1 OFFSET ?',
                              (after, max(limit - 1, 0))).fetchone()
            bound = last[0] if last else _counter(db, 'revision')
            rows = db.execute('SELECT revision, tbl, id, value FROM changes '
                              'WHERE revision > ? AND revision <= ? ORDER BY revision, seq',
                              (after, bound)).fetchall()
        return [api.Event(r, t, i, json.loads(v) if v is not None else None)
                for r, t, i, v in rows]

    def wait(self, after, timeout):
        deadline = time.monotonic() + timeout
        log_writes = self._log_writes()
        if log_writes is not None:
            log_writes.read(timeout=0)  # earlier writes: the revision read below covers them
        settling_until = 0.0
        while self.revision() <= after:
            now = time.monotonic()
            if now >= deadline:
                return False
            if log_writes is None:
                time.sleep(min(POLL_SECONDS, deadline - now))
                continue
            # A commit writes the log first and publishes its revision just after: once the
            # log was written, look again every millisecond for a little while.
            until = min(now + SETTLE_POLL_SECONDS, deadline) if now < settling_until else deadline
            if self._log_written_before(log_writes, until):
                settling_until = time.monotonic() + COMMIT_SETTLE_SECONDS
        return True

    def _log_written_before(self, log_writes: inotify_simple.INotify, until: float) -> bool:
        """Sleep until the log is written (True) or until ``until`` (False)."""
        while True:
            timeout = max(1, math.ceil((until - time.monotonic()) * 1000))
            if any([self._log_written(log_writes, event)
                    for event in log_writes.read(timeout=timeout)]):
                return True
            if time.monotonic() >= until:
                return False

    def _log_writes(self) -> Optional[inotify_simple.INotify]:
        """This thread's watch on the log, kept open: closing an inotify descriptor waits for
        the kernel (milliseconds), too slow for every wait. The log itself is watched for
        writes, and its directory only for the log's creation, so that writes to other files
        there (the liveness file, other stores) wake no one. None when the kernel refuses
        (fs.inotify.max_user_instances or max_user_watches reached): then waits poll."""
        self._db()  # the per-thread state belongs to this process
        log_writes = self._local.log_writes
        if log_writes is None:
            try:
                log_writes = inotify_simple.INotify()
                self._local.directory_watch = log_writes.add_watch(
                    self._directory, inotify_simple.flags.CREATE | inotify_simple.flags.MOVED_TO)
                self._watch_log(log_writes)
            except OSError as e:
                if log_writes:
                    log_writes.close()
                LOG.warning('cannot watch %s (%s): waiting for commits by polling',
                            self._log_path, e)
                log_writes = False  # asked once per thread
            self._local.log_writes = log_writes
        return log_writes or None

    def _watch_log(self, log_writes: inotify_simple.INotify) -> None:
        try:
            log_writes.add_watch(self._log_path, inotify_simple.flags.MODIFY)
        except FileNotFoundError:
            pass  # not there (the last connection just closed): its creation wakes us

    def _log_written(self, log_writes: inotify_simple.INotify, event) -> bool:
        """Whether an inotify event is a write to the log (a new log counts as one)."""
        if event.wd != self._local.directory_watch:
            return bool(event.mask & inotify_simple.flags.MODIFY)
        if event.name != self._log_name:
            return False
        self._watch_log(log_writes)  # a new file: watch it
        return True

    def compact(self, revision):
        with self._transaction(immediate=True) as db:
            revision = min(revision, _counter(db, 'revision'))
            if revision <= _counter(db, 'compacted'):
                return
            db.execute('DELETE FROM changes WHERE revision <= ?', (revision,))
            db.execute("UPDATE counters SET value=? WHERE name='compacted'", (revision,))

    # --- liveness ------------------------------------------------------------------------

    def heartbeat(self, id, value, ttl):
        now = time.monotonic()
        with _Transaction(self._live, immediate=True) as db:
            db.execute('DELETE FROM liveness WHERE expires <= ? OR boot <> ?', (now, BOOT))
            db.execute('INSERT OR REPLACE INTO liveness VALUES (?, ?, ?, ?)',
                       (id, json.dumps(value), BOOT, now + ttl))

    def heartbeats(self):
        rows = self._query('SELECT id, value FROM liveness WHERE boot = ? AND expires > ?',
                           (BOOT, time.monotonic()), self._live)
        return {id: json.loads(value) for id, value in rows}

    def close(self):
        """Close this thread's connections and watch (other threads' close at their exit)."""
        if getattr(self._local, 'pid', None) == os.getpid():
            for db in (self._local.db, self._local.live):
                if db is not None:
                    db.close()
            if self._local.log_writes:
                self._local.log_writes.close()
        self._local.db = self._local.live = self._local.log_writes = None

    def _query(self, sql, params=(), connection=None):
        with _errors():
            return (connection or self._db)().execute(sql, params).fetchall()


def _boot_id() -> str:
    try:
        with open('/proc/sys/kernel/random/boot_id') as f:
            return f.read().strip()
    except OSError:
        return ''


BOOT = _boot_id()


def _busy(error: sqlite3.DatabaseError) -> bool:
    """Whether sqlite gave up waiting for another connection's lock."""
    code = getattr(error, 'sqlite_errorcode', None)
    if code is None:
        return 'locked' in str(error)
    return code & 0xff in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _error(error: sqlite3.DatabaseError) -> api.StoreError:
    """The contract's error for one of sqlite's (see the module docstring)."""
    if _busy(error):
        return api.Unavailable(str(error))
    name = getattr(error, 'sqlite_errorname', type(error).__name__)
    return api.Unusable(f'sqlite: {error} ({name})')


# Errors of the code using sqlite, not of the database: left as they are.
_BUGS = (sqlite3.ProgrammingError, sqlite3.IntegrityError)


@contextlib.contextmanager
def _errors():
    """sqlite's errors inside leave as the contract's (_error)."""
    try:
        yield
    except _BUGS:
        raise
    except sqlite3.DatabaseError as e:
        raise _error(e) from e


def _counter(db, name) -> int:
    return db.execute('SELECT value FROM counters WHERE name=?', (name,)).fetchone()[0]


def _check(db, op: api.Operation) -> None:
    if op.expect is None and not isinstance(op, api.Delete):
        return
    row = db.execute('SELECT revision FROM objects WHERE tbl=? AND id=?',
                     (op.table, op.id)).fetchone()
    actual: Optional[int] = row[0] if row else None
    if isinstance(op, api.Delete) and actual is None:
        raise api.Conflict(op.table, op.id, -1 if op.expect is None else op.expect, None)
    if op.expect is None:
        return
    if (op.expect == api.MUST_NOT_EXIST and actual is not None) or \
            (op.expect != api.MUST_NOT_EXIST and actual != op.expect):
        raise api.Conflict(op.table, op.id, op.expect, actual)


class _Transaction:
    """BEGIN ... COMMIT/ROLLBACK on the connection ``connect()`` gives; IMMEDIATE takes the
    write lock up front.

    sqlite's errors leave as the contract's (_error), and never leave a transaction open on the
    connection.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], immediate: bool):
        self.connect, self.immediate = connect, immediate

    def __enter__(self):
        self.db = self.connect()
        with _errors():
            self.db.execute('BEGIN IMMEDIATE' if self.immediate else 'BEGIN')
        return self.db

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                with _errors():
                    self.db.execute('COMMIT')
                return False
            except BaseException:
                self._rollback()
                raise
        self._rollback()
        if issubclass(exc_type, sqlite3.DatabaseError) and not issubclass(exc_type, _BUGS):
            raise _error(exc) from exc
        return False

    def _rollback(self):
        try:
            if self.db.in_transaction:
                self.db.execute('ROLLBACK')
        except sqlite3.DatabaseError:
            pass  # the error being raised says more; sqlite ends the transaction anyway
