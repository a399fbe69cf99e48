"""etcd and redis servers on loopback ports, each in its own temporary directory.

Used by the conformance suite's factories (one server per session per driver), by the etcd
cluster test and by bench/store.py. A server is stopped, and its directory removed, by stop();
``atexit`` stops whatever a crashed run left behind.
"""
import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Optional

import requests

START_TIMEOUT = 30.0
# Server directories go to a RAM file system when there is one: fsync there costs nothing, so
# the suite measures the drivers, not the disk. The benchmark may choose a disk instead.
FAST_TMP = '/dev/shm' if os.access('/dev/shm', os.W_OK) else None

_running: list['Server'] = []


def free_port() -> int:
    """A TCP port on the loopback interface nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class Server:
    """One server process and its directory."""

    def __init__(self, name: str, command: list[str], directory: str, port: int):
        self.name, self.command, self.directory, self.port = name, command, directory, port
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> 'Server':
        log = open(os.path.join(self.directory, f'{self.name}.log'), 'ab')
        try:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.directory,
                                         start_new_session=True)
        finally:
            log.close()
        _running.append(self)
        return self

    def kill(self) -> None:
        """Stop the process at once (SIGKILL), keeping its directory (a crash)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """Stop the process and remove its directory; safe to call twice."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self in _running:
            _running.remove(self)
        shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(os.path.join(self.directory, f'{self.name}.log'), 'rb') as f:
                return b''.join(f.readlines()[-lines:]).decode(errors='replace')
        except OSError:
            return ''

    def wait_ready(self, ready, timeout: float = START_TIMEOUT) -> None:
        """Poll ``ready()`` until it is true; fail with the log if the process died."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f'{self.name} exited with {self.proc.returncode}:\n'
                                   f'{self.log_tail()}')
            try:
                if ready():
                    return
            except Exception:  # not up yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f'{self.name} not ready after {timeout}s:\n'
                                   f'{self.log_tail()}')
            time.sleep(0.05)


def stop_all() -> None:
    for server in list(_running):
        server.stop()


atexit.register(stop_all)


# --- etcd --------------------------------------------------------------------------------------

def etcd_member(name: str, directory: str, client: int, peer: int, cluster: str,
                token: str, fast_elections: bool = False) -> Server:
    """An etcd member (not started) of ``cluster`` (``name=http://127.0.0.1:peer,...``)."""
    command = ['etcd', '--name', name, '--data-dir', os.path.join(directory, 'data'),
               '--listen-client-urls', f'http://127.0.0.1:{client}',
               '--advertise-client-urls', f'http://127.0.0.1:{client}',
               '--listen-peer-urls', f'http://127.0.0.1:{peer}',
               '--initial-advertise-peer-urls', f'http://127.0.0.1:{peer}',
               '--initial-cluster', cluster, '--initial-cluster-state', 'new',
               '--initial-cluster-token', token]
    if fast_elections:
        command += ['--heartbeat-interval', '50', '--election-timeout', '500']
    return Server(name, command, directory, client)


def etcd_ready(port: int) -> bool:
    """The member answers a linearizable read (so the cluster has a leader)."""
    reply = requests.post(f'http://127.0.0.1:{port}/v3/kv/range', json={'key': 'AA=='},
                          timeout=1)
    return reply.status_code == 200


def start_etcd(tmp: Optional[str] = FAST_TMP) -> Server:
    """A one-member etcd cluster."""
    directory = tempfile.mkdtemp(prefix='df-etcd-', dir=tmp)
    client, peer = free_port(), free_port()
    server = etcd_member('default', directory, client, peer,
                         f'default=http://127.0.0.1:{peer}', os.path.basename(directory)).start()
    try:
        server.wait_ready(lambda: etcd_ready(client))
    except BaseException:
        server.stop()
        raise
    return server


def start_etcd_cluster(size: int = 3, tmp: Optional[str] = FAST_TMP) -> list[Server]:
    """A ``size``-member etcd cluster with quick elections (heartbeat 50 ms, election 500 ms)."""
    ports = [(free_port(), free_port()) for _ in range(size)]
    cluster = ','.join(f'm{i}=http://127.0.0.1:{peer}' for i, (_, peer) in enumerate(ports))
    members, token = [], f'df-cluster-{ports[0][1]}'
    try:
        for i, (client, peer) in enumerate(ports):
            directory = tempfile.mkdtemp(prefix=f'df-etcd-m{i}-', dir=tmp)
            members.append(etcd_member(f'm{i}', directory, client, peer, cluster, token,
                                       fast_elections=True).start())
        for member in members:
            member.wait_ready(lambda port=member.port: etcd_ready(port))
    except BaseException:
        for member in members:
            member.stop()
        raise
    return members


# --- redis -------------------------------------------------------------------------------------

def start_redis(tmp: Optional[str] = FAST_TMP) -> Server:
    """A redis server without persistence."""
    import redis

    directory = tempfile.mkdtemp(prefix='df-redis-', dir=tmp)
    port = free_port()
    server = Server('redis', ['redis-server', '--port', str(port), '--bind', '127.0.0.1',
                              '--save', '', '--appendonly', 'no', '--dir', directory],
                    directory, port).start()
    try:
        server.wait_ready(lambda: redis.Redis(port=port, socket_timeout=1).ping())
    except BaseException:
        server.stop()
        raise
    return server
