"""The clustered store: etcd v3 through its grpc-gateway JSON API (etcd3gw).

Keys, under a prefix (``/dragonflow/`` unless the URL names another)::

    meta/rev                 put by every commit: its mod_revision is revision()
    meta/compacted           the revision compact() forgot the change log up to
    objects/<table>/<id>     the JSON document; its mod_revision is the record's revision
    keys/<kind>              allocate_key(): the key's version counts the puts to it
    liveness/<id>            heartbeat(): the member's last value, attached to its lease
    sessions/<uuid>          commit slots, which make a commit apply at most once (below)

Revisions are etcd's own: a commit is one etcd transaction, so every object it writes (and
``meta/rev``) gets the transaction's revision. They are strictly increasing but not consecutive
(other keys of the cluster take revisions too); revision() is 0 until the first commit under
the prefix, because it is ``meta/rev``'s mod_revision, not etcd's header revision. ``meta/rev``'s
version counts the commits (head()).

A commit is one transaction: each condition is a compare (MUST_NOT_EXIST: create_revision == 0;
a revision: mod_revision == it; a Delete: create_revision > 0), the success branch holds every
Put and Delete plus ``meta/rev``, the failure branch reads the conditioned keys back so that
Conflict says what was found, at the same revision the compares saw.

The change log is etcd's history, read through the watch API. etcd keeps the events of one
transaction in one watch response, in the transaction's order, so pages end on whole commits.
A watch created on past revisions is served by a loop that runs every 100 ms, so each process
keeps one live watch on ``objects/`` (the tail, a thread) with the recent events in memory:
changes(after) reads ``meta/rev`` (the last commit R; its create_revision is the first commit)
linearizably, waits until the tail has seen R and answers from memory. Changes older than the
tail keeps come from a watch of the past, started one revision early so that etcd refuses it
when the first revision needed is the compaction revision itself (etcd keeps that revision's
puts, not its deletes). History etcd compacted (compact() here, or etcd's own auto-compaction)
comes back as a cancelled watch: Compacted. compact(rev) records ``meta/compacted`` (which
changes() checks first, so the answer is exact) and then compacts etcd at rev. Note etcd
compaction is cluster-wide: it forgets the history of every prefix.

wait(after) reads ``meta/rev``, then waits for the tail to see a later commit.

Heartbeats are leases. Each member's key lives under ``liveness/``, outside ``objects/`` (which
the tail and history watch), attached to a lease this process granted with the heartbeat's ttl
(whole seconds, rounded up; etcd raises it to its minimum, 1.5 election timeouts). The lease is
kept for the member's next heartbeats: one that repeats the last value is a keepalive, which
etcd's leader answers alone, and a transaction that compares the key's value and lease and
finds them the same: no revision and nothing in etcd's history (etcd still passes the
transaction through raft, since its failure branch could write). A new value (or a
key removed meanwhile) is one put by that transaction's failure branch. A fresh lease per
heartbeat would be three raft writes (grant, put, revoke the last one) and a revision of
history each time. A dead process' lease, and the key with it,
goes when its ttl runs out after the last keepalive (etcd's leader checks every half second).
close() does not revoke: a member that stops cleanly lives its ttl out, as one that crashed. A
lease found expired (the process stalled past its ttl) is replaced by a new one.

Endpoints: ``etcd://h1:p1,h2:p2,...``. A request that fails on the network, times out, or gets
an error etcd marks as retryable (no leader, leader changed, timed out) moves to the next
endpoint and is retried until the store's timeout, then becomes Unavailable. Reads are retried
freely. A commit whose request failed may or may not have applied; retrying it blindly could
apply it twice. So every commit also carries a commit slot: it compares the slot key's
mod_revision with the one this process last saw and puts a fresh token into it. After an
unknown outcome the driver writes a *fence* token into the slot under the same compare: if the
fence applies, the commit can never apply any more (its compare fails), and it is retried; if
the fence fails, the slot shows whether the commit's token landed, at which revision. Only
when even that cannot be settled before the timeout is the outcome unknown (Unavailable).
"""
from __future__ import annotations

import base64
import bisect
import dataclasses
import json
import math
import os
import socket
import sys
import threading
import time
import uuid
from typing import Iterator, Optional
from urllib.parse import quote, unquote, urlparse

import requests
import urllib3

from dragonflow.store import api


def _import_etcd3gw():
    """etcd3gw's client and exceptions, imported without importing eventlet.

    etcd3gw (and futurist, which it uses) import eventlet, if installed, only to see whether
    it monkey-patched threads. Importing eventlet has side effects of its own (it warns on
    every fork), and we use plain threads: eventlet is hidden while etcd3gw is imported.
    """
    hide = 'eventlet' not in sys.modules
    if hide:
        sys.modules['eventlet'] = None  # type: ignore[assignment]  # import eventlet fails
    try:
        from etcd3gw import exceptions
        from etcd3gw.client import Etcd3Client
    finally:
        if hide and sys.modules.get('eventlet') is None:
            del sys.modules['eventlet']
    return Etcd3Client, exceptions


Etcd3Client, etcd3gw_exceptions = _import_etcd3gw()

DEFAULT_PREFIX = '/dragonflow/'
DEFAULT_PORT = 2379
PAGE = 5000                 # keys per range request of list() and snapshot()
CONNECT_TIMEOUT = 1.0       # seconds to open a connection to one endpoint
RETRY_PAUSE = 0.05          # seconds between rounds over every endpoint
MAX_OPERATIONS = 126        # etcd's --max-txn-ops (128) less meta/rev and the slot
TAIL_IDLE = 10.0            # seconds without an event before the tail checks its member
TAIL_EVENTS = 10000         # events the tail keeps (between this and twice as many)


class _Transient(Exception):
    """A request failed in a way another endpoint, or a later retry, may not."""

    def __init__(self, message: str, sent: bool = True):
        super().__init__(message)
        self.sent = sent  # False: it never reached etcd (no connection), so it did not apply


class _EtcdCompacted(Exception):
    """etcd refused a read at a revision it has compacted."""


class _Timeout(Exception):
    """A watch saw nothing within its time."""


class _LeaseGone(Exception):
    """etcd no longer has the lease (it expired)."""


@dataclasses.dataclass
class _Meta:
    header: int         # etcd's revision when it was read
    rev: int            # revision(): the last commit's revision, 0 if none
    commits: int        # how many commits: meta/rev's version (every commit puts it once)
    base: int           # the first commit's revision (meta/rev's create_revision)
    floor: int          # compact(): changes after ``floor`` are kept
    floor_mod: int      # meta/compacted's mod_revision, for compare-and-swap


@dataclasses.dataclass
class _Beat:
    """This process' lease of one member."""
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    lease: int = 0          # 0: none
    seconds: int = 0        # the lease's TTL


@dataclasses.dataclass
class _Slot:
    """A commit slot: a key only this slot's holder writes (see the module docstring)."""
    key: bytes
    rev: int = 0        # the key's mod_revision as last seen (0: absent)
    seq: int = 0
    sent: bool = False  # whether a transaction writing it reached etcd (close() deletes it)


class EtcdStore(api.Store):
    def __init__(self, endpoints: list[tuple[str, int]], prefix: str = DEFAULT_PREFIX,
                 timeout: float = 5.0):
        if not endpoints:
            raise ValueError('no etcd endpoint')
        self.endpoints = list(endpoints)
        self.timeout = timeout
        # One attempt on one endpoint may take a third of the timeout, so a dead or
        # leaderless member leaves time to fail over and to settle a commit's outcome.
        self._attempt = max(timeout / 3, 0.05)
        self._prefix = prefix.encode() if prefix.endswith('/') else prefix.encode() + b'/'
        self._objects = self._prefix + b'objects/'
        self._rev_key = self._prefix + b'meta/rev'
        self._floor_key = self._prefix + b'meta/compacted'
        self._current = 0
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list = []
        self._free_slots: list[_Slot] = []
        self._slot_keys: set[bytes] = set()
        self._tails: dict[int, _Tail] = {}   # by process id
        self._live = self._prefix + b'liveness/'
        self._beats: dict[str, _Beat] = {}
        self._beats_pid = os.getpid()

    @classmethod
    def from_url(cls, url: str, timeout: float = 5.0) -> 'EtcdStore':
        """``etcd://host:port[,host:port...][/prefix]``."""
        parsed = urlparse(url)
        endpoints = [_endpoint(part) for part in parsed.netloc.split(',') if part]
        prefix = parsed.path if parsed.path not in ('', '/') else DEFAULT_PREFIX
        return cls(endpoints, prefix, timeout)

    # --- reads ---------------------------------------------------------------------------

    def get(self, table, id):
        key = self._key(table, id)
        reply = self._request('kv/range', {'key': _b64(key)}, self._deadline())
        kvs = reply.get('kvs', [])
        return self._record(kvs[0]) if kvs else None

    def list(self, table):
        start = self._objects + _table(table) + b'/'
        _, kvs = self._range(start, _prefix_end(start), self._deadline())
        return [self._record(kv) for kv in kvs]

    def snapshot(self):
        # meta/ sorts just before objects/: one range (pages at one revision) reads both.
        start = self._prefix + b'meta/'
        _, kvs = self._range(start, _prefix_end(self._objects), self._deadline())
        revision, records = 0, []
        for kv in kvs:
            key = _unb64(kv['key'])
            if key == self._rev_key:
                revision = int(kv['mod_revision'])
            elif key.startswith(self._objects):
                records.append(self._record(kv))
        records.sort(key=lambda r: (r.table, r.id))
        return revision, records

    def revision(self):
        return self._meta(self._deadline()).rev

    def head(self):
        meta = self._meta(self._deadline())
        return api.Head(meta.rev, meta.commits)

    # --- writes --------------------------------------------------------------------------

    def commit(self, operations):
        api.validate(operations)
        writes = [op for op in operations if not isinstance(op, api.Check)]
        if len(writes) > MAX_OPERATIONS:
            raise ValueError(f'{len(writes)} writes in one commit; etcd takes at most '
                             f'{MAX_OPERATIONS}')
        deadline = self._deadline()
        if not writes:
            return self._check_only(operations, deadline)
        slot = self._take_slot()
        try:
            revision = self._commit(slot, operations, deadline)
        except _Unsettled as e:
            # The slot is never used again (close() still removes its key).
            raise api.Unavailable(f'commit outcome unknown: {e}') from None
        except BaseException:
            self._give_slot(slot)
            raise
        self._give_slot(slot)
        return revision

    def _commit(self, slot: _Slot, operations, deadline) -> int:
        conditioned = [op for op in operations if _conditioned(op)]
        unsent = 0
        while True:
            slot.seq += 1
            token = f'{slot.seq}'.encode()
            txn = {
                'compare': [_compare_mod(slot.key, slot.rev)] +
                           [c for op in conditioned for c in self._compares(op)],
                'success': [self._write(op) for op in operations
                            if not isinstance(op, api.Check)] +
                           [_put(self._rev_key, b''), _put(slot.key, token)],
                'failure': [_range(slot.key)] +
                           [_range(self._key(op.table, op.id)) for op in conditioned],
            }
            try:
                reply = self._request('kv/txn', txn, deadline, retry=False)
            except _Transient as e:
                if not e.sent:  # no connection: try the next endpoint
                    unsent += 1
                    if unsent % len(self.endpoints) == 0:
                        self._pause(deadline)
                    continue
                self._sent(slot)
                applied = self._settle(slot, token, deadline, e)
                if applied is not None:
                    return applied
                continue  # fenced: it did not apply and never will; try again
            self._sent(slot)
            if reply.get('succeeded'):
                slot.rev = int(reply['header']['revision'])
                return slot.rev
            replies = [_kvs(r) for r in reply.get('responses', [])]
            found = _mod(replies[0])
            if found != slot.rev:  # the slot moved under us (an earlier unsettled commit)
                slot.rev = found
                continue
            for op, kvs in zip(conditioned, replies[1:], strict=True):
                actual = _mod(kvs) or None
                if not _holds(op, actual):
                    raise api.Conflict(op.table, op.id, _expected(op), actual)
            # Every condition held when read back: something moved in between; retry.

    def _settle(self, slot: _Slot, token: bytes, deadline: float, error) -> Optional[int]:
        """The revision the commit carrying ``token`` applied at, or None if it never will."""
        for n in range(1_000_000):
            if time.monotonic() >= deadline:
                break
            fence = token + f'-fence{n}'.encode()
            txn = {'compare': [_compare_mod(slot.key, slot.rev)],
                   'success': [_put(slot.key, fence)],
                   'failure': [_range(slot.key)]}
            try:
                reply = self._request('kv/txn', txn, deadline, retry=False)
            except _Transient as e:
                error = e
                self._pause(deadline)
                continue
            except api.Unavailable:
                break
            if reply.get('succeeded'):
                slot.rev = int(reply['header']['revision'])
                return None
            kvs = _kvs(reply['responses'][0])
            value = _unb64(kvs[0].get('value', '')) if kvs else b''
            slot.rev = _mod(kvs)
            if value == token:
                return slot.rev
            if value.startswith(token + b'-fence'):
                return None
            raise _Unsettled(f'slot {slot.key!r} holds {value!r}')
        raise _Unsettled(str(error))

    def _check_only(self, operations, deadline) -> int:
        txn = {'compare': [c for op in operations for c in self._compares(op)],
               'success': [_range(self._rev_key)],
               'failure': [_range(self._key(op.table, op.id)) for op in operations]}
        reply = self._request('kv/txn', txn, deadline)
        replies = [_kvs(r) for r in reply.get('responses', [])]
        if reply.get('succeeded'):
            return _mod(replies[0])
        for op, kvs in zip(operations, replies, strict=True):
            actual = _mod(kvs) or None
            if not _holds(op, actual):
                raise api.Conflict(op.table, op.id, _expected(op), actual)
        return self._check_only(operations, deadline)  # it moved back and forth; again

    def allocate_key(self, kind):
        # Every put raises the key's version by one, atomically: the version this put made is
        # ours alone. A retried put after a lost reply wastes a number, never repeats one.
        key = self._prefix + b'keys/' + quote(kind, safe='').encode()
        reply = self._request('kv/put', {'key': _b64(key), 'value': '', 'prev_kv': True},
                              self._deadline())
        return int(reply.get('prev_kv', {}).get('version', 0)) + 1

    def compact(self, revision):
        deadline = self._deadline()
        while True:
            meta = self._meta(deadline)
            target = min(revision, meta.rev)
            if target <= 0:
                return
            if target <= meta.floor:
                break
            txn = {'compare': [_compare_mod(self._floor_key, meta.floor_mod)],
                   'success': [_put(self._floor_key, str(target).encode())]}
            try:
                if self._request('kv/txn', txn, deadline, retry=False).get('succeeded'):
                    break
            except _Transient:
                self._pause(deadline)  # read the floor again: the put may have applied
        # After compacting at ``target`` etcd still has every change after it.
        try:
            self._request('kv/compaction', {'revision': target}, deadline)
        except _EtcdCompacted:
            pass  # already compacted further

    # --- liveness ------------------------------------------------------------------------

    def heartbeat(self, id, value, ttl):
        seconds = max(math.ceil(ttl), 1)
        document = json.dumps(value, separators=(',', ':')).encode()
        key = self._live + quote(id, safe='').encode()
        beat = self._beat(id)
        with beat.lock:
            deadline = self._deadline()
            if beat.lease and beat.seconds == seconds:
                try:
                    if self._keepalive(beat.lease, deadline):
                        self._put_live(key, document, beat.lease, deadline)
                        return
                except _LeaseGone:
                    pass
            old, beat.lease = beat.lease, 0
            lease = self._grant(seconds, deadline)
            try:
                self._put_live(key, document, lease, deadline)
            except _LeaseGone:
                raise api.Unavailable(f'etcd: a lease of {seconds}s expired before its first '
                                      'put') from None
            beat.lease, beat.seconds = lease, seconds
            if old:  # its ttl changed: the key is on the new lease now
                self._revoke(old, deadline)

    def heartbeats(self):
        _, kvs = self._range(self._live, _prefix_end(self._live), self._deadline())
        return {unquote(_unb64(kv['key'])[len(self._live):].decode()): _doc(kv) for kv in kvs}

    def _beat(self, id: str) -> _Beat:
        with self._lock:
            if self._beats_pid != os.getpid():  # a parent's leases are not this process'
                self._beats, self._beats_pid = {}, os.getpid()
            return self._beats.setdefault(id, _Beat())

    def _grant(self, seconds: int, deadline: float) -> int:
        # A grant retried after a lost reply leaves a lease with no key, gone in ``seconds``.
        return int(self._request('lease/grant', {'TTL': seconds}, deadline)['ID'])

    def _keepalive(self, lease: int, deadline: float) -> bool:
        """Renew the lease; False if etcd no longer has it."""
        reply = self._request('lease/keepalive', {'ID': lease}, deadline)
        if 'result' not in reply:  # the gateway's stream sent an error instead
            raise api.Unavailable(f'etcd lease keepalive: {reply.get("error", reply)}')
        return int(reply['result'].get('TTL', 0)) > 0

    def _put_live(self, key: bytes, document: bytes, lease: int, deadline: float) -> None:
        """Put the key unless it already holds ``document`` on ``lease`` (then nothing is
        written, no revision taken), so a key removed under a live lease (by hand, by another
        process) comes back."""
        put = {'key': _b64(key), 'value': _b64(document), 'lease': lease}
        txn = {'compare': [{'key': _b64(key), 'target': 'VALUE', 'result': 'EQUAL',
                            'value': _b64(document)},
                           {'key': _b64(key), 'target': 'LEASE', 'result': 'EQUAL',
                            'lease': lease}],
               'failure': [{'request_put': put}]}
        self._request('kv/txn', txn, deadline)

    def _revoke(self, lease: int, deadline: float) -> None:
        try:
            self._request('lease/revoke', {'ID': lease}, deadline)
        except (_LeaseGone, api.Unavailable):
            pass  # it expires by itself

    # --- the change log ------------------------------------------------------------------

    def changes(self, after, limit=1000):
        deadline = self._deadline()
        while True:
            meta = self._meta(deadline)
            if after < meta.floor:
                raise api.Compacted(after, meta.floor)
            if after >= meta.rev:
                return []
            tail = self._tail(max(after, meta.base - 1), None)
            events = tail.read(after, meta.rev, meta.base, limit, self._attempt_time(deadline))
            if events is not None:
                return events
            # Older than what the tail keeps, or the tail is behind: read etcd's history.
            try:
                return self._history(after, meta, limit, deadline)
            except _Transient:
                self._pause(deadline)

    def _history(self, after: int, meta: _Meta, limit: int, deadline: float) -> list[api.Event]:
        """Changes after ``after`` (up to meta.rev or ``limit``) from a watch of the past.

        The watch starts one revision early, so that etcd refuses it if the first revision we
        need is the compaction revision itself: etcd keeps that revision's puts, not its deletes.
        """
        if time.monotonic() >= deadline:
            raise api.Unavailable(f'etcd {self._names()}: no answer within {self.timeout}s')
        start = max(after + 1, meta.base)
        watch = {'key': _b64(self._objects), 'range_end': _b64(_prefix_end(self._objects)),
                 'start_revision': max(start - 1, 1)}
        events: list[api.Event] = []
        stream = self._watch(watch, self._attempt_time(deadline))
        try:
            for result in stream:
                events += [e for e in self._events(result) if e.revision >= start]
                if events and (events[-1].revision >= meta.rev or len(events) >= limit):
                    return _page(events, limit)
        except _EtcdCompacted as e:
            raise api.Compacted(after, max(int(str(e)), meta.floor)) from None
        except _Timeout:
            raise _Transient('watch: no answer') from None
        finally:
            stream.close()  # closes the HTTP stream, which cancels the watch
        raise _Transient('watch ended')

    def _events(self, result: dict) -> list[api.Event]:
        events = []
        for raw in result.get('events', []):
            kv = raw['kv']
            table, id = self._split(_unb64(kv['key']))
            value = None if raw.get('type') == 'DELETE' else _doc(kv)
            events.append(api.Event(int(kv['mod_revision']), table, id, value))
        return events

    def wait(self, after, timeout):
        end = time.monotonic() + timeout
        meta = self._meta(self._deadline())
        if meta.rev > after:
            return True
        # No commit in (after, header]: a tail started now has everything after ``after``.
        return self._tail(min(after, meta.header), meta.header).wait_past(after, end)

    def _tail(self, lo: int, now: Optional[int]) -> '_Tail':
        """This process' tail of the change log, if there is none started: to hold every
        change after ``lo``, watching from ``now + 1`` if there is no change in (lo, now]."""
        with self._lock:
            tail = self._tails.get(os.getpid())
            if tail is None:
                tail = self._tails[os.getpid()] = _Tail(self, lo, now)
            return tail

    # --- transport -----------------------------------------------------------------------

    def _deadline(self) -> float:
        return time.monotonic() + self.timeout

    def _attempt_time(self, deadline: float) -> float:
        return max(min(self._attempt, deadline - time.monotonic()), 0.001)

    def _client(self, index: int):
        clients = getattr(self._local, 'clients', None)
        if clients is None or self._local.pid != os.getpid():
            clients = self._local.clients = {}
            self._local.pid = os.getpid()
        if index not in clients:
            host, port = self.endpoints[index]
            clients[index] = Etcd3Client(host=host, port=port, api_path='/v3/')
            clients[index].session.trust_env = False  # no proxy or netrc look-up per request
            with self._lock:
                self._clients.append(clients[index])
        return clients[index]

    def _failover(self, index: int) -> None:
        if self._current == index:
            self._current = (index + 1) % len(self.endpoints)

    def _pause(self, deadline: float) -> None:
        time.sleep(max(min(RETRY_PAUSE, deadline - time.monotonic()), 0))

    def _request(self, path: str, body: dict, deadline: float, retry: bool = True) -> dict:
        """POST to the current endpoint, failing over; Unavailable once ``deadline`` passes.

        With ``retry=False`` a failure raises _Transient at once, for the caller to settle.
        """
        failures = 0
        while True:
            if time.monotonic() >= deadline:
                raise api.Unavailable(f'etcd {self._names()}: no answer within '
                                      f'{self.timeout}s')
            index = self._current
            client = self._client(index)
            read = self._attempt_time(deadline)
            client.timeout = (min(CONNECT_TIMEOUT, read), read)
            try:
                return client.post(client.get_url(path), json=body)
            except (etcd3gw_exceptions.Etcd3Exception, requests.RequestException) as e:
                error = _classify(e)
            self._failover(index)
            if not retry:
                raise error
            failures += 1
            if failures % len(self.endpoints) == 0:
                self._pause(deadline)

    def _watch(self, create: dict, read_timeout: float,
               holder: Optional[list] = None) -> Iterator[dict]:
        """The results of one watch stream on the current endpoint, as they come.

        ``holder`` gets the HTTP reply, for another thread to interrupt it.
        """
        index = self._current
        client = self._client(index)
        timeout = (min(CONNECT_TIMEOUT, read_timeout), read_timeout)
        try:
            with client.session.post(client.get_url('watch'), json={'create_request': create},
                                     stream=True, timeout=timeout) as reply:
                if holder is not None:
                    holder[:] = [reply]
                if reply.status_code != 200:
                    raise _Transient(f'watch: HTTP {reply.status_code}: {reply.text[:200]}')
                buffer = b''
                for chunk in reply.iter_content(chunk_size=None):
                    buffer += chunk
                    while b'\n' in buffer:
                        line, buffer = buffer.split(b'\n', 1)
                        if line.strip():
                            yield _watch_result(json.loads(line))
        except requests.RequestException as e:
            if _is_read_timeout(e):
                raise _Timeout() from None
            self._failover(index)
            raise _Transient(f'watch: {e}') from None
        except _Transient:
            self._failover(index)
            raise

    def _meta(self, deadline: float) -> _Meta:
        start = self._prefix + b'meta/'
        reply = self._request('kv/range', {'key': _b64(start),
                                           'range_end': _b64(_prefix_end(start))}, deadline)
        meta = _Meta(header=int(reply['header']['revision']), rev=0, commits=0, base=0, floor=0,
                     floor_mod=0)
        for kv in reply.get('kvs', []):
            key = _unb64(kv['key'])
            if key == self._rev_key:
                meta.rev, meta.base = int(kv['mod_revision']), int(kv['create_revision'])
                meta.commits = int(kv['version'])
            elif key == self._floor_key:
                meta.floor, meta.floor_mod = int(_unb64(kv['value'])), int(kv['mod_revision'])
        return meta

    def _range(self, start: bytes, end: bytes, deadline: float) -> tuple[int, list[dict]]:
        """Every key in [start, end) at one revision, in pages; (revision, kvs)."""
        while True:
            body = {'key': _b64(start), 'range_end': _b64(end), 'limit': PAGE}
            reply = self._request('kv/range', body, deadline)
            revision = int(reply['header']['revision'])
            kvs = reply.get('kvs', [])
            try:
                while reply.get('more'):
                    body = dict(body, key=_b64(_unb64(kvs[-1]['key']) + b'\0'),
                                revision=revision)
                    reply = self._request('kv/range', body, deadline)
                    kvs += reply.get('kvs', [])
            except _EtcdCompacted:
                continue  # compacted past our revision between pages: read again
            return revision, kvs

    def _names(self) -> str:
        return ','.join(f'{host}:{port}' for host, port in self.endpoints)

    # --- keys and slots ------------------------------------------------------------------

    def _key(self, table: str, id: str) -> bytes:
        return self._objects + _table(table) + b'/' + id.encode()

    def _split(self, key: bytes) -> tuple[str, str]:
        table, id = key[len(self._objects):].split(b'/', 1)
        return unquote(table.decode()), id.decode()

    def _record(self, kv: dict) -> api.Record:
        table, id = self._split(_unb64(kv['key']))
        return api.Record(table, id, _doc(kv), int(kv['mod_revision']))

    def _compares(self, op) -> list[dict]:
        key = self._key(op.table, op.id)
        compares = []
        if isinstance(op, api.Delete):  # it must exist
            compares.append({'key': _b64(key), 'target': 'CREATE', 'result': 'GREATER',
                             'create_revision': 0})
        if op.expect == api.MUST_NOT_EXIST:
            compares.append({'key': _b64(key), 'target': 'CREATE', 'result': 'EQUAL',
                             'create_revision': 0})
        elif op.expect is not None:
            compares.append(_compare_mod(key, op.expect))
        return compares

    def _write(self, op) -> dict:
        key = self._key(op.table, op.id)
        if isinstance(op, api.Delete):
            return {'request_delete_range': {'key': _b64(key)}}
        return _put(key, json.dumps(op.value, separators=(',', ':')).encode())

    def _take_slot(self) -> _Slot:
        with self._lock:
            if self._free_slots:
                return self._free_slots.pop()
            return _Slot(self._prefix + b'sessions/' + uuid.uuid4().hex.encode())

    def _sent(self, slot: _Slot) -> None:
        if not slot.sent:
            slot.sent = True
            with self._lock:
                self._slot_keys.add(slot.key)

    def _give_slot(self, slot: _Slot) -> None:
        with self._lock:
            self._free_slots.append(slot)

    def close(self):
        """Stop the tail, remove the commit slots (best effort), close the connections."""
        with self._lock:
            tails, self._tails = list(self._tails.values()), {}
        for tail in tails:
            tail.stop()
        with self._lock:
            keys = sorted(self._slot_keys)
            self._slot_keys.clear()
            self._free_slots.clear()
        deadline = time.monotonic() + min(self.timeout, 1.0)
        for start in range(0, len(keys), MAX_OPERATIONS):
            txn = {'success': [{'request_delete_range': {'key': _b64(k)}}
                               for k in keys[start:start + MAX_OPERATIONS]]}
            try:
                self._request('kv/txn', txn, deadline)
            except (api.StoreError, ValueError):
                break
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.session.close()
        self._local = threading.local()


class _Tail:
    """The change log as it happens: every object event after ``lo``, kept in memory.

    etcd sends the events of a watch created on past revisions only from a loop that runs
    every 100 ms, and promptly only to watches that are up to date. So each process keeps one
    live watch on ``objects/`` (a thread) and answers changes() and wait() from it; changes()
    older than it keeps go to etcd's history (EtcdStore._history).
    """

    def __init__(self, store: EtcdStore, lo: int, now: Optional[int]):
        self.store = store
        self.lo = lo                # every object event in (lo, upto] is in ``events``
        self.upto = lo if now is None else max(lo, now)
        self.last = 0               # the revision of the last event seen
        self.revisions: list[int] = []
        self.events: list[api.Event] = []
        self.changed = threading.Condition()
        self._fresh = now is not None  # upto is etcd's revision now: watch from upto + 1
        self._reset = False
        self._stop = threading.Event()
        self._reply: list = []      # the open watch's HTTP reply, to interrupt it
        self._thread = threading.Thread(target=self._run, name='etcd-tail', daemon=True)
        self._thread.start()

    def read(self, after: int, until: int, base: int, limit: int,
             timeout: float) -> Optional[list[api.Event]]:
        """Changes after ``after``, once every event up to ``until`` is in; None if it
        does not keep them or cannot catch up in ``timeout`` (then it reconnects)."""
        with self.changed:
            if self.changed.wait_for(lambda: self.upto >= until, timeout):
                if after < self.lo and self.lo >= base:  # (nothing of ours is before base)
                    return None
                first = bisect.bisect_right(self.revisions, after)
                if len(self.events) - first <= limit:
                    return self.events[first:]
                end = bisect.bisect_right(self.revisions, self.revisions[first + limit - 1])
                return self.events[first:end]
        self.interrupt()
        return None

    def wait_past(self, after: int, end: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.last > after,
                                         max(end - time.monotonic(), 0))

    def interrupt(self) -> None:
        """Break the current watch: the thread reconnects (on the next endpoint)."""
        for reply in list(self._reply):
            _shutdown(reply)

    def stop(self) -> None:
        self._stop.set()
        self.interrupt()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._reset:
                    self._restart()
                self._follow()
            except _EtcdCompacted:
                self._reset = True  # resuming would skip compacted events: start afresh
            except Exception:  # (_Transient, Unavailable, ...): never let the thread die
                self._stop.wait(RETRY_PAUSE)

    def _restart(self) -> None:
        meta = self.store._meta(self.store._deadline())
        with self.changed:
            self.events, self.revisions = [], []
            self.lo = self.upto = meta.header
            self._fresh, self._reset = True, False
            self.changed.notify_all()

    def _follow(self) -> None:
        store = self.store
        if not self._fresh:
            meta = store._meta(store._deadline())
            if meta.rev <= self.upto:  # no commit since: we have everything up to now
                with self.changed:
                    self.upto = max(self.upto, meta.header)
                self._fresh = True
        # Resuming from the past, start one revision early (see EtcdStore._history).
        start = self.upto + 1 if self._fresh else max(self.upto, 1)
        self._fresh = False
        watch = {'key': _b64(store._objects), 'range_end': _b64(_prefix_end(store._objects)),
                 'start_revision': start}
        stream = store._watch(watch, TAIL_IDLE, self._reply)
        try:
            for result in stream:
                events = [e for e in store._events(result) if e.revision > self.upto]
                if events:
                    self._add(events)
                if self._stop.is_set():
                    return
        except _Timeout:
            pass  # idle: reconnect, checking the member still answers
        finally:
            stream.close()
            self._reply.clear()

    def _add(self, events: list[api.Event]) -> None:
        with self.changed:
            self.events += events
            self.revisions += [e.revision for e in events]
            self.upto = self.last = events[-1].revision
            if len(self.events) > 2 * TAIL_EVENTS:  # forget the oldest whole commits
                cut = len(self.events) - TAIL_EVENTS
                cut = bisect.bisect_right(self.revisions, self.revisions[cut - 1])
                self.lo = self.revisions[cut - 1]
                del self.events[:cut], self.revisions[:cut]
            self.changed.notify_all()


def _page(events: list[api.Event], limit: int) -> list[api.Event]:
    """The first ``limit`` events, and the rest of the commit the last of them is in."""
    if len(events) <= limit:
        return list(events)
    last = events[limit - 1].revision
    return [e for e in events if e.revision <= last]


def _shutdown(reply) -> None:
    """Shut an HTTP reply's socket down, waking a thread blocked reading it."""
    try:
        sock = socket.fromfd(reply.raw._fp.fileno(), socket.AF_INET, socket.SOCK_STREAM)
    except (AttributeError, OSError, ValueError):
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


class _Unsettled(Exception):
    """A commit's outcome could not be settled before the timeout."""


# --- helpers ---------------------------------------------------------------------------------

def _endpoint(text: str) -> tuple[str, int]:
    parsed = urlparse('//' + text)
    return parsed.hostname or '127.0.0.1', parsed.port or DEFAULT_PORT


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(data: str) -> bytes:
    return base64.b64decode(data)


def _table(table: str) -> bytes:
    return quote(table, safe='').encode()


def _prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix``."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _doc(kv: dict) -> dict:
    return json.loads(_unb64(kv.get('value', '')))


def _put(key: bytes, value: bytes) -> dict:
    return {'request_put': {'key': _b64(key), 'value': _b64(value)}}


def _range(key: bytes) -> dict:
    return {'request_range': {'key': _b64(key)}}


def _compare_mod(key: bytes, revision: int) -> dict:
    # A missing key compares as mod_revision 0.
    return {'key': _b64(key), 'target': 'MOD', 'result': 'EQUAL', 'mod_revision': revision}


def _kvs(response: dict) -> list[dict]:
    return response.get('response_range', {}).get('kvs', [])


def _mod(kvs: list[dict]) -> int:
    return int(kvs[0]['mod_revision']) if kvs else 0


def _conditioned(op) -> bool:
    return op.expect is not None or isinstance(op, api.Delete)


def _holds(op, actual: Optional[int]) -> bool:
    if isinstance(op, api.Delete) and actual is None:
        return False
    if op.expect is None:
        return True
    if op.expect == api.MUST_NOT_EXIST:
        return actual is None
    return actual == op.expect


def _expected(op) -> int:
    return -1 if op.expect is None else op.expect


def _watch_result(message: dict) -> dict:
    if 'error' in message:
        raise _Transient(f'watch: {message["error"]}')
    result = message.get('result', {})
    if int(result.get('compact_revision', 0)):
        raise _EtcdCompacted(result['compact_revision'])
    if result.get('canceled'):
        raise _Transient(f'watch cancelled: {result.get("cancel_reason", "")}')
    return result


def _is_read_timeout(error: Exception) -> bool:
    if isinstance(error, requests.exceptions.ReadTimeout):
        return True
    return any(isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in error.args)


# gRPC codes etcd answers with (through the gateway's JSON error body).
_INVALID_ARGUMENT, _NOT_FOUND, _OUT_OF_RANGE, _PERMISSION_DENIED, _UNAUTHENTICATED = \
    3, 5, 11, 7, 16


def _classify(error: Exception) -> Exception:
    """What a failed request means: raised here if final, returned if worth retrying."""
    detail = getattr(error, 'detail_text', None) or ''
    try:
        body = json.loads(detail) if detail.startswith('{') else {}
    except ValueError:
        body = {}
    code, message = body.get('code'), body.get('error') or detail or str(error)
    if _never_sent(error):
        return _Transient(f'{type(error).__name__}: {message}'[:500], sent=False)
    if code == _INVALID_ARGUMENT:
        raise ValueError(f'etcd refused the request: {message}')
    if code == _OUT_OF_RANGE and 'compacted' in message:
        raise _EtcdCompacted(message)
    if code == _NOT_FOUND and 'lease not found' in message:
        raise _LeaseGone(message)
    if code in (_PERMISSION_DENIED, _UNAUTHENTICATED):
        raise api.Unavailable(f'etcd: {message}')
    return _Transient(f'{type(error).__name__}: {message}'[:500])


def _never_sent(error: Exception) -> bool:
    """Whether a request failed before reaching etcd: the connection could not be made.

    etcd3gw replaces requests' errors by its own; the original is the context.
    """
    cause = error if isinstance(error, requests.RequestException) else error.__context__
    if isinstance(cause, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(cause, requests.exceptions.ConnectionError) and cause.args:
        reason = getattr(cause.args[0], 'reason', None)
        return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)  # (and refused)
    return False
