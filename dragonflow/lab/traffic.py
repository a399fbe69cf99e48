"""Steady traffic for fault tests: a ping every 10 ms whose replies are timed as they come,
so a test can say how long the traffic stopped (the longest gap between two replies)."""
import re
import signal
import subprocess
import sys
import threading
from typing import Optional

# ping -D: "[1733130000.123456] 64 bytes from 203.0.113.10: icmp_seq=5 ttl=62 time=0.5 ms"
_REPLY = re.compile(r'^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)')


class Pinger:
    """A ping at ``interval`` from a machine (a VM or host), running until stopped:
    ``replies`` counts the echo replies as they come, ``reply_times`` has each one's arrival
    (the system clock's, as ping -D prints it) and sequence number; ``stop`` ends it (SIGINT,
    as a person would) and returns the (transmitted, received) of its summary."""

    def __init__(self, machine, ip: str, interval: float = 0.01):
        self.interval = interval
        self.process = machine.popen('ping', '-n', '-D', '-i', str(interval), ip,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.replies, self.lines = 0, []
        self.reply_times: list[tuple[float, int]] = []  # (arrival, icmp_seq)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            reply = _REPLY.match(line)
            if reply:
                self.reply_times.append((float(reply[1]), int(reply[2])))
                self.replies += 1

    def last_reply(self) -> Optional[float]:
        return self.reply_times[-1][0] if self.reply_times else None

    def longest_gap(self, since: float = 0.0) -> float:
        """Seconds of the longest silence between two successive replies, the later one
        after ``since`` (the system clock, time.time()): how long the traffic stopped."""
        times = [at for at, _ in self.reply_times]
        gaps = (b - a for a, b in zip(times[:-1], times[1:], strict=True) if b >= since)
        return max(gaps, default=0.0)

    def gap_end(self, since: float = 0.0) -> float:
        """When the reply that ended the longest gap (``longest_gap``) came."""
        times = [at for at, _ in self.reply_times]
        ends = [(b - a, b) for a, b in zip(times[:-1], times[1:], strict=True) if b >= since]
        return max(ends, default=(0.0, 0.0))[1]

    def replies_since(self, since: float) -> int:
        return sum(at >= since for at, _ in self.reply_times)

    def lost(self) -> int:
        """Echo requests without a reply among those up to the last answered."""
        if not self.reply_times:
            return 0
        return self.reply_times[-1][1] - self.reply_times[0][1] + 1 - len(self.reply_times)

    def stop(self) -> tuple[int, int]:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(10)
        self._reader.join(10)
        for line in self.lines:
            found = re.search(r'(\d+) packets transmitted, (\d+) received', line)
            if found:
                return int(found[1]), int(found[2])
        raise AssertionError('no ping summary:\n' + ''.join(self.lines[-5:]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


# Answers each TCP connection with the source address it came from, then closes it.
_PEER_SERVER = '''
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
while True:
    c, peer = s.accept()
    c.sendall(peer[0].encode())
    c.close()
'''
_PEER_ASK = '''
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print(s.recv(100).decode() or "-")
except OSError:
    print("-")
'''
PEER_PORT = 8000


class PeerServer:
    """A TCP server on a machine (the internet host, say) that tells each client the source
    address it saw: what the outside makes of a VM behind NAT. A with-block runs it."""

    def __init__(self, machine, port: int = PEER_PORT):
        self.machine, self.port = machine, port

    def __enter__(self):
        from dragonflow.lab.cloud import wait_for
        self.process = self.machine.popen(sys.executable, '-c', _PEER_SERVER, str(self.port))
        wait_for(lambda: f':{self.port} ' in self.machine.exec('ss', '-ltnH'), 5,
                 what='the peer address server listening')
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait(10)


def seen_as(machine, address: str, timeout: float = 2.0, port: int = PEER_PORT) -> str:
    """The source address a PeerServer at ``address`` saw for a new TCP connection from
    ``machine``; '-' if none was made."""
    return machine.exec(sys.executable, '-c', _PEER_ASK, address, str(port),
                        str(timeout)).strip()
