"""Northbound store: the contract (api) and one driver per module."""
from urllib.parse import urlparse

from dragonflow.store import api


def connect(url: str, timeout: float = 5.0) -> api.Store:
    """Open the store named by ``url``.

    sqlite:///path, etcd://host:port[,host:port...][/prefix],
    redis://host:port[/db][?prefix=name].
    """
    scheme = urlparse(url).scheme
    if scheme == 'sqlite':
        from dragonflow.store.sqlite import SqliteStore
        return SqliteStore(url[len('sqlite://'):], timeout=timeout)
    if scheme == 'etcd':
        from dragonflow.store.etcd import EtcdStore
        return EtcdStore.from_url(url, timeout=timeout)
    if scheme == 'redis':
        from dragonflow.store.redis import RedisStore
        return RedisStore.from_url(url, timeout=timeout)
    raise ValueError(f'unknown store URL scheme {scheme!r} in {url!r} '
                     '(expected sqlite://, etcd:// or redis://)')
