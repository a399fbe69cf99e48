"""The redis driver: objects in one hash per table, the change log in a stream.

Keys, under a prefix (``dragonflow`` unless the URL's ``?prefix=`` names another)::

    <p>:rev            the revision counter: the last commit's revision (INCR)
    <p>:log            the change log, a stream: one entry per commit, id ``<revision>-0``,
                       field ``c`` = JSON [[table, id, document-or-null], ...]
    <p>:obj:<table>    a hash: id -> "<revision>:<JSON document>"
    <p>:tables         the set of table names ever written (for snapshot)
    <p>:key:<kind>     allocate_key(): INCR
    <p>:slot:<uuid>    commit slots: the last commit token of a slot and its revision
    <p>:live:<id>      heartbeat(): the member's last value, a key with a TTL (SET PX)
    <p>:live           the set of members with such a key, pruned by heartbeats()

A commit is one Lua script (EVALSHA): it checks every condition, and only if all hold it
increments the revision, writes the objects, appends the stream entry and records its token in
its slot. Redis runs a script alone, so commits of any number of processes never interleave,
and revisions are consecutive. A commit whose reply was lost is retried with the same token: the
script sees the token in its slot and answers the revision it applied at, instead of applying
twice.

changes(after) reads the revision and XRANGE from ``<after+1>-0`` in one MULTI. Revisions are
consecutive, so if the first entry is not after+1 the stream was trimmed (by compact(), or an
operator's MAXLEN trim): Compacted. wait() blocks in XREAD on the stream. snapshot() is one
read-only script. compact(r) is one script too: it trims the stream up to min(r, revision())
(XTRIM MINID), which is a no-op once the stream starts after it.

Heartbeats are keys with a TTL of their own, outside the stream and the revision counter: redis
expires them to the millisecond, on read, at no cost to anyone else. heartbeats() is one script
(the set names the keys, so no SCAN of the keyspace) that drops the members whose key expired.

A standalone redis (or a primary with replicas) is expected: the scripts name hashes they
compute, which Redis Cluster does not allow. Network errors and timeouts are retried until the
store's timeout (socket timeouts are that timeout too), then become Unavailable.
"""
from __future__ import annotations

import json
import math
import threading
import time
import uuid
from urllib.parse import parse_qs, urlparse

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from dragonflow.store import api

DEFAULT_PREFIX = 'dragonflow'
DEFAULT_PORT = 6379
SLOT_TTL = 3600          # seconds an idle commit slot (and its last token) is kept
RETRY_PAUSE = 0.05       # seconds between retries of a request that failed
WAIT_CHUNK = 1.0         # seconds one XREAD blocks at most, before wait() looks again

# KEYS: rev, log, tables, slot, then the hash of each operation's table.
# ARGV: token, number of operations, the log entry, then per operation: kind (P, D or C),
# table, id, expected revision ('' for none), the JSON document ('' unless P).
# Returns {1, revision} or {0, index of the failed operation, actual revision or -1}.
COMMIT = """
local slot = redis.call('GET', KEYS[4])
if slot then
  local token, revision = string.match(slot, '^(%S+) (%d+)$')
  if token == ARGV[1] then return {1, tonumber(revision)} end
end
local n = tonumber(ARGV[2])
local writes = 0
for i = 1, n do
  local b = 3 + (i - 1) * 5
  local kind, expect = ARGV[b + 1], ARGV[b + 4]
  if kind ~= 'C' then writes = writes + 1 end
  if expect ~= '' or kind == 'D' then
    local current = redis.call('HGET', KEYS[4 + i], ARGV[b + 3])
    local actual = -1
    if current then actual = tonumber(string.match(current, '^(%d+):')) end
    if kind == 'D' and actual < 0 then return {0, i, actual} end
    if expect ~= '' then
      local e = tonumber(expect)
      if (e == 0 and actual >= 0) or (e ~= 0 and actual ~= e) then return {0, i, actual} end
    end
  end
end
if writes == 0 then return {1, tonumber(redis.call('GET', KEYS[1]) or '0')} end
local revision = redis.call('INCR', KEYS[1])
for i = 1, n do
  local b = 3 + (i - 1) * 5
  local kind = ARGV[b + 1]
  if kind == 'P' then
    redis.call('HSET', KEYS[4 + i], ARGV[b + 3], revision .. ':' .. ARGV[b + 5])
    redis.call('SADD', KEYS[3], ARGV[b + 2])
  elseif kind == 'D' then
    redis.call('HDEL', KEYS[4 + i], ARGV[b + 3])
  end
end
redis.call('XADD', KEYS[2], revision .. '-0', 'c', ARGV[3])
redis.call('SET', KEYS[4], ARGV[1] .. ' ' .. revision, 'EX', tonumber(ARGV[4 + n * 5]))
return {1, revision}
"""

# KEYS: rev, log. ARGV: the revision. Never past revision(): a commit racing with compact(r)
# for a later r is kept.
COMPACT = """
local revision = math.min(tonumber(ARGV[1]), tonumber(redis.call('GET', KEYS[1]) or '0'))
return redis.call('XTRIM', KEYS[2], 'MINID', (revision + 1) .. '-0')
"""

# KEYS: the member's key, the set of members. ARGV: id, value, TTL in milliseconds.
HEARTBEAT = """
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
"""

# KEYS: the set of members. ARGV: the prefix of their keys. Returns {id, value, ...}.
HEARTBEATS = """
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local value = redis.call('GET', ARGV[1] .. id)
  if value then
    out[#out + 1] = id
    out[#out + 1] = value
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out
"""

# KEYS: rev, tables. ARGV: the prefix of the table hashes. Returns {revision, table, hash...}.
SNAPSHOT = """
local out = {tonumber(redis.call('GET', KEYS[1]) or '0')}
for _, table in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  out[#out + 1] = table
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. table)
end
return out
"""


class RedisStore(api.Store):
    def __init__(self, host: str = '127.0.0.1', port: int = DEFAULT_PORT, db: int = 0,
                 prefix: str = DEFAULT_PREFIX, timeout: float = 5.0, password=None):
        self.timeout = timeout
        # No retries inside redis-py: a retried commit must carry its token (see above).
        self._redis = redis.Redis(host=host, port=port, db=db, password=password,
                                  socket_timeout=timeout, socket_connect_timeout=timeout,
                                  retry=Retry(NoBackoff(), 0))
        self._p = prefix
        self._rev, self._log, self._tables = f'{prefix}:rev', f'{prefix}:log', f'{prefix}:tables'
        self._commit_script = self._redis.register_script(COMMIT)
        self._snapshot_script = self._redis.register_script(SNAPSHOT)
        self._compact_script = self._redis.register_script(COMPACT)
        self._heartbeat_script = self._redis.register_script(HEARTBEAT)
        self._heartbeats_script = self._redis.register_script(HEARTBEATS)
        self._live = f'{prefix}:live'
        self._lock = threading.Lock()
        self._free_slots: list[list] = []   # [key, next token number]
        self._slots: set[str] = set()

    @classmethod
    def from_url(cls, url: str, timeout: float = 5.0) -> 'RedisStore':
        """``redis://[:password@]host:port[/db][?prefix=name]``."""
        parsed = urlparse(url)
        db = int(parsed.path.strip('/') or 0)
        prefix = parse_qs(parsed.query).get('prefix', [DEFAULT_PREFIX])[0]
        return cls(parsed.hostname or '127.0.0.1', parsed.port or DEFAULT_PORT, db, prefix,
                   timeout, parsed.password)

    # --- reads ---------------------------------------------------------------------------

    def get(self, table, id):
        value = self._call(self._redis.hget, self._hash(table), id)
        return _record(table, id, value) if value is not None else None

    def list(self, table):
        fields = self._call(self._redis.hgetall, self._hash(table))
        records = [_record(table, id.decode(), value) for id, value in fields.items()]
        return sorted(records, key=lambda r: r.id)

    def snapshot(self):
        reply = self._call(self._snapshot_script, keys=[self._rev, self._tables],
                           args=[f'{self._p}:obj:'])
        records = []
        for i in range(1, len(reply), 2):
            table, fields = reply[i].decode(), reply[i + 1]
            records += [_record(table, fields[j].decode(), fields[j + 1])
                        for j in range(0, len(fields), 2)]
        records.sort(key=lambda r: (r.table, r.id))
        return int(reply[0]), records

    def revision(self):
        return int(self._call(self._redis.get, self._rev) or 0)

    def head(self):
        revision = self.revision()
        return api.Head(revision, revision)  # revisions count the commits: 1, 2, 3...

    # --- writes --------------------------------------------------------------------------

    def commit(self, operations):
        api.validate(operations)
        slot = self._take_slot()
        slot[1] += 1
        token = f'{slot[1]}'
        keys = [self._rev, self._log, self._tables, slot[0]]
        args = [token, len(operations), _log_entry(operations)]
        for op in operations:
            kind = 'P' if isinstance(op, api.Put) else 'D' if isinstance(op, api.Delete) else 'C'
            document = json.dumps(op.value, separators=(',', ':')) if kind == 'P' else ''
            keys.append(self._hash(op.table))
            args += [kind, op.table, op.id, '' if op.expect is None else op.expect, document]
        args.append(SLOT_TTL)
        try:
            # Safe to repeat: a repeat with the same token applies nothing twice.
            reply = self._call(self._commit_script, keys=keys, args=args)
        finally:
            self._give_slot(slot)
        if reply[0] == 1:
            return int(reply[1])
        op, actual = operations[reply[1] - 1], int(reply[2])
        raise api.Conflict(op.table, op.id, -1 if op.expect is None else op.expect,
                           None if actual < 0 else actual)

    def allocate_key(self, kind):
        # A repeated INCR after a lost reply wastes a number, never repeats one.
        return int(self._call(self._redis.incr, f'{self._p}:key:{kind}'))

    def compact(self, revision):
        # Idempotent: trimming below the first entry removes nothing.
        self._call(self._compact_script, keys=[self._rev, self._log], args=[revision])

    # --- liveness ------------------------------------------------------------------------

    def heartbeat(self, id, value, ttl):
        # Safe to repeat: a repeat only moves the expiry by the time the first took.
        self._call(self._heartbeat_script, keys=[f'{self._live}:{id}', self._live],
                   args=[id, json.dumps(value, separators=(',', ':')),
                         max(math.ceil(ttl * 1000), 1)])

    def heartbeats(self):
        reply = self._call(self._heartbeats_script, keys=[self._live], args=[f'{self._live}:'])
        return {reply[i].decode(): json.loads(reply[i + 1]) for i in range(0, len(reply), 2)}

    # --- the change log ------------------------------------------------------------------

    def changes(self, after, limit=1000):
        def read():
            pipe = self._redis.pipeline(transaction=True)
            pipe.get(self._rev)
            pipe.xrange(self._log, min=f'{after + 1}-0', count=max(limit, 1))
            return pipe.execute()

        current, entries = self._call(read)
        current = int(current or 0)
        if current <= after:
            return []
        first = _revision(entries[0][0]) if entries else current + 1
        if first != after + 1:
            raise api.Compacted(after, first - 1)
        events: list[api.Event] = []
        for entry_id, fields in entries:
            revision = _revision(entry_id)
            events += [api.Event(revision, table, id, value)
                       for table, id, value in json.loads(fields[b'c'])]
            if len(events) >= limit:
                break
        return events

    def wait(self, after, timeout):
        end = time.monotonic() + timeout
        while True:
            if self.revision() > after:
                return True
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            # Entries after ``after`` (ids > <after>-0); a commit between the two calls is
            # still seen. Bounded chunks so a trim racing with it cannot make us miss one.
            block = max(int(min(remaining, WAIT_CHUNK, self.timeout / 2) * 1000), 1)
            if self._call(self._redis.xread, {self._log: f'{after}-0'}, count=1, block=block):
                return True

    # --- plumbing ------------------------------------------------------------------------

    def _hash(self, table: str) -> str:
        return f'{self._p}:obj:{table}'

    def _call(self, function, *args, **kwargs):
        """Run a redis call, retrying failed connections until the timeout: Unavailable.

        Only calls that are safe to repeat come here. If a commit's request may have reached
        the server (the error is not a failed connect), its Unavailable says so.
        """
        deadline = time.monotonic() + self.timeout
        sent = False
        while True:
            try:
                return function(*args, **kwargs)
            except (redis.ConnectionError, redis.TimeoutError) as e:
                sent = sent or 'connecting to' not in str(e)  # redis-py's connect errors
                if time.monotonic() + RETRY_PAUSE >= deadline:
                    unknown = ' (outcome unknown)' if sent and function is self._commit_script \
                        else ''
                    raise api.Unavailable(f'redis: {e}{unknown}') from None
                time.sleep(RETRY_PAUSE)
            except redis.RedisError as e:
                raise api.Unavailable(f'redis: {e}') from None

    def _take_slot(self) -> list:
        with self._lock:
            if self._free_slots:
                return self._free_slots.pop()
            slot = [f'{self._p}:slot:{uuid.uuid4().hex}', 0]
            self._slots.add(slot[0])
            return slot

    def _give_slot(self, slot: list) -> None:
        with self._lock:
            self._free_slots.append(slot)

    def close(self):
        with self._lock:
            slots, self._slots, self._free_slots = list(self._slots), set(), []
        if slots:
            try:
                self._redis.delete(*slots)
            except redis.RedisError:
                pass  # they expire anyway
        self._redis.close()
        self._redis.connection_pool.disconnect()


def _record(table: str, id: str, stored: bytes) -> api.Record:
    revision, document = stored.split(b':', 1)
    return api.Record(table, id, json.loads(document), int(revision))


def _revision(entry_id: bytes) -> int:
    return int(entry_id.split(b'-', 1)[0])


def _log_entry(operations) -> str:
    return json.dumps([[op.table, op.id, op.value if isinstance(op, api.Put) else None]
                       for op in operations if not isinstance(op, api.Check)],
                      separators=(',', ':'))
