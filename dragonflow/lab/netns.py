"""Thin wrappers over ip(8) for namespaces and veths; every name carries the lab's prefix."""
import os
import signal
import subprocess


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
