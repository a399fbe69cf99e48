"""Packets that came over a tunnel for a port that may be about to be plugged on this chassis.

Another chassis sends a packet for a port that is bound nowhere yet to every chassis of the
port's network (and one for a port bound here to here), so the packet may arrive before this
chassis knows the port, or before the port's flows are in. remote_ingress sends a packet for
a MAC that is not a local port's to the controller instead of dropping it, and it waits here,
by network and MAC, until a pass has installed the flows of a port with that MAC; the
controller then sends it on. A packet that waits longer than ``seconds`` (the port was plugged
elsewhere, or not at all) is dropped, as the switch would have dropped it at once: by then the
sender's own retransmission is due. The switch's controller meter (500 packet-ins a second)
and that expiry bound what is held at any time to about 600 packets.
"""
import threading
import time
from collections import deque
from typing import Any, Hashable, Optional

PACKETS_PER_PORT = 16
PORTS = 1024  # destinations with packets held
SECONDS = 1.0


class HeldPackets:
    """Held packets by port (any key: the controller uses network and MAC), and how to send on
    packets for the ports whose flows are in.
    ``hold`` and ``plugged`` are atomic with each other, so a packet is either held and handed
    back by the next ``plugged`` that names its port, or handed back at once by ``hold``."""

    def __init__(self, seconds: float = SECONDS, per_port: int = PACKETS_PER_PORT,
                 ports: int = PORTS, clock=time.monotonic):
        self.seconds, self.per_port, self.ports, self.clock = seconds, per_port, ports, clock
        self._packets: dict[Hashable, deque] = {}
        self._plugged: dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    def hold(self, port_key: Hashable, data: bytes) -> Optional[Any]:
        """Hold ``data`` for the port, or, when the port's flows are in already, return how to
        send it on (as given to ``plugged``). A packet over the limits is dropped."""
        with self._lock:
            if port_key in self._plugged:
                return self._plugged[port_key]
            self._expire()
            queue = self._packets.get(port_key)
            if queue is None:
                if len(self._packets) >= self.ports:
                    return None
                queue = self._packets[port_key] = deque()
            if len(queue) < self.per_port:
                queue.append((self.clock(), data))
            return None

    def plugged(self, ports: dict[Hashable, Any]) -> list[tuple[Any, bytes]]:
        """The ports whose flows are in now, by key, each with how to send on its packets:
        the packets held for them that are still fresh, oldest first, each with that; they
        are no longer held."""
        with self._lock:
            self._plugged = dict(ports)
            self._expire()
            return [(self._plugged[key], data)
                    for key in self._plugged.keys() & self._packets.keys()
                    for _, data in self._packets.pop(key)]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(queue) for queue in self._packets.values())

    def _expire(self) -> None:
        oldest = self.clock() - self.seconds
        for key in list(self._packets):
            queue = self._packets[key]
            while queue and queue[0][0] < oldest:
                queue.popleft()
            if not queue:
                del self._packets[key]
