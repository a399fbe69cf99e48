"""The drivers the store conformance suite runs against.

Every test in tests/store that takes the ``store_url`` or ``store`` fixture runs once per entry
of ``STORE_FACTORIES``. A factory takes a private directory (pytest's ``tmp_path``) and returns
``(url, cleanup)``: the URL ``dragonflow.store.connect`` opens (multi-process tests hand it to
child processes) and a callable that stops whatever the factory started.

Adding a driver is one entry. The etcd and redis factories share one server per test session
(started on first use, stopped when the session ends) and give every test its own key prefix,
removed afterwards: a fresh, empty store without a server start per test.
"""
import base64
import uuid
from typing import Callable

import pytest
import redis
import requests

from dragonflow import store as nb

from . import servers
from .servers import free_port  # noqa: F401 - for tests that start their own servers

StoreFactory = Callable[..., tuple[str, Callable[[], None]]]

_shared: dict[str, servers.Server] = {}


def _server(name: str, start: Callable[[], servers.Server]) -> servers.Server:
    """The session's server of that kind, started on first use."""
    if name not in _shared:
        _shared[name] = start()
    return _shared[name]


@pytest.fixture(scope='session', autouse=True)
def _stop_shared_servers():
    yield
    while _shared:
        _shared.popitem()[1].stop()


def sqlite_store(tmp_path) -> tuple[str, Callable[[], None]]:
    """The embedded driver: one file, nothing to start or stop."""
    return f'sqlite://{tmp_path / "nb.sqlite"}', lambda: None


def etcd_store(tmp_path) -> tuple[str, Callable[[], None]]:
    """A fresh key prefix on the session's etcd server; the prefix is deleted afterwards."""
    port = _server('etcd', servers.start_etcd).port
    prefix = f'/test-{uuid.uuid4().hex}/'

    def cleanup():
        end = prefix[:-1] + '0'
        requests.post(f'http://127.0.0.1:{port}/v3/kv/deleterange',
                      json={'key': _b64(prefix), 'range_end': _b64(end)}, timeout=5)

    return f'etcd://127.0.0.1:{port}{prefix}', cleanup


def redis_store(tmp_path) -> tuple[str, Callable[[], None]]:
    """A fresh key prefix on the session's redis server; the database is flushed afterwards."""
    port = _server('redis', servers.start_redis).port

    def cleanup():
        client = redis.Redis(port=port, socket_timeout=5)
        client.flushdb()
        client.close()

    return f'redis://127.0.0.1:{port}/0?prefix=test-{uuid.uuid4().hex}', cleanup


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


STORE_FACTORIES: list[StoreFactory] = [sqlite_store, etcd_store, redis_store]


@pytest.fixture(params=STORE_FACTORIES, ids=lambda f: f.__name__.removesuffix('_store'))
def store_url(request, tmp_path):
    """The URL of a fresh, empty store of each driver."""
    url, cleanup = request.param(tmp_path)
    try:
        yield url
    finally:
        cleanup()


@pytest.fixture
def connect(store_url):
    """Open connections to the fixture's store; every one is closed after the test."""
    opened = []

    def open_store(**kwargs):
        opened.append(nb.connect(store_url, **kwargs))
        return opened[-1]

    yield open_store
    for store in opened:
        store.close()


@pytest.fixture
def store(connect):
    """A connection to a fresh, empty store of each driver."""
    return connect()
