"""The conntrack zones of NAT, allocated by this chassis and owned by the flow loop: one per
floating IP *association* (the floating IP, the port and the fixed IP it is associated
with), and one per router SNATing here (the router, its address and the port holding it:
its gateway port on the chassis holding its gateway, its chassis_snat port in distributed
mode), the lowest free of 0x8000..0xffff, well above the security groups' zones (the VMs'
OpenFlow port numbers). Topology.nat_zones is what this module assigned (by floating IP id
and by router id), so the floating_ips and snat apps stay pure.

A zone per association, not per router: router keys grow without bound, so any 15 bits of
them collide (two projects' overlapping fixed IPs would meet in one zone), and a floating
IP moved to another port must not keep its connections going to the old one (Neutron's L3
agent deletes a floating IP's conntrack entries when it is disassociated). A new
association takes a zone of its own; before the bundle whose flows first use it, the flow
loop flushes it of whatever an earlier holder left. A zone is freed when its association is
no longer local, and is not taken again in the pass that freed it: the zones still held are
allocated around, so the flows that used it are gone (an earlier bundle on the same
connection) before it is flushed for its next holder.

A router's zone goes the same way: a chassis that stops holding a router's gateway (a peer
ahead of it came back, its uplink went down) frees it, and holding it again takes a zone
flushed of the connections it had before: they are the next holder's now.

A restarted controller keeps the zones br-int's flows have: the first assignment takes them
from the installed flows (fip_dnat_commit: the floating IP, its fixed IP and the zone;
fip_to_port: the port of that fixed IP; snat_commit: the router, its address and the zone),
for the associations they still describe, so a restart flushes nothing and rewrites no flow.
If no zone is free, the floating IP or router gets none, hence no flows, and an error is
logged once.
"""
import heapq
import logging
from typing import Callable, Optional

from dragonflow.controller import flows as of
from dragonflow.controller import pipeline as p
from dragonflow.controller.topology import LocalFloatingIP, LocalGateway

LOG = logging.getLogger(__name__)
FIRST, LAST = 0x8000, 0xffff
# floating IP id, port id, fixed IP; or router id, port id, address (.association)
Association = tuple[str, str, str]
Holder = LocalFloatingIP | LocalGateway


class NatZones:
    def __init__(self, installed: Callable[[], dict] = dict,
                 zones: range = range(FIRST, LAST + 1)):
        """``installed``: br-int's flows as the reconciler last read or sent them, read at
        the first assignment (a restarted controller's: br-int read back)."""
        self.installed = installed
        self._held: dict[Association, int] = {}
        self._free = list(zones)  # a heap; a zone taken back from the flows stays in it
        self._taken: set[int] = set()
        self._zones = zones
        self._unflushed: set[int] = set()
        self._remembered: Optional[dict] = None  # _installed_key -> zone
        self._refused: set[Association] = set()  # logged as without a zone

    def assign(self, holders: list[Holder]) -> dict[str, int]:
        """The zone of each floating IP and router (by its zone_key: its id) for its
        association, allocating for the new ones and freeing those of the associations
        gone."""
        reserved = set()
        if self._remembered is None:
            self._remembered = _from_installed(self.installed())
            # br-int's flows use them until this pass's bundle: allocated around, as the
            # zones of the associations gone are.
            reserved = {zone for zone in self._remembered.values() if zone in self._zones}
            self._taken |= reserved
        wanted = {holder.association: holder for holder in holders}
        for association, holder in wanted.items():
            if association not in self._held:
                self._allocate(association, holder, reserved)
        for gone in self._held.keys() - wanted.keys():
            self._release(self._held.pop(gone))
        for zone in reserved:  # no association of br-int's flows is still local
            self._release(zone)
        self._remembered = {}
        self._refused &= wanted.keys()
        return {holder.zone_key: self._held[a] for a, holder in wanted.items()
                if a in self._held}

    def unflushed(self) -> list[int]:
        """Zones allocated whose conntrack entries are not flushed yet: to flush before the
        flows that use them go to br-int."""
        return sorted(self._unflushed)

    def flushed(self, zones) -> None:
        self._unflushed.difference_update(zones)

    def _allocate(self, association: Association, holder: Holder, reserved: set) -> None:
        zone = self._remembered.pop(_installed_key(holder), None)
        if zone in reserved:
            reserved.discard(zone)
            self._held[association] = zone  # br-int's flows have it: nothing to flush
            return
        while self._free and self._free[0] in self._taken:
            heapq.heappop(self._free)
        if not self._free:
            if association not in self._refused:
                self._refused.add(association)
                LOG.error('no NAT zone left for %s (%s): it gets no flows',
                          _described(holder), holder.address)
            return
        zone = heapq.heappop(self._free)
        self._take(association, zone)
        self._unflushed.add(zone)

    def _take(self, association: Association, zone: int) -> None:
        self._held[association] = zone
        self._taken.add(zone)

    def _release(self, zone: int) -> None:
        self._taken.discard(zone)
        self._unflushed.discard(zone)  # flushed when taken again
        heapq.heappush(self._free, zone)


def _installed_key(holder: Holder) -> tuple:
    """How br-int's flows name a holder's zone (_from_installed)."""
    if isinstance(holder, LocalFloatingIP):
        return holder.address, holder.fixed_ip, holder.port.key
    return holder.router.key, holder.address


def _described(holder: Holder) -> str:
    if isinstance(holder, LocalFloatingIP):
        return f'floating IP {holder.floating_ip.id}'
    return f'router {holder.router.id}'


def _from_installed(flows: dict) -> dict:
    """(FIP address, fixed IP, port key) -> zone, as br-int's floating IP flows say, and
    (router key, address) -> zone, as its SNAT flows say."""
    commits, ports, routers = {}, {}, {}
    for flow in flows.values():
        if flow.table == p.SNAT_COMMIT.number:
            for action in flow.actions:
                if isinstance(action, of.Conntrack) and isinstance(action.zone, int) and \
                        action.nat is not None and action.nat.kind == 'src':
                    routers[flow.match.get('reg5'), action.nat.address] = action.zone
        elif flow.table == p.FIP_DNAT_COMMIT.number and 'ipv4_dst' in flow.match.fields():
            for action in flow.actions:
                if isinstance(action, of.Conntrack) and isinstance(action.zone, int) and \
                        action.nat is not None and action.nat.kind == 'dst':
                    commits[flow.match.get('reg5'), action.nat.address] = (
                        flow.match['ipv4_dst'], action.zone)
        elif flow.table == p.FIP_TO_PORT.number:
            port_key = next((a.value for a in flow.actions if isinstance(a, of.SetField)
                             and a.field == p.DESTINATION_PORT_REG), None)
            if port_key is not None:
                ports[flow.match.get('reg5'), flow.match.get('ipv4_dst')] = port_key
    return {**routers,
            **{(address, fixed, ports[router, fixed]): zone
               for (router, fixed), (address, zone) in commits.items()
               if (router, fixed) in ports}}
