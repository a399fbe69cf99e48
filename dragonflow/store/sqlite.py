"""The embedded store: one sqlite file in WAL mode, shared by every process on the machine.

A commit runs in one ``BEGIN IMMEDIATE`` transaction (sqlite's single writer lock), so its
conditions, its writes, its change-log rows and the revision counter move together. Watchers
sleep on inotify until the write-ahead log is written to, then read the revision counter; WAL
lets them read while a writer commits.
"""
import json
import logging
import math
import os
import sqlite3
import threading
import time
from typing import Optional

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
WAL_RETRY_SECONDS = 0.01
POLL_SECONDS = 0.01
COMMIT_SETTLE_SECONDS = 0.05


class SqliteStore(api.Store):
    def __init__(self, path: str, timeout: float = 5.0):
        self.path = path
        self.timeout = timeout
        self._local = threading.local()
        self._directory = os.path.dirname(os.path.abspath(path))
        # Every commit writes this file (sqlite recreates it after the last connection goes).
        self._log_name = os.path.basename(path) + '-wal'
        os.makedirs(self._directory, exist_ok=True)
        # One write transaction, so that processes creating the file at once do not race.
        with self._transaction(immediate=True) as db:
            for statement in SCHEMA:
                db.execute(statement)

    # Connections are per thread (sqlite3 objects must not cross threads) and per process (a
    # connection must not be used on both sides of a fork).
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, 'db', None)
        if db is None or self._local.pid != os.getpid():
            db = self._open()
            self._local.db, self._local.pid = db, os.getpid()
            self._local.log_writes = None  # a parent's watch is not this process'
        return db

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                 check_same_thread=False)
        except sqlite3.OperationalError as e:
            raise api.Unavailable(str(e)) from e
        try:
            # Switching a new file to WAL needs an exclusive lock and sqlite does not wait for
            # it (no busy handler): when processes open a new file at once, retry.
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    db.execute('PRAGMA journal_mode=WAL')
                    break
                except sqlite3.OperationalError as e:
                    if time.monotonic() >= deadline or 'locked' not in str(e):
                        raise api.Unavailable(str(e)) from e
                    time.sleep(WAL_RETRY_SECONDS)
            db.execute('PRAGMA synchronous=NORMAL')
        except BaseException:
            db.close()
            raise
        return db

    def _transaction(self, immediate=False):
        return _Transaction(self, immediate)

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
            until = min(deadline, settling_until) if now < settling_until else deadline
            events = log_writes.read(timeout=max(1, math.ceil((until - now) * 1000)))
            if any(event.name == self._log_name for event in events):
                settling_until = time.monotonic() + COMMIT_SETTLE_SECONDS
        return True

    def _log_writes(self) -> Optional[inotify_simple.INotify]:
        """This thread's watch on the log's directory, kept open: closing an inotify
        descriptor waits for the kernel (milliseconds), too slow for every wait. None when
        the kernel refuses (fs.inotify.max_user_instances or max_user_watches reached): then
        waits poll."""
        self._db()  # the per-thread state belongs to this process
        log_writes = getattr(self._local, 'log_writes', None)
        if log_writes is None:
            try:
                log_writes = inotify_simple.INotify()
                log_writes.add_watch(self._directory, inotify_simple.flags.MODIFY
                                     | inotify_simple.flags.CREATE)
            except OSError as e:
                if log_writes:
                    log_writes.close()
                LOG.warning('cannot watch %s (%s): waiting for commits by polling',
                            self._directory, e)
                log_writes = False  # asked once per thread
            self._local.log_writes = log_writes
        return log_writes or None

    def compact(self, revision):
        with self._transaction(immediate=True) as db:
            revision = min(revision, _counter(db, 'revision'))
            if revision <= _counter(db, 'compacted'):
                return
            db.execute('DELETE FROM changes WHERE revision <= ?', (revision,))
            db.execute("UPDATE counters SET value=? WHERE name='compacted'", (revision,))

    def close(self):
        db = getattr(self._local, 'db', None)
        if db is not None and self._local.pid == os.getpid():
            db.close()
            log_writes = getattr(self._local, 'log_writes', None)
            if log_writes:
                log_writes.close()
        self._local.db = self._local.log_writes = None

    def _query(self, sql, params=()):
        try:
            return self._db().execute(sql, params).fetchall()
        except sqlite3.OperationalError as e:
            raise api.Unavailable(str(e)) from e


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
    """BEGIN ... COMMIT/ROLLBACK; IMMEDIATE takes the write lock up front.

    sqlite's errors (a lock held longer than the timeout, an unreadable file) leave as
    api.Unavailable, and never leave a transaction open on the connection.
    """

    def __init__(self, store: SqliteStore, immediate: bool):
        self.store, self.immediate = store, immediate

    def __enter__(self):
        try:
            self.db = self.store._db()
            self.db.execute('BEGIN IMMEDIATE' if self.immediate else 'BEGIN')
        except sqlite3.OperationalError as e:
            raise api.Unavailable(str(e)) from e
        return self.db

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.db.execute('COMMIT')
                return False
        except sqlite3.OperationalError as e:
            self._rollback()
            raise api.Unavailable(str(e)) from e
        self._rollback()
        if issubclass(exc_type, sqlite3.OperationalError):
            raise api.Unavailable(str(exc)) from exc
        return False

    def _rollback(self):
        if self.db.in_transaction:
            self.db.execute('ROLLBACK')
