"""The drivers the store conformance suite runs against.

Every test in tests/store that takes the ``store_url`` or ``store`` fixture runs once per entry
of ``STORE_FACTORIES``. A factory takes a private directory (pytest's ``tmp_path``) and returns
``(url, cleanup)``: the URL ``dragonflow.store.connect`` opens (multi-process tests hand it to
child processes) and a callable that stops whatever the factory started.

Adding a driver is one entry. For etcd, for example::

    def etcd_store(tmp_path):
        client, peer = free_port(), free_port()
        proc = subprocess.Popen(['etcd', '--data-dir', str(tmp_path / 'etcd'),
                                 '--listen-client-urls', f'http://127.0.0.1:{client}', ...])
        wait_for_port(client)
        return f'etcd://127.0.0.1:{client}', lambda: stop(proc)
"""
import socket
from typing import Callable

import pytest

from dragonflow import store as nb

StoreFactory = Callable[..., tuple[str, Callable[[], None]]]


def free_port() -> int:
    """A TCP port on the loopback interface nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def sqlite_store(tmp_path) -> tuple[str, Callable[[], None]]:
    """The embedded driver: one file, nothing to start or stop."""
    return f'sqlite://{tmp_path / "nb.sqlite"}', lambda: None


STORE_FACTORIES: list[StoreFactory] = [sqlite_store]


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
