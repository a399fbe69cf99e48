"""What only the etcd driver does: endpoints, failover, lost replies, etcd's own compaction."""
import base64
import time

import pytest
import requests

from dragonflow import store as nb
from dragonflow.store import api, etcd

from .conftest import etcd_store
from .helpers import all_changes
from .servers import free_port

TIMEOUT = 0.5


@pytest.fixture
def url(tmp_path):
    url, cleanup = etcd_store(tmp_path)
    try:
        yield url
    finally:
        cleanup()


@pytest.fixture
def store(url):
    store = nb.connect(url)
    yield store
    store.close()


def _port(url: str) -> int:
    return int(url.split('//')[1].split('/')[0].split(':')[1])


@pytest.mark.parametrize('call', [
    lambda s: s.get('network', 'n1'),
    lambda s: s.list('network'),
    lambda s: s.snapshot(),
    lambda s: s.revision(),
    lambda s: s.put('network', 'n1', {}),
    lambda s: s.commit([api.Check('network', 'n1', api.MUST_NOT_EXIST)]),
    lambda s: s.allocate_key('network'),
    lambda s: s.changes(0),
    lambda s: s.wait(0, 0.1),
    lambda s: s.compact(1),
], ids=['get', 'list', 'snapshot', 'revision', 'put', 'check', 'allocate_key', 'changes',
        'wait', 'compact'])
def test_no_member_answering_is_unavailable_within_the_timeout(call):
    store = nb.connect(f'etcd://127.0.0.1:{free_port()},127.0.0.1:{free_port()}/x',
                       timeout=TIMEOUT)
    start = time.monotonic()
    with pytest.raises(api.Unavailable) as raised:
        call(store)
    assert time.monotonic() - start < TIMEOUT + 0.5
    assert 'unknown' not in str(raised.value), 'nothing was sent: nothing can have applied'
    store.close()


def test_a_dead_endpoint_is_skipped(url):
    port = _port(url)
    prefix = url.split(str(port), 1)[1]
    store = nb.connect(f'etcd://127.0.0.1:{free_port()},127.0.0.1:{port}{prefix}')
    revision = store.put('network', 'n1', {'v': 1})
    assert store.get('network', 'n1') == api.Record('network', 'n1', {'v': 1}, revision)
    assert store.changes(0) == [api.Event(revision, 'network', 'n1', {'v': 1})]
    store.close()


def test_prefixes_are_separate_stores(url, store):
    store.put('network', 'n1', {})
    other = nb.connect(url.rstrip('/') + '-other/')
    assert other.revision() == 0, 'a new prefix starts at 0 whatever etcd revision it is at'
    assert other.snapshot() == (0, [])
    assert other.changes(0) == []
    revision = other.put('network', 'n1', {'other': True})
    assert revision > store.revision()
    assert store.get('network', 'n1').value == {}
    other.close()


def _lose_replies(monkeypatch, send: bool, count: int = 1):
    """The next ``count`` transaction replies are lost: after (``send``) or before sending."""
    real = etcd.Etcd3Client.post
    lost = []

    def post(client, url, *args, **kwargs):
        if url.endswith('/kv/txn') and len(lost) < count:
            lost.append(url)
            if send:
                real(client, url, *args, **kwargs)
            raise etcd.etcd3gw_exceptions.ConnectionTimeoutError('reply lost (test)')
        return real(client, url, *args, **kwargs)

    monkeypatch.setattr(etcd.Etcd3Client, 'post', post)
    return lost


@pytest.mark.parametrize('send', [True, False], ids=['applied', 'never-arrived'])
def test_a_commit_whose_reply_is_lost_applies_exactly_once(store, monkeypatch, send):
    first = store.put('network', 'n1', {'v': 1})
    lost = _lose_replies(monkeypatch, send)
    revision = store.commit([api.Put('network', 'n1', {'v': 2}, expect=first),
                             api.Put('port', 'p1', {'v': 2}, expect=api.MUST_NOT_EXIST)])
    assert lost
    assert store.get('network', 'n1') == api.Record('network', 'n1', {'v': 2}, revision)
    assert store.changes(first) == [api.Event(revision, 'network', 'n1', {'v': 2}),
                                    api.Event(revision, 'port', 'p1', {'v': 2})]
    # The slot is in step again: the next commits go through at once.
    assert store.put('network', 'n2', {}) > revision


def test_a_commit_whose_outcome_stays_unknown_is_unavailable(url, monkeypatch):
    store = nb.connect(url, timeout=TIMEOUT)
    _lose_replies(monkeypatch, send=True, count=10**6)
    start = time.monotonic()
    with pytest.raises(api.Unavailable, match='unknown'):
        store.put('network', 'n1', {})
    assert time.monotonic() - start < TIMEOUT + 0.5
    monkeypatch.undo()
    # It did apply (once); a new slot carries the next commits.
    [record] = store.list('network')
    assert store.put('network', 'n2', {}) > record.revision
    store.close()


def _compact_etcd(url: str, revision: int) -> None:
    reply = requests.post(f'http://127.0.0.1:{_port(url)}/v3/kv/compaction',
                          json={'revision': revision}, timeout=5)
    assert reply.status_code == 200, reply.text


def test_history_etcd_compacted_by_itself_is_compacted(url, store):
    store.put('network', 'n1', {'v': 1})
    store.put('network', 'n2', {'v': 1})
    deleted = store.delete('network', 'n1')
    last = store.put('network', 'n3', {'v': 1})
    # etcd compacted at a revision with a delete keeps its puts but not its deletes: a
    # watcher after ``deleted - 1`` must hear Compacted, one after ``deleted`` must not.
    _compact_etcd(url, deleted)
    fresh = nb.connect(url)  # no tail of the log in memory: etcd's history is read
    for after in [0, deleted - 1]:
        with pytest.raises(api.Compacted):
            fresh.changes(after)
    assert fresh.changes(deleted) == [api.Event(last, 'network', 'n3', {'v': 1})]
    fresh.close()


def test_a_watcher_keeps_up_through_many_commits(url, store):
    """The tail serves pages of whole commits as the log grows past what one page holds."""
    watcher = nb.connect(url)
    assert watcher.changes(0) == []
    expected = []
    for i in range(60):
        revision = store.commit([api.Put('item', f'{i}-{j}', {'i': i}) for j in range(i % 5 + 1)])
        expected += [api.Event(revision, 'item', f'{i}-{j}', {'i': i}) for j in range(i % 5 + 1)]
    assert all_changes(watcher, 0, limit=7) == expected
    watcher.close()


def test_a_caught_up_watcher_is_served_by_its_tail(url, store, monkeypatch):
    """After wait(), new commits come from the live watch, not from etcd's (slow) history,
    even when etcd's revision moved past the last commit (other keys were written)."""
    last = store.put('network', 'n1', {})
    store.allocate_key('network')  # etcd's revision is now past ``last``
    watcher = nb.connect(url)
    assert watcher.changes(last) == []
    assert watcher.wait(last, 0.05) is False

    def slow_path(*args):
        raise AssertionError("read etcd's history")

    monkeypatch.setattr(etcd.EtcdStore, '_history', slow_path)
    revision = store.put('network', 'n2', {'v': 2})
    assert watcher.wait(last, 5.0) is True
    assert watcher.changes(last) == [api.Event(revision, 'network', 'n2', {'v': 2})]
    watcher.close()


def test_a_commit_too_big_for_one_etcd_transaction_is_refused(store):
    with pytest.raises(ValueError):
        store.commit([api.Put('item', str(i), {}) for i in range(etcd.MAX_OPERATIONS + 1)])
    assert store.revision() == 0
    revision = store.commit([api.Put('item', str(i), {}) for i in range(etcd.MAX_OPERATIONS)])
    assert len(store.changes(0)) == etcd.MAX_OPERATIONS
    assert store.revision() == revision


def test_keys_are_laid_out_under_the_prefix(url, store):
    store.put('network', 'n/1 ü', {'v': 1})
    store.allocate_key('network')
    prefix = url.split(str(_port(url)), 1)[1].encode()
    reply = requests.post(f'http://127.0.0.1:{_port(url)}/v3/kv/range',
                          json={'key': base64.b64encode(prefix).decode(),
                                'range_end': base64.b64encode(prefix[:-1] + b'0').decode(),
                                'keys_only': True}, timeout=5).json()
    keys = sorted(base64.b64decode(kv['key'])[len(prefix):] for kv in reply['kvs'])
    assert keys[:3] == [b'keys/network', b'meta/rev', 'objects/network/n/1 ü'.encode()]
    assert [k.split(b'/')[0] for k in keys[3:]] == [b'sessions']
    assert store.list('network')[0].id == 'n/1 ü'


def _etcd_revision(url: str) -> int:
    reply = requests.post(f'http://127.0.0.1:{_port(url)}/v3/kv/range',
                          json={'key': base64.b64encode(b'\0').decode()}, timeout=5).json()
    return int(reply['header']['revision'])


def test_a_heartbeat_repeating_its_value_writes_nothing(url, store):
    """A keepalive of its lease: no revision in etcd's history, whatever the change log."""
    store.heartbeat('c1', {'v': 1}, 30)
    before = _etcd_revision(url)
    for _ in range(5):
        store.heartbeat('c1', {'v': 1}, 30)
    assert _etcd_revision(url) == before
    store.heartbeat('c1', {'v': 2}, 30)
    assert _etcd_revision(url) == before + 1, 'a new value is one put'
    assert store.heartbeats() == {'c1': {'v': 2}}


def test_a_heartbeat_key_removed_under_its_lease_comes_back(url, store):
    store.heartbeat('c1', {'v': 1}, 30)
    prefix = url.split(str(_port(url)), 1)[1].encode()
    requests.post(f'http://127.0.0.1:{_port(url)}/v3/kv/deleterange',
                  json={'key': base64.b64encode(prefix + b'liveness/c1').decode()}, timeout=5)
    assert store.heartbeats() == {}
    store.heartbeat('c1', {'v': 1}, 30)
    assert store.heartbeats() == {'c1': {'v': 1}}


def test_a_heartbeat_key_is_outside_the_watched_objects(url, store):
    store.heartbeat('c/1 ü', {'v': 1}, 30)
    prefix = url.split(str(_port(url)), 1)[1].encode()
    reply = requests.post(f'http://127.0.0.1:{_port(url)}/v3/kv/range',
                          json={'key': base64.b64encode(prefix).decode(),
                                'range_end': base64.b64encode(prefix[:-1] + b'0').decode()},
                          timeout=5).json()
    [kv] = reply['kvs']
    assert base64.b64decode(kv['key']) == prefix + 'liveness/c%2F1%20%C3%BC'.encode()
    assert int(kv['lease']) > 0
    assert store.heartbeats() == {'c/1 ü': {'v': 1}}
