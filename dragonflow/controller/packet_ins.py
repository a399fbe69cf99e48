"""What the controller does with the packets br-int sends it, by the table that sent them:
DHCP requests of local ports (22), answered in a thread of their own, each port within a rate
limit; packets from tunnels for a port about to be plugged here (35), held until a pass has
installed its flows (held_packets.py), then sent on right behind the bundle that lets them
through; the external gateways' ARP replies to a local floating IP (36), learnt by
neighbours.py; and packets too big for a router's external network (pipeline.TOO_BIG_TABLES),
answered "fragmentation needed" (frag_needed.py) in the DHCP thread, each router within a
rate limit checked before they queue, so a flood of them neither holds os-ken's receiving
thread nor crowds DHCP out of the backlog."""
import logging
import queue
import threading
import time
from typing import Callable, Optional

from dragonflow.controller import flows as of
from dragonflow.controller import frag_needed
from dragonflow.controller import pipeline as p
from dragonflow.controller.apps import dhcp, tunnels
from dragonflow.controller.held_packets import HeldPackets
from dragonflow.controller.openflow import PacketIn, SwitchError
from dragonflow.controller.topology import Topology

LOG = logging.getLogger(__name__)
BACKLOG = 1000
# Fragmentation-needed answers a second per router: a sender's path MTU is set by the first
# (Linux keeps it 10 minutes), the rest of a burst sent before it arrived need none.
FRAG_NEEDED_RATE = 10.0


class RateLimiter:
    """A token bucket per key: ``rate`` per second, bursts of up to ``rate``."""

    def __init__(self, rate: float, clock=time.monotonic):
        self.rate, self.clock = rate, clock
        self._buckets: dict = {}

    def allow(self, key) -> bool:
        now = self.clock()
        tokens, last = self._buckets.get(key, (self.rate, now))
        tokens = min(self.rate, tokens + (now - last) * self.rate)
        allowed = tokens >= 1
        self._buckets[key] = (tokens - 1 if allowed else tokens, now)
        return allowed


class PacketIns:
    def __init__(self, switch, settings: dhcp.Settings, dhcp_rate: float,
                 stop: threading.Event, topology: Callable[[], Optional[Topology]],
                 neighbours=None, frag_needed_rate: float = FRAG_NEEDED_RATE, clock=time.monotonic):
        """``topology``: the last one whose flows were sent, or None before the first.
        ``neighbours``: what learns the external gateways' MACs (neighbours.Neighbours)."""
        self.switch, self.settings, self.stop, self.topology = switch, settings, stop, topology
        self.neighbours = neighbours
        self._queue: queue.Queue = queue.Queue(BACKLOG)
        self._held = HeldPackets()
        self._dhcp_limiter = RateLimiter(dhcp_rate, clock)
        self._frag_needed_limiter = RateLimiter(frag_needed_rate, clock)

    def packet_in(self, packet_in: PacketIn) -> None:
        """From os-ken's receiving thread. A packet from a tunnel is held (or sent on) at once:
        a VM's first packets wait on it. A DHCP request queues for the DHCP thread; a full
        backlog drops it (the client retries)."""
        if packet_in.table == p.REMOTE_INGRESS.number:
            _handle(self._hold, packet_in)
            return
        if packet_in.table == p.PROVIDER_INGRESS.number:  # a few a minute: learnt at once
            if self.neighbours is not None:
                _handle(lambda packet: self.neighbours.learn(packet.data), packet_in)
            return
        if packet_in.table in frag_needed.TOO_BIG_TABLES and not (
                frag_needed.wants_answer(packet_in.data) and
                self._frag_needed_limiter.allow(_router_key(packet_in))):
            return
        try:
            self._queue.put_nowait(packet_in)
        except queue.Full:
            LOG.warning('packet-in backlog full: dropped a packet from port %d',
                        packet_in.in_port)

    def serve_dhcp_forever(self) -> None:
        """DHCP requests from local ports, and packets too big for a router's way out."""
        while not self.stop.is_set():
            try:
                packet_in = self._queue.get(timeout=1.0)
            except queue.Empty:
                continue
            self._serve(packet_in)

    def serve_queued(self) -> None:
        """What is queued now, in the caller's thread (a test's)."""
        while True:
            try:
                packet_in = self._queue.get_nowait()
            except queue.Empty:
                return
            self._serve(packet_in)

    def _serve(self, packet_in: PacketIn) -> None:
        if packet_in.table == p.DHCP.number:
            _handle(self._answer_dhcp, packet_in)
        elif packet_in.table in frag_needed.TOO_BIG_TABLES:
            _handle(self._answer_too_big, packet_in)

    def _answer_too_big(self, packet_in: PacketIn) -> None:
        """Fragmentation needed, from the router whose way out the packet took."""
        topology = self.topology()
        reply = frag_needed.answer(topology, _router_key(packet_in), packet_in.data) \
            if topology else None
        if reply:
            self.switch.send_packets([reply])

    def _answer_dhcp(self, packet_in: PacketIn) -> None:
        """Each port within its rate limit."""
        topology = self.topology()
        port = topology.port_at(packet_in.in_port) if topology else None
        if port is None or not self._dhcp_limiter.allow(port.id):
            return
        reply = dhcp.answer(topology, port, packet_in.data, self.settings)
        if reply:
            self.switch.send_packets([([of.Output(packet_in.in_port)], reply)])

    def _hold(self, packet_in: PacketIn) -> None:
        """Held by network (the flow's cookie) and destination MAC."""
        destination = ':'.join(f'{byte:02x}' for byte in packet_in.data[:6])
        key = (packet_in.cookie & of.COOKIE_OBJECT_MASK, destination)
        actions = self._held.hold(key, packet_in.data)
        if actions:  # its port's flows came in meanwhile
            self.switch.send_packets([(actions, packet_in.data)])

    def release_held(self, topology: Topology) -> None:
        """Send on what was held for the ports whose flows a pass has just sent. A failure
        here loses these packets, not the pass."""
        plugged = {}
        for port, _ in topology.local_ports():
            network = topology.network_of(port)
            plugged[network.key, port.mac_address] = tunnels.release_actions(network, port)
        try:
            released = self._held.plugged(plugged)
            if released:
                self.switch.send_packets(released)
        except Exception:  # noqa: BLE001 - see above
            LOG.exception('cannot send on the packets held for ports plugged here')


def _router_key(packet_in: PacketIn) -> int:
    """The router whose way out sent it: its reg5 (the too-big flows' cookie names it too)."""
    return packet_in.match.get(p.ROUTER_REG) or packet_in.cookie & of.COOKIE_OBJECT_MASK


def _handle(handler, packet_in: PacketIn) -> None:
    try:
        handler(packet_in)
    except SwitchError as e:
        LOG.warning('cannot send a packet: %s', e)
    except Exception:  # noqa: BLE001 - one bad packet must not stop the service
        LOG.exception('cannot handle a packet from port %d (table %d)',
                      packet_in.in_port, packet_in.table)
