"""What only the redis driver does: lost replies, a trimmed stream, errors within the timeout."""
import time

import pytest
import redis
from redis.commands.core import Script

from dragonflow import store as nb
from dragonflow.store import api

from . import helpers
from .conftest import redis_store
from .servers import free_port

TIMEOUT = 0.5


@pytest.fixture
def url(tmp_path):
    url, cleanup = redis_store(tmp_path)
    try:
        yield url
    finally:
        cleanup()


@pytest.fixture
def store(url):
    store = nb.connect(url)
    yield store
    store.close()


def _raw(url: str) -> redis.Redis:
    return redis.Redis.from_url(url.split('?')[0])


@pytest.mark.parametrize('call', [
    lambda s: s.get('network', 'n1'),
    lambda s: s.list('network'),
    lambda s: s.snapshot(),
    lambda s: s.revision(),
    lambda s: s.put('network', 'n1', {}),
    lambda s: s.allocate_key('network'),
    lambda s: s.changes(0),
    lambda s: s.wait(0, 0.1),
    lambda s: s.compact(1),
], ids=['get', 'list', 'snapshot', 'revision', 'put', 'allocate_key', 'changes', 'wait',
        'compact'])
def test_no_server_is_unavailable_within_the_timeout(call):
    store = nb.connect(f'redis://127.0.0.1:{free_port()}/0', timeout=TIMEOUT)
    start = time.monotonic()
    with pytest.raises(api.Unavailable):
        call(store)
    assert time.monotonic() - start < TIMEOUT + 0.5
    store.close()


@pytest.mark.parametrize('send', [True, False], ids=['applied', 'never-arrived'])
def test_a_commit_whose_reply_is_lost_applies_exactly_once(store, monkeypatch, send):
    first = store.put('network', 'n1', {'v': 1})
    real, lost = Script.__call__, []

    def call(script, *args, **kwargs):
        if not lost and 'INCR' in script.script:
            lost.append(True)
            if send:
                real(script, *args, **kwargs)
            raise redis.ConnectionError('reply lost (test)')
        return real(script, *args, **kwargs)

    monkeypatch.setattr(Script, '__call__', call)
    revision = store.commit([api.Put('network', 'n1', {'v': 2}, expect=first),
                             api.Put('port', 'p1', {'v': 2}, expect=api.MUST_NOT_EXIST)])
    assert lost
    assert revision == first + 1
    assert store.get('network', 'n1') == api.Record('network', 'n1', {'v': 2}, revision)
    assert store.changes(first) == [api.Event(revision, 'network', 'n1', {'v': 2}),
                                    api.Event(revision, 'port', 'p1', {'v': 2})]


def test_a_stream_trimmed_by_someone_else_is_compacted(url, store):
    revisions = [store.put('network', f'n{i}', {'i': i}) for i in range(5)]
    assert revisions == [1, 2, 3, 4, 5], 'redis revisions are consecutive'
    _raw(url).xtrim(f'{url.split("prefix=")[1]}:log', maxlen=2, approximate=False)
    for after in [0, 1, 2]:
        with pytest.raises(api.Compacted) as raised:
            store.changes(after)
        assert raised.value.oldest == 3
    assert [e.revision for e in store.changes(3)] == [4, 5]


def test_prefixes_are_separate_stores(url, store):
    store.put('network', 'n1', {})
    other = nb.connect(url + '-other')
    assert other.snapshot() == (0, [])
    assert other.put('network', 'n1', {'other': True}) == 1
    assert store.get('network', 'n1').value == {}
    assert [r.id for r in store.snapshot()[1]] == ['n1']
    other.close()


def test_commit_slots_expire_and_are_removed_on_close(url):
    store = nb.connect(url)
    store.put('network', 'n1', {})
    prefix = url.split('prefix=')[1]
    raw = _raw(url)
    [slot] = raw.keys(f'{prefix}:slot:*')
    assert 0 < raw.ttl(slot) <= 3600
    store.close()
    assert raw.keys(f'{prefix}:slot:*') == []


def test_a_heartbeat_is_a_key_with_a_ttl_outside_the_log(url, store):
    prefix = url.split('prefix=')[1]
    raw = _raw(url)
    store.put('network', 'n1', {})
    store.heartbeat('c/1 ü', {'v': 1}, 2.5)
    assert 0 < raw.pttl(f'{prefix}:live:c/1 ü') <= 2500
    assert raw.xlen(f'{prefix}:log') == 1
    assert store.heartbeats() == {'c/1 ü': {'v': 1}}


def test_heartbeats_forget_expired_members(url, store):
    prefix = url.split('prefix=')[1]
    raw = _raw(url)
    store.heartbeat('gone', {}, 0.05)
    store.heartbeat('alive', {}, 30)
    helpers.until(lambda: store.heartbeats() == {'alive': {}})
    assert raw.smembers(f'{prefix}:live') == {b'alive'}
