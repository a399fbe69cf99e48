"""Table arp_responder: ARP requests for addresses the topology knows (router interfaces and
ports, local or not) are answered on the chassis, straight back out of the asking port, so ARP
never floods the network or crosses a tunnel.

A port's request for its own address (a gratuitous ARP, or the probe of duplicate address
detection that DHCP clients send) is not answered: an answer would tell the port that someone
else holds its address. It goes on to L2 lookup like any request, so a real duplicate answers.
"""
from dragonflow.controller import pipeline as p
from dragonflow.controller.apps.units import unit
from dragonflow.controller.flows import IN_PORT, Match, Move, Output, SetField
from dragonflow.controller.topology import ipv4_addresses

NAME = 'arp_responder'


def flows(topology):
    yield from _table_flows()
    for port, _ in topology.local_ports():
        yield from _own_addresses(port, topology.network_of(port).key)
    for network in topology.networks.values():
        yield from _replies(network.key, tuple(topology.ports_on(network.id)))


@unit
def _table_flows():
    yield p.SERVICES.flow(100, Match(eth_type=p.ETH_TYPE_ARP), [p.ARP_RESPONDER.goto()])
    yield p.ARP_RESPONDER.flow(0, Match(), [p.L2_LOOKUP.goto()])


@unit
def _own_addresses(port, network_key: int):
    for ip in ipv4_addresses(port):
        yield _own_address(network_key, ip, port.key)


@unit
def _replies(network_key: int, ports: tuple):
    """One reply per address of the network, from the first port (in key order) holding it."""
    answered = set()
    for port in ports:
        for ip in ipv4_addresses(port):
            if ip not in answered:
                answered.add(ip)
                yield reply(network_key, ip, port.mac_address, port.key)


def reply(network_key: int, ip: str, mac: str, object_key: int):
    return p.ARP_RESPONDER.flow(
        100,
        Match(metadata=network_key, eth_type=p.ETH_TYPE_ARP, arp_op=p.ARP_REQUEST, arp_tpa=ip),
        [*reply_actions(ip, mac), Output(IN_PORT)], cookie=object_key)


def reply_actions(ip: str, mac: str) -> list:
    """Turn an ARP request for ``ip`` into the reply in place: swap the addresses, fill in
    the answer (``mac``). The floating IPs' answers are these too."""
    return [Move('eth_src', 'eth_dst', 48), SetField('eth_src', mac),
            SetField('arp_op', p.ARP_REPLY),
            Move('arp_sha', 'arp_tha', 48), Move('arp_spa', 'arp_tpa', 32),
            SetField('arp_sha', mac), SetField('arp_spa', ip)]


def _own_address(network_key: int, ip: str, port_key: int):
    return p.ARP_RESPONDER.flow(
        110,
        Match(metadata=network_key, reg6=port_key, eth_type=p.ETH_TYPE_ARP,
              arp_op=p.ARP_REQUEST, arp_tpa=ip),
        [p.L2_LOOKUP.goto()], cookie=port_key)
