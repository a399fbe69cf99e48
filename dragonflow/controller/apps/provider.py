"""Physical (flat and VLAN) networks: in from and out to the physical network through the patch
port of its physnet (bridge_mappings), VLAN tag popped and pushed, never through a tunnel.

In: classify takes a frame from the physnet's patch port by its VLAN id (popped; a flat
network's frames are the untagged ones) to its network, and provider_ingress delivers it to a
local port by destination MAC, a broadcast to every local port of the network (never back out,
never into a tunnel: nothing loops between the physical network and the tunnels), and drops
anything else: the physical network floods unknown unicast to every chassis, and each takes
only what is its own. A frame for a router interface's MAC is not routed (every chassis with
the network would route it: a documented limit); the floating IPs app answers and NATs in
provider_ingress for its own addresses.

Out: a frame from a local port for a port elsewhere on the network, for a MAC the network
does not know (the upstream router's, a physical machine's) and one copy of a broadcast go
to provider_egress, which pushes the VLAN tag and sends it out of the patch port. A routed
frame (its source is one of the network's router interface MACs: l3 routed it here) leaves
with this chassis' router MAC instead, so the switches upstream never see a router's MAC
move between the ports of every chassis that routes.

A chassis that does not map a network's physnet has no way out for it: its local ports still
talk to each other, nothing else (the error is logged once per network).
"""
import logging

from dragonflow.controller import pipeline as p
from dragonflow.controller.apps.l2 import (
    MULTICAST,
    by_mac,
    local_copies,
    local_vm_ports,
    to_ports,
)
from dragonflow.controller.apps.units import unit
from dragonflow.controller.flows import IN_PORT, Match, Output, PopVlan, PushVlan, SetField

NAME = 'provider'
LOG = logging.getLogger(__name__)
VLAN_PRESENT = 0x1000  # OFPVID_PRESENT: a vlan_vid with it is a tagged frame's
UNTAGGED = 0           # OFPVID_NONE
# l2_lookup: below every port's MAC (100) and broadcast (50).
UNKNOWN_UNICAST_PRIORITY = 1
# provider_egress: a router interface's frames above the network's; of each, those that
# came in by the patch port above the others.
ROUTED_PRIORITY, EGRESS_PRIORITY = 110, 100
BACK_OUT = 5


def flows(topology):
    local_networks = topology.local_network_ids()
    for network in topology.networks.values():
        if not network.is_physical:
            continue
        patch = topology.patch_ofports.get(network.physical_network)
        if patch is None:
            if network.id in local_networks:
                yield from _unmapped(network)
            continue
        yield from _classify(network, patch)
        yield from _egress(network, patch, topology.router_mac, _router_macs(topology, network))
        # Also without a local port: a router here routes to the network's ports elsewhere.
        yield from _to_ports_elsewhere(_elsewhere(topology, network))
        if network.id in local_networks:
            yield from _network(network, local_vm_ports(topology, network.id))


def vlan_actions(network) -> list:
    """What a frame of the network gets on its way out to the physical network."""
    if network.network_type != 'vlan':
        return []
    return [PushVlan(), SetField('vlan_vid', VLAN_PRESENT | network.segmentation_id)]


def _router_macs(topology, network) -> tuple:
    return tuple(sorted({port.mac_address for port in topology.ports_on(network.id)
                         if port.is_router_interface}))


def _elsewhere(topology, network) -> tuple:
    """The network's VM ports not plugged here (bound elsewhere or nowhere yet): the
    physical network reaches wherever they are."""
    return tuple(port for port in topology.vm_ports_on(network.id)
                 if port.id not in topology.ofports
                 and port.binding_host_id != topology.chassis_id)


@unit
def _unmapped(network):
    LOG.error('network %s is on physnet %s, which this chassis does not map '
              '(bridge_mappings): its ports here reach only each other', network.id,
              network.physical_network)
    yield from ()


@unit
def _classify(network, patch: int):
    vlan = VLAN_PRESENT | network.segmentation_id if network.network_type == 'vlan' \
        else UNTAGGED
    untag = [PopVlan()] if vlan != UNTAGGED else []
    yield p.CLASSIFY.flow(
        100, Match(in_port=patch, vlan_vid=vlan),
        untag + [SetField(p.NETWORK_REG, network.key), p.PROVIDER_INGRESS.goto()],
        cookie=network.key)


@unit
def _egress(network, patch: int, router_mac, router_macs: tuple):
    """Out of the patch port; a frame that came in by it (the SNAT of a router whose
    networks share the external network's physnet: in on one VLAN, out on another) out of
    IN_PORT, since OpenFlow drops an output to the port a packet came in by."""
    for back, came_in, port in ((0, {}, patch), (BACK_OUT, {'in_port': patch}, IN_PORT)):
        out = vlan_actions(network) + [Output(port)]
        yield p.PROVIDER_EGRESS.flow(EGRESS_PRIORITY + back,
                                     Match(metadata=network.key, **came_in), out,
                                     cookie=network.key)
        if router_mac is None:
            continue
        for mac in router_macs:
            yield p.PROVIDER_EGRESS.flow(
                ROUTED_PRIORITY + back, Match(metadata=network.key, eth_src=mac, **came_in),
                [SetField('eth_src', router_mac), *out], cookie=network.key)


@unit
def _to_ports_elsewhere(elsewhere: tuple):
    for port in elsewhere:
        yield p.EGRESS_DISPATCH.flow(100, Match(reg7=port.key), [p.PROVIDER_EGRESS.goto()],
                                     cookie=port.key)


@unit
def _network(network, local: tuple):
    """A network with local ports: in to them, out for everything else."""
    for mac, holders in by_mac(local):
        yield p.PROVIDER_INGRESS.flow(100, Match(metadata=network.key, eth_dst=mac),
                                      to_ports(holders), cookie=holders[0].key)
    yield p.PROVIDER_INGRESS.flow(50, Match(metadata=network.key, eth_dst=MULTICAST),
                                  local_copies(local), cookie=network.key)
    yield p.L2_LOOKUP.flow(UNKNOWN_UNICAST_PRIORITY, Match(metadata=network.key),
                           [p.PROVIDER_EGRESS.goto()], cookie=network.key)
    yield p.REMOTE_FLOOD.flow(100, Match(metadata=network.key), [p.PROVIDER_EGRESS.goto()],
                              cookie=network.key)
