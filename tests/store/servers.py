"""etcd and redis servers on loopback ports for the store tests and bench/store.py: the lab's
servers (dragonflow.lab.stores), stopped at exit whatever a crashed run left behind."""
import atexit
from typing import Optional

from dragonflow.lab import stores
from dragonflow.lab.stores import FAST_TMP, Server, free_port

__all__ = ['Server', 'free_port', 'start_etcd', 'start_etcd_cluster', 'start_redis', 'stop_all']
HOST = '127.0.0.1'
_running: list[Server] = []


def _started(servers: list[Server]) -> list[Server]:
    _running.extend(stores.start_all(servers))
    return servers


def start_etcd(tmp: Optional[str] = FAST_TMP) -> Server:
    """A one-member etcd cluster."""
    return _started(stores.etcd_members(HOST, 1, tmp=tmp))[0]


def start_etcd_cluster(size: int = 3, tmp: Optional[str] = FAST_TMP) -> list[Server]:
    """A ``size``-member etcd cluster with quick elections (heartbeat 50 ms, election 500 ms)."""
    return _started(stores.etcd_members(HOST, size, tmp=tmp))


def start_redis(tmp: Optional[str] = FAST_TMP) -> Server:
    """A redis server without persistence."""
    return _started([stores.redis_server(HOST, tmp=tmp)])[0]


def stop_all() -> None:
    while _running:
        _running.pop().stop()


atexit.register(stop_all)
