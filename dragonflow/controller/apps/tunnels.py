"""Tunnels to the other chassis (VXLAN or Geneve; VNI = network key).

Out: a packet for a port bound to another chassis leaves egress_dispatch with tunnel_id = the
port's network key and tun_ipv4_dst = that chassis' tunnel IP, through our one flow-based
tunnel port. A broadcast from a local port gets one copy per other chassis with ports on its
network (remote_flood). So does a packet for a port not bound anywhere yet: its VM may be
plugged on one of those chassis this very moment, and that chassis delivers it as soon as its
own flows are in, without waiting for the binding to travel through the store to us.
In: a packet from the tunnel port is classified by its VNI and delivered by destination MAC to
local ports only (remote_ingress); a broadcast from a tunnel is copied to local ports only, so
nothing arriving over a tunnel is ever sent back into one. A unicast packet for any other MAC
goes to the controller, which holds it for a while in case that MAC's port is being plugged
here (held_packets.py): the sender may know the port before this chassis does, or before its
flows are in here. A drop would be cached by the datapath, and Open vSwitch revalidates its
cache at most every 5 ms, so a dropped first packet would keep a new port unreachable for up
to 5 ms after its flows are in.
"""
from dragonflow.controller import pipeline as p
from dragonflow.controller.apps.l2 import MULTICAST, local_copies, local_vm_ports
from dragonflow.controller.apps.units import unit
from dragonflow.controller.flows import Match, Output, SetField, ToController

NAME = 'tunnels'


def flows(topology):
    tunnel = topology.tunnel_ofport
    if tunnel is None:
        return
    local_networks = topology.local_network_ids()
    for network in topology.networks.values():
        remote = tuple(topology.remote_ports_on(network.id))
        yield from _egress(network.key, remote, tuple(topology.unbound_ports_on(network.id)),
                           tunnel)
        if network.id in local_networks:
            yield from _ingress(network.key, local_vm_ports(topology, network.id), tunnel)


@unit
def _egress(network_key: int, remote: tuple, unbound: tuple, tunnel: int):
    for port, chassis in remote:
        yield p.EGRESS_DISPATCH.flow(100, Match(reg7=port.key),
                                     _to(network_key, chassis.tunnel_ip, tunnel),
                                     cookie=port.key)
    peers = sorted({chassis.tunnel_ip for _, chassis in remote})
    if peers:
        yield p.REMOTE_FLOOD.flow(
            100, Match(metadata=network_key),
            [a for ip in peers for a in _to(network_key, ip, tunnel)], cookie=network_key)
        for port in unbound:
            yield p.EGRESS_DISPATCH.flow(100, Match(reg7=port.key),
                                         [p.REMOTE_FLOOD.resubmit()], cookie=port.key)


def _to(network_key: int, tunnel_ip: str, tunnel_ofport: int) -> list:
    return [SetField('tunnel_id', network_key), SetField('tun_ipv4_dst', tunnel_ip),
            Output(tunnel_ofport)]


@unit
def _ingress(network_key: int, local_ports: tuple, tunnel: int):
    yield p.CLASSIFY.flow(100, Match(in_port=tunnel, tunnel_id=network_key),
                          [SetField(p.NETWORK_REG, network_key), p.REMOTE_INGRESS.goto()],
                          cookie=network_key)
    for port in local_ports:
        yield p.REMOTE_INGRESS.flow(
            100, Match(metadata=network_key, eth_dst=port.mac_address),
            [SetField(p.DESTINATION_PORT_REG, port.key), p.EGRESS_DISPATCH.goto()],
            cookie=port.key)
    yield p.REMOTE_INGRESS.flow(1, Match(metadata=network_key), [ToController()],
                                cookie=network_key)
    yield p.REMOTE_INGRESS.flow(50, Match(metadata=network_key, eth_dst=MULTICAST),
                                local_copies(local_ports), cookie=network_key)


def release_actions(network, port) -> list:
    """What a held packet for ``port`` does once the port is plugged here: what its
    remote_ingress flow would have done (as packet-out actions)."""
    return [SetField(p.NETWORK_REG, network.key), SetField(p.DESTINATION_PORT_REG, port.key),
            p.EGRESS_DISPATCH.resubmit()]
