"""The neighbours of this chassis on external networks, in a thread of its own: the MAC of each
external subnet's gateway, learnt by ARP, and the gratuitous ARPs that tell the physical
network where a floating IP, or a router's gateway address, now is.

The addresses this chassis answers for on external networks are its *sources*: the local
floating IPs, the gateway addresses of the routers whose gateway it holds, and its own
addresses of routers in distributed SNAT mode (Topology.local_gateways). No MAC is
configured: for every external subnet a source is on, the controller asks the gateway (an
ARP request sent from that source's address and MAC straight out of the physnet's patch
port), at once when one is newly needed, again every [l3] external_gateway_refresh seconds
(sooner while unanswered). provider_ingress sends the gateway's ARP replies to that MAC to
the controller (packet_ins.py), and ``learn`` keeps the sender's MAC, for the external
network of the source it answered (two external networks may well both have their gateway
at 192.168.0.1). ``macs()`` is Topology.gateway_macs, by (external network id, gateway IP):
the flow loop is woken when it changes, and only then have floating_ips and snat a flow out
to the gateway. A MAC is kept while it is needed, unanswered refreshes included (the gateway
may be busy; a stale MAC is corrected by the next answer), and forgotten when no source uses
its subnet any more.

A router whose gateway this chassis stands by for (Topology.standby_gateways: it could hold
it, a live peer ahead does) has its SNAT installed here beforehand (snat.py), so it needs the
upstream MAC before it takes over; but nothing may go out from the gateway address or MAC
(the holder's traffic would follow). Its gateway is asked by an ARP probe (RFC 5227: sender
address 0.0.0.0, from this chassis' router MAC): the gateway answers to the router MAC, from
its address, and that reply is learnt as any. No gratuitous ARP while standing by.

When a source becomes local (a floating IP associated with a port plugged here, its port
moved here, a router's gateway taken over from a chassis that died, a distributed address
new here, or this controller started), once br-int has its flows, three gratuitous ARP
requests go out spaced apart, from its address and MAC: the physical network's switches
learn the MAC on this chassis' port, and the gateway, if it had the address, refreshes its
entry. A router's gateway is announced so on each flat or VLAN network behind the router too
(tagged for it; also when such a network joins the router later, or another gateway chassis
of the router comes alive: it may have held the gateway too while it saw none alive), and
again every refresh period while held: the router's VMs there on other chassis send their
traffic out to the gateway MAC over that network (snat.py), and its switches must learn the
new gateway chassis' port for it on that VLAN, and keep it (nothing else comes from that MAC
there). A gratuitous ARP still due when its source stops being local is not sent: the new
holder's may have gone out already, and it would take the MAC back. Our chassis drop these
frames there (snat.py), and a machine on that network ignores an ARP for an address on none
of its subnets.

A controller restarted knows no MAC yet, while br-int still has the flows out it made with
them: until learnt again, ``macs()`` takes them from those flows (``installed``:
fip_to_external's and snat_to_external's), so the restart sends nothing different to br-int.
"""
import dataclasses
import heapq
import itertools
import logging
import struct
import threading
import time
from typing import Callable, Optional

from dragonflow.controller import flows as of
from dragonflow.controller import pipeline as p
from dragonflow.controller.openflow import SwitchError
from dragonflow.controller.topology import LocalFloatingIP, LocalGateway, Topology
from dragonflow.model import Port, Subnet
from dragonflow.model.objects import (
    DEVICE_OWNER_CHASSIS_SNAT,
    DEVICE_OWNER_FLOATINGIP,
    DEVICE_OWNER_ROUTER_GATEWAY,
)

LOG = logging.getLogger(__name__)
GARPS = 3
GARP_SPACING = 0.3  # seconds between the gratuitous ARPs of one source
UNANSWERED_RETRY = 1.0  # seconds before asking again a gateway that has not answered
BROADCAST = b'\xff' * 6
ETH_TYPE_ARP, ETH_TYPE_VLAN = 0x0806, 0x8100
PROBE_SENDER_IP = '0.0.0.0'  # an ARP probe's (RFC 5227): it claims no address
ARP_HEADER = struct.Struct('!HHBBH6s4s6s4s')  # htype, ptype, hlen, plen, op, sha, spa, tha, tpa
# The ports whose MAC is in the flows out (their cookie's object): what a source holds.
SOURCE_OWNERS = frozenset({DEVICE_OWNER_FLOATINGIP, DEVICE_OWNER_ROUTER_GATEWAY,
                           DEVICE_OWNER_CHASSIS_SNAT})


@dataclasses.dataclass(frozen=True)
class Source:
    """Where an ARP for an external subnet goes out from: an address this chassis answers
    for on it (a local floating IP, a router's gateway or distributed address)."""
    ofport: int               # br-int's patch port to the external network's physnet
    vlan: Optional[int]       # the VLAN id of a VLAN external network
    ip: str
    mac: str

    @classmethod
    def of(cls, holder: LocalFloatingIP | LocalGateway, topology: Topology) -> 'Source':
        return cls.on(holder.external_network, holder, topology)

    @classmethod
    def on(cls, network, holder: LocalFloatingIP | LocalGateway,
           topology: Topology) -> 'Source':
        """The holder's address and MAC on ``network`` (its physnet patched here)."""
        return cls(topology.patch_ofports[network.physical_network],
                   network.segmentation_id if network.network_type == 'vlan' else None,
                   holder.address, holder.mac)


class Neighbours:
    def __init__(self, switch, refresh: float, stop: threading.Event,
                 wake_loop: Callable[[], None], installed: Callable[[], dict] = dict,
                 cache=None, clock: Callable[[], float] = time.monotonic):
        """``installed``: br-int's flows as the reconciler last read or sent them; with the
        ``cache``, what a restarted controller takes the MACs from until learnt."""
        self.switch, self.refresh, self.stop, self.wake_loop = switch, refresh, stop, wake_loop
        self.installed, self.cache, self.clock = installed, cache, clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        # By gateway: (external network id, gateway IP).
        self._learnt: dict[tuple, str] = {}       # its MAC
        self._unneeded: dict[tuple, float] = {}   # since when no source needs it
        self._sources: dict[tuple, Source] = {}  # where to ask it from
        self._ask_at: dict[tuple, float] = {}    # when to ask it next
        self._networks: dict[str, set] = {}      # a source's MAC -> its external networks
        self._local: set = set()                 # the sources confirmed local (_identity)
        self._garps: list = []                 # heap of (when, n, identity, Source)
        # The announcements repeated while local (a gateway's on the networks behind its
        # router): identity -> [when next, Source].
        self._repeated: dict[tuple, list] = {}
        self._order = itertools.count()
        self._remembered: Optional[dict] = None  # gateway -> MAC from br-int's flows

    # From the flow loop: building a topology, and its flows confirmed.
    def macs(self) -> dict[tuple, str]:
        """Each needed (or lately needed) gateway's MAC: learnt, or else as br-int's flows
        out have it (read once, at the first call: the loop's first pass, br-int read back
        and the cache loaded). Not called with the cache's lock held."""
        with self._lock:
            if self._remembered is None:
                self._remembered = self._from_installed()
            return {**self._remembered, **self._learnt}

    def confirmed(self, topology: Topology) -> None:
        """br-int has the flows of ``topology``: ask for the gateways newly needed, announce
        the sources newly local, forget the gateways no longer needed."""
        now = self.clock()
        sources, local, announce, networks, repeated = {}, set(), [], {}, {}
        for holder in [*topology.local_floating_ips(), *topology.local_gateways()]:
            if holder.external_network.physical_network not in topology.patch_ofports:
                continue
            source = Source.of(holder, topology)
            sources.setdefault(holder.gateway, source)
            networks.setdefault(holder.mac, set()).add(holder.external_network.id)
            for identity, announced, repeat in _announcements(holder, source, topology):
                local.add(identity)
                if identity not in self._local:
                    announce.append((identity, announced))
                if repeat:
                    repeated[identity] = self._repeated.get(identity) or \
                        [now + self.refresh, announced]
        # The routers this chassis stands by for: their upstream gateway asked beforehand,
        # by an ARP probe from the router MAC, never from their address (its holder's).
        for standby in topology.standby_gateways():
            network = standby.external_network
            if network.physical_network not in topology.patch_ofports or \
                    topology.router_mac is None:
                continue
            sources.setdefault(standby.gateway, dataclasses.replace(
                Source.on(network, standby, topology), ip=PROBE_SENDER_IP,
                mac=topology.router_mac))
            networks.setdefault(topology.router_mac, set()).add(network.id)
        with self._lock:
            for gone in self._sources.keys() - sources.keys():
                self._ask_at.pop(gone, None)
                self._unneeded.setdefault(gone, now)
            # A MAC no longer needed is kept for a refresh period: a floating IP associated
            # again (a move, a swap) has its way out at once, asked again meanwhile.
            for gateway in sources.keys() & self._unneeded.keys():
                del self._unneeded[gateway]
            for gateway, since in list(self._unneeded.items()):
                if now - since >= self.refresh:
                    self._learnt.pop(gateway, None)
                    del self._unneeded[gateway]
            for gone in (self._remembered or {}).keys() - sources.keys():
                del self._remembered[gone]
            for ip in sources.keys() - self._sources.keys():
                self._ask_at[ip] = now
            # Asked from another source now (a standby's probe unanswered, the gateway
            # taken over): at once, from the new one.
            for ip, source in sources.items():
                if ip in self._sources and self._sources[ip] != source and \
                        ip not in self._learnt:
                    self._ask_at[ip] = now
            self._sources = sources
            self._networks = networks
            self._local = local
            self._repeated = repeated
            for identity, source in announce:
                for n in range(GARPS):
                    heapq.heappush(self._garps, (now + n * GARP_SPACING, next(self._order),
                                                 identity, source))
        if announce or set(sources) - set(self._learnt):
            self._wake.set()

    # From os-ken's receiving thread (packet_ins.py).
    def learn(self, data: bytes) -> None:
        """An ARP reply provider_ingress sent up: the sender's MAC, if it is a gateway we
        ask, on the external network of the source it is addressed to. A change wakes the
        flow loop."""
        parsed = parse_arp(data)
        if parsed is None:
            return
        op, sender_mac, sender_ip = parsed
        to_mac = ':'.join(f'{b:02x}' for b in data[:6])
        with self._lock:
            # The router MAC asks for every external network its standbys are on: the
            # reply (its tag popped) is the gateway of each of those with that address.
            gateways = [(network, sender_ip) for network in self._networks.get(to_mac, ())
                        if (network, sender_ip) in self._sources]
            if op != 2 or not gateways:
                return
            changed = [g for g in gateways if self._learnt.get(g) != sender_mac]
            for gateway in gateways:
                self._learnt[gateway] = sender_mac
                self._ask_at[gateway] = self.clock() + self.refresh
        for gateway in changed:
            LOG.info('external gateway %s of network %s is at %s', sender_ip, gateway[0],
                     sender_mac)
        if changed:
            self.wake_loop()

    # The thread.
    def run(self) -> None:
        while not self.stop.is_set():
            self._wake.wait(timeout=self._seconds_to_next())
            self._wake.clear()
            try:
                self.send_due()
            except SwitchError as e:  # not connected: due again in a while
                LOG.warning('cannot send ARP to the external networks: %s', e)
                self.stop.wait(UNANSWERED_RETRY)

    def send_due(self) -> None:
        """Send the ARPs due now; a failed send leaves them due."""
        now = self.clock()
        with self._lock:
            garps = []
            while self._garps and self._garps[0][0] <= now:
                garp = heapq.heappop(self._garps)
                # Not for a source no longer local: its new holder's announcements may have
                # gone out already, and this one would take the MAC back to us.
                if garp[2] in self._local:
                    garps.append(garp)
            for identity, repeat in self._repeated.items():
                if repeat[0] <= now:
                    garps.append((now, next(self._order), identity, repeat[1]))
                    repeat[0] = now + self.refresh
            asks = [(gateway, self._sources[gateway]) for gateway, at in self._ask_at.items()
                    if at <= now]
        packets = [_out(source, gratuitous_arp(source)) for _, _, _, source in garps]
        packets += [_out(source, arp_request(source, ip)) for (_, ip), source in asks]
        if not packets:
            return
        try:
            self.switch.send_packets(packets)
        except SwitchError:
            with self._lock:
                for garp in garps:
                    heapq.heappush(self._garps, garp)
            raise
        with self._lock:
            for gateway, _ in asks:
                if gateway in self._ask_at:
                    answered = gateway in self._learnt
                    self._ask_at[gateway] = now + (self.refresh if answered
                                                   else UNANSWERED_RETRY)

    def _seconds_to_next(self) -> float:
        with self._lock:
            due = list(self._ask_at.values()) + [at for at, _ in self._repeated.values()]
            if self._garps:
                due.append(self._garps[0][0])
        return max(min(due, default=self.clock() + self.refresh) - self.clock(), 0.0)

    def _from_installed(self) -> dict[tuple, str]:
        """The gateway MACs of the flows out that br-int has (a restarted controller's):
        each flow of fip_to_external and snat_to_external names the gateway's MAC, and its
        cookie the port (floating IP, router gateway or chassis_snat) whose subnet's
        gateway that is."""
        by_port_key = {}
        for flow in self.installed().values():
            if flow.table in (p.FIP_TO_EXTERNAL.number, p.SNAT_TO_EXTERNAL.number):
                mac = next((a.value for a in flow.actions
                            if isinstance(a, of.SetField) and a.field == 'eth_dst'), None)
                if mac:
                    by_port_key[flow.cookie & of.COOKIE_OBJECT_MASK] = mac
        if not by_port_key or self.cache is None:
            return {}
        remembered = {}
        with self.cache.lock:
            subnets = self.cache.objects[Subnet.table]
            for port in self.cache.objects[Port.table].values():
                if port.key in by_port_key and port.device_owner in SOURCE_OWNERS:
                    for fixed in port.fixed_ips:
                        subnet = subnets.get(fixed.subnet_id)
                        if subnet is not None and subnet.gateway_ip:
                            remembered[subnet.network_id, subnet.gateway_ip] = \
                                by_port_key[port.key]
        return remembered


def _announcements(holder: LocalFloatingIP | LocalGateway, source: Source,
                   topology: Topology) -> list[tuple[tuple, Source, bool]]:
    """(identity, source, repeated) of each gratuitous ARP the holder sends when it
    becomes local: on its external network; for a router's gateway, also on each physical
    network behind the router, where the router's other chassis send its traffic out to the
    gateway MAC (snat.py): the switches there learn it on this chassis' port too. (A new
    such network is announced on when it comes.) Those are repeated every refresh while
    local: nothing else this chassis sends there comes from the gateway MAC to keep the
    switches' entries (on the external network the asks for the upstream gateway do)."""
    identity = _identity(holder)
    result = [(identity, source, False)]
    if isinstance(holder, LocalGateway) and not holder.distributed:
        # Announced again when one of the router's other gateway chassis comes alive (or
        # goes): seeing none alive (no BFD session yet, at a router's creation), it may
        # have held the gateway too meanwhile and announced it last.
        peers = tuple(sorted(c for c in holder.router.gateway_chassis
                             if c in topology.live_peers))
        for network in holder.router_gateway.physical_networks:
            if network.physical_network in topology.patch_ofports:
                result.append(((*identity, network.id, peers),
                               Source.on(network, holder, topology), True))
    return result


def _identity(holder: LocalFloatingIP | LocalGateway) -> tuple:
    """What a source is announced again for: a floating IP on another port, a router's
    address held again (the holder of its gateway, or its address, changed)."""
    if isinstance(holder, LocalFloatingIP):
        return holder.floating_ip.id, holder.port.id, holder.address, holder.mac
    return holder.router.id, holder.own_port.id, holder.address, holder.mac


def _out(source: Source, frame: bytes) -> tuple[list, bytes]:
    return [of.Output(source.ofport)], frame


def _ethernet(source: Source, payload: bytes) -> bytes:
    head = BROADCAST + _mac(source.mac)
    if source.vlan is not None:
        head += struct.pack('!HH', ETH_TYPE_VLAN, source.vlan)
    return head + struct.pack('!H', ETH_TYPE_ARP) + payload


def _arp(op: int, sha: str, spa: str, tha: str, tpa: str) -> bytes:
    return ARP_HEADER.pack(1, 0x0800, 6, 4, op, _mac(sha), _ip(spa), _mac(tha), _ip(tpa))


def arp_request(source: Source, target_ip: str) -> bytes:
    """Who has ``target_ip``? Tell the source."""
    return _ethernet(source, _arp(1, source.mac, source.ip, '00:00:00:00:00:00', target_ip))


def gratuitous_arp(source: Source) -> bytes:
    """A request for its own address (as arping -U sends): every listener updates."""
    return _ethernet(source, _arp(1, source.mac, source.ip, '00:00:00:00:00:00', source.ip))


def parse_arp(data: bytes) -> Optional[tuple[int, str, str]]:
    """(op, sender MAC, sender IP) of an Ethernet ARP frame (802.1Q tag or not), or None."""
    offset = 12
    if data[offset:offset + 2] == struct.pack('!H', ETH_TYPE_VLAN):
        offset += 4
    if data[offset:offset + 2] != struct.pack('!H', ETH_TYPE_ARP) or \
            len(data) < offset + 2 + ARP_HEADER.size:
        return None
    _, ptype, hlen, plen, op, sha, spa, _, _ = ARP_HEADER.unpack_from(data, offset + 2)
    if (ptype, hlen, plen) != (0x0800, 6, 4):
        return None
    return op, ':'.join(f'{b:02x}' for b in sha), '.'.join(str(b) for b in spa)


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(':', ''))


def _ip(text: str) -> bytes:
    return bytes(int(part) for part in text.split('.'))
