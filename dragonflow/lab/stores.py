"""etcd and redis servers for a lab cloud, each in its own directory, optionally inside a
network namespace and listening on a given address (the cloud's management network)."""
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
# fsync on a RAM file system costs nothing: the lab measures Dragonflow, not the disk.
FAST_TMP = '/dev/shm' if os.access('/dev/shm', os.W_OK) else None


def free_port(host: str = '127.0.0.1') -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Server:
    """One server process and its directory; restartable, for outage tests."""

    def __init__(self, name: str, command: list[str], directory: str, host: str, port: int,
                 ready, netns: Optional[str] = None):
        self.name, self.directory, self.host, self.port = name, directory, host, port
        self.command = (['ip', 'netns', 'exec', netns] if netns else []) + command
        self.ready = ready
        self.proc: Optional[subprocess.Popen] = None

    @property
    def address(self) -> str:
        return f'{self.host}:{self.port}'

    def start(self, wait: bool = True) -> 'Server':
        with open(os.path.join(self.directory, f'{self.name}.log'), 'ab') as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.directory,
                                         start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def kill(self) -> None:
        """Stop at once (SIGKILL), keeping the data: a crash, or an outage to end later."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def freeze(self) -> None:
        """Hang (SIGSTOP): connections stay open and nothing answers, until ``thaw``."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop and remove the directory; safe to call twice."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen server would not see SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f'{self.name} exited with {self.proc.returncode}:\n'
                                   f'{self.log_tail()}')
            try:
                if self.ready():
                    return
            except Exception:  # noqa: BLE001 - not answering yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f'{self.name} not ready after {timeout} s:\n'
                                   f'{self.log_tail()}')
            time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(os.path.join(self.directory, f'{self.name}.log'), 'rb') as f:
                return b''.join(f.readlines()[-lines:]).decode(errors='replace')
        except OSError:
            return ''


def etcd_members(host: str, size: int = 1, netns: Optional[str] = None,
                 ports: Optional[list[tuple[int, int]]] = None,
                 tmp: Optional[str] = FAST_TMP) -> list[Server]:
    """An etcd cluster of ``size`` members (not started); (client, peer) ports per member;
    their directories under ``tmp``."""
    ports = ports or [(free_port(), free_port()) for _ in range(size)]
    cluster = ','.join(f'm{i}=http://{host}:{peer}' for i, (_, peer) in enumerate(ports))
    token = f'df-{ports[0][1]}'
    members = []
    for i, (client, peer) in enumerate(ports):
        directory = tempfile.mkdtemp(prefix=f'df-etcd-m{i}-', dir=tmp)
        command = ['etcd', '--name', f'm{i}', '--data-dir', os.path.join(directory, 'data'),
                   '--listen-client-urls', f'http://{host}:{client}',
                   '--advertise-client-urls', f'http://{host}:{client}',
                   '--listen-peer-urls', f'http://{host}:{peer}',
                   '--initial-advertise-peer-urls', f'http://{host}:{peer}',
                   '--initial-cluster', cluster, '--initial-cluster-state', 'new',
                   '--initial-cluster-token', token,
                   '--heartbeat-interval', '50', '--election-timeout', '500']
        members.append(Server(f'etcd-m{i}', command, directory, host, client,
                              lambda c=client: _etcd_ready(host, c), netns))
    return members


def _etcd_ready(host: str, port: int) -> bool:
    """A linearizable read succeeds: the cluster has a leader."""
    reply = requests.post(f'http://{host}:{port}/v3/kv/range', json={'key': 'AA=='}, timeout=1)
    return reply.status_code == 200


def redis_server(host: str, netns: Optional[str] = None, port: Optional[int] = None,
                 tmp: Optional[str] = FAST_TMP, durable: bool = False) -> Server:
    """A redis server (not started); ``durable``: every write is in its append-only file
    before it is acknowledged, so a killed server restarts with everything."""
    import redis

    port = port or free_port()
    directory = tempfile.mkdtemp(prefix='df-redis-', dir=tmp)
    # Not protected mode: it refuses every address but loopback, and the cloud's stores
    # listen on the management network (reachable only from the cloud's namespaces).
    command = ['redis-server', '--port', str(port), '--bind', host, '--protected-mode', 'no',
               '--save', '', '--dir', directory, '--appendonly', 'yes' if durable else 'no',
               '--appendfsync', 'always']
    return Server('redis', command, directory, host, port,
                  lambda: redis.Redis(host=host, port=port, socket_timeout=1).ping(), netns)


def start_all(servers: list[Server]) -> list[Server]:
    """Start every server, then wait for each (cluster members need each other to be ready)."""
    try:
        for server in servers:
            server.start(wait=False)
        for server in servers:
            server.wait_ready()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers
