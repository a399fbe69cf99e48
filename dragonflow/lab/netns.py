"""Thin wrappers over ip(8) for namespaces and veths; every name carries the lab's prefix."""
import os
import signal
import subprocess
from typing import Optional


def run(*args, netns=None, check=True, timeout=30, capture=True) -> str:
    """Run a command (inside ``netns`` when given) and return its stdout."""
    cmd = (['ip', 'netns', 'exec', netns] if netns else []) + [str(a) for a in args]
    result = subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f'{" ".join(cmd)} failed ({result.returncode}): '
                           f'{(result.stderr or "").strip()}')
    return result.stdout if capture else ''


def add(name: str) -> None:
    run('ip', 'netns', 'add', name)
    run('ip', 'link', 'set', 'lo', 'up', netns=name)


def delete(name: str) -> None:
    """Remove a namespace and end what still runs in it: a process (a VM's server, say)
    outlives the name of its namespace, and would outlive the test that started it."""
    for pid in run('ip', 'netns', 'pids', name, check=False).split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    run('ip', 'netns', 'del', name, check=False)


def names(prefix: str) -> list[str]:
    out = run('ip', 'netns', 'list', check=False)
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def veth(name: str, netns: str, peer: str, peer_netns: str) -> None:
    """A veth pair with one end in each namespace, both up."""
    run('ip', 'link', 'add', name, 'netns', netns, 'type', 'veth', 'peer', 'name', peer,
        'netns', peer_netns)
    run('ip', 'link', 'set', name, 'up', netns=netns)
    run('ip', 'link', 'set', peer, 'up', netns=peer_netns)


class Machine:
    """What a machine that is a namespace (``self.name``) can do: the lab's VMs and the
    physical network's hosts."""
    name: str

    def exec(self, *args, check=True, timeout=30) -> str:
        return run(*args, netns=self.name, check=check, timeout=timeout)

    def popen(self, *args, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(['ip', 'netns', 'exec', self.name, *map(str, args)], **kwargs)

    def ping(self, ip: str, count: int = 1, timeout: float = 1.0, interval: float = 0.2) -> bool:
        result = subprocess.run(
            ['ip', 'netns', 'exec', self.name, 'ping', '-n', '-q', '-c', str(count),
             '-W', str(timeout), '-i', str(interval), ip], capture_output=True, timeout=60)
        return result.returncode == 0

    def ping_ttl(self, ip: str) -> Optional[int]:
        """The TTL of the first echo reply, or None."""
        out = self.exec('ping', '-n', '-c', '1', '-W', '1', ip, check=False)
        for word in out.split():
            if word.startswith('ttl='):
                return int(word[4:])
        return None
