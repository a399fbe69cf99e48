"""Tunnels to the other chassis (VXLAN, Geneve or GRE), for the networks that are not physical
(those cross the physical network: provider.py).

A network crosses in the tunnel of its provider:network_type (this chassis has one flow-based
tunnel port per configured type, Topology.tunnel_ofports; a network recorded before provider
networks, with no type, in the first one's), carrying its tunnel_key (its segmentation id: the
VNI, or the GRE key) on the wire; only chassis that terminate that type are sent to.

Out: a packet for a port bound to another chassis leaves egress_dispatch with tunnel_id = the
network's tunnel key and tun_ipv4_dst = that chassis' tunnel IP, through the tunnel port. A
broadcast from a local port gets one copy per other chassis with ports on its network
(remote_flood). So does a packet for a port not bound anywhere yet: its VM may be plugged on
one of those chassis this very moment, and that chassis delivers it as soon as its own flows
are in, without waiting for the binding to travel through the store to us.
In: a packet from a tunnel port is classified by (tunnel port, tunnel key) and delivered by
destination MAC to local ports only (remote_ingress); a broadcast from a tunnel is copied to
local ports only, so nothing arriving over a tunnel is ever sent back into one. A unicast
packet for any other MAC goes to the controller, which holds it for a while in case that MAC's
port is being plugged here (held_packets.py): the sender may know the port before this chassis
does, or before its flows are in here. A drop would be cached by the datapath, and Open
vSwitch revalidates its cache at most every 5 ms, so a dropped first packet would keep a new
port unreachable for up to 5 ms after its flows are in.

A gateway chassis of a router (in its gateway_chassis) has the ingress flows of the router's
networks without a local port too: the router's traffic out comes to it through the tunnels
while it holds the gateway (snat.py adds the flow for the gateway MAC), and, until it does,
what comes waits in the controller like any packet for a MAC not here yet.
"""
import logging
from typing import Optional

from dragonflow.controller import pipeline as p
from dragonflow.controller.apps.l2 import (
    MULTICAST,
    by_mac,
    local_copies,
    local_vm_ports,
    to_ports,
)
from dragonflow.controller.apps.units import unit
from dragonflow.controller.flows import Match, Output, SetField, ToController

NAME = 'tunnels'
LOG = logging.getLogger(__name__)


def flows(topology):
    # A gateway chassis of a router gets the router's VMs' traffic out through the tunnels
    # (snat.py), local ports or not.
    served = topology.local_network_ids() | topology.gateway_networks()
    own_types = _own_types(topology)
    for network in topology.networks.values():
        if network.is_physical:
            continue
        tunnel = tunnel_ofport(topology, network)
        if tunnel is None:
            continue
        encapsulation = crossing(network, own_types)
        if network.network_type not in (None, encapsulation) and own_types:
            yield from _crossing_in_another_type(network.id, network.network_type,
                                                 encapsulation)
        remote = tuple((port, chassis) for port, chassis in topology.remote_ports_on(network.id)
                       if _same_crossing(network, own_types, chassis))
        yield from _egress(network.key, network.tunnel_key, remote,
                           tuple(topology.unbound_ports_on(network.id)), tunnel)
        if network.id in served:
            yield from _ingress(network.key, network.tunnel_key,
                                local_vm_ports(topology, network.id), tunnel)


def crossing(network, tunnel_types) -> Optional[str]:
    """The tunnel a network crosses in between chassis terminating ``tunnel_types`` (in
    their configured order): its own type when they terminate it, else the first of theirs:
    a network of no type (recorded before provider networks) and one of a type no chassis
    here terminates (controllers given tunnel_types = geneve, df-api left at Neutron's
    default tenant type vxlan) still cross, as they did before networks had types. Two
    chassis tunnel a network only if it crosses in the same type for both."""
    if network.network_type in tunnel_types:
        return network.network_type
    return tunnel_types[0] if tunnel_types else None


def crosses_to(topology, network, chassis) -> bool:
    """Whether this chassis tunnels the network to ``chassis``: it crosses in the same type
    for both."""
    return _same_crossing(network, _own_types(topology), chassis)


def _same_crossing(network, own_types: list, chassis) -> bool:
    """No own types: one untyped port, as before tunnel types, reaching any peer."""
    return not own_types or \
        crossing(network, chassis.tunnel_types) == crossing(network, own_types)


def _own_types(topology) -> list:
    """This chassis' tunnel types as configured: its record's, else its ports' (in order)."""
    record = topology.chassis.get(topology.chassis_id)
    return list(record.tunnel_types) if record else list(topology.tunnel_ofports)


def tunnel_ofport(topology, network) -> Optional[int]:
    """This chassis' tunnel port for the network (``crossing``). A topology that knows only
    one port (tunnel_ofports empty: a caller from before tunnel types) has it for every
    type."""
    if not topology.tunnel_ofports:
        return topology.tunnel_ofport
    return topology.tunnel_ofports.get(crossing(network, _own_types(topology)))


@unit
def _crossing_in_another_type(network_id: str, network_type: str, encapsulation: str):
    LOG.warning('network %s is %s, which this chassis does not terminate ([controller] '
                'tunnel_types): it crosses in %s; give df-api [ml2] tenant_network_types '
                'to match', network_id, network_type, encapsulation)
    yield from ()


@unit
def _egress(network_key: int, tunnel_key: int, remote: tuple, unbound: tuple, tunnel: int):
    for port, chassis in remote:
        yield p.EGRESS_DISPATCH.flow(100, Match(reg7=port.key),
                                     _to(tunnel_key, chassis.tunnel_ip, tunnel),
                                     cookie=port.key)
    peers = sorted({chassis.tunnel_ip for _, chassis in remote})
    if peers:
        yield p.REMOTE_FLOOD.flow(
            100, Match(metadata=network_key),
            [a for ip in peers for a in _to(tunnel_key, ip, tunnel)], cookie=network_key)
        for port in unbound:
            yield p.EGRESS_DISPATCH.flow(100, Match(reg7=port.key),
                                         [p.REMOTE_FLOOD.resubmit()], cookie=port.key)


def _to(tunnel_key: int, tunnel_ip: str, tunnel_ofport: int) -> list:
    return [SetField('tunnel_id', tunnel_key), SetField('tun_ipv4_dst', tunnel_ip),
            Output(tunnel_ofport)]


@unit
def _ingress(network_key: int, tunnel_key: int, local_ports: tuple, tunnel: int):
    yield p.CLASSIFY.flow(100, Match(in_port=tunnel, tunnel_id=tunnel_key),
                          [SetField(p.NETWORK_REG, network_key), p.REMOTE_INGRESS.goto()],
                          cookie=network_key)
    for mac, holders in by_mac(local_ports):
        yield p.REMOTE_INGRESS.flow(100, Match(metadata=network_key, eth_dst=mac),
                                    to_ports(holders), cookie=holders[0].key)
    yield p.REMOTE_INGRESS.flow(1, Match(metadata=network_key), [ToController()],
                                cookie=network_key)
    yield p.REMOTE_INGRESS.flow(50, Match(metadata=network_key, eth_dst=MULTICAST),
                                local_copies(local_ports), cookie=network_key)


def release_actions(network, port) -> list:
    """What a held packet for ``port`` does once the port is plugged here: what its
    remote_ingress flow would have done (as packet-out actions)."""
    return [SetField(p.NETWORK_REG, network.key), SetField(p.DESTINATION_PORT_REG, port.key),
            p.EGRESS_DISPATCH.resubmit()]
