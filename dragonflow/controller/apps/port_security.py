"""Table port_security: a VM may send only with its port's MAC and IPv4 addresses, or an
allowed address pair's, in Ethernet, IP and ARP headers alike; a DHCP request from 0.0.0.0 and
an ARP probe (sender IP 0.0.0.0) with its own MAC are allowed, so it can get and check an
address (unless an allowed address pair with its MAC covers 0.0.0.0 already). Anything else
from the port misses and is dropped. A port with port security disabled passes everything.
A prefix is matched in the form the switch reads back (flows.prefix_match): an allowed address
pair of 0.0.0.0/0, a common Neutron idiom, matches no address field at all."""

from dragonflow.controller import pipeline as p
from dragonflow.controller.apps.units import unit
from dragonflow.controller.flows import Match, prefix_match
from dragonflow.controller.topology import ip_address, ip_network, ipv4_addresses

NAME = 'port_security'
UNSPECIFIED = '0.0.0.0'
DHCP_CLIENT_PORT, DHCP_SERVER_PORT = 68, 67
ALLOW, ALLOW_ALL = 100, 50


def flows(topology):
    for port, _ in topology.local_ports():
        yield from _port_flows(port)


@unit
def _port_flows(port):
    if not port.port_security_enabled:
        yield p.PORT_SECURITY.flow(ALLOW_ALL, Match(reg6=port.key), [p.EGRESS_CONNTRACK.goto()],
                                   cookie=port.key)
        return
    mac = port.mac_address.lower()
    addresses = _addresses(port, mac)
    for pair_mac, prefix in addresses:
        yield from _allow(port, pair_mac, prefix)
    if not _covers(addresses, mac, UNSPECIFIED):
        yield p.PORT_SECURITY.flow(
            ALLOW, Match(reg6=port.key, eth_src=mac, eth_type=p.ETH_TYPE_IPV4,
                         ipv4_src=UNSPECIFIED, ip_proto=17, udp_src=DHCP_CLIENT_PORT,
                         udp_dst=DHCP_SERVER_PORT), [p.EGRESS_CONNTRACK.goto()],
            cookie=port.key)
        yield p.PORT_SECURITY.flow(
            ALLOW, Match(reg6=port.key, eth_src=mac, eth_type=p.ETH_TYPE_ARP, arp_sha=mac,
                         arp_spa=UNSPECIFIED), [p.EGRESS_CONNTRACK.goto()], cookie=port.key)


def _addresses(port, mac: str) -> list:
    """(MAC, IPv4 prefix) pairs the port may send with, but those another pair of the same
    MAC covers: their flows would overlap at one priority, which leaves the switch free to
    pick either (a fixed IP inside an allowed prefix; anything at all, with 0.0.0.0/0)."""
    pairs = {(mac, ip_network(ip)) for ip in ipv4_addresses(port)}
    for pair in port.allowed_address_pairs:
        prefix = ip_network(pair.ip_address)
        if prefix.version == 4:
            pairs.add((pair.mac_address.lower() if pair.mac_address else mac, prefix))
    return sorted((pair for pair in pairs if not any(_inside(pair, other) for other in pairs)),
                  key=str)


def _inside(pair, other) -> bool:
    """Whether ``other`` (a MAC and a prefix) covers all of ``pair`` and more."""
    return pair[0] == other[0] and pair[1] != other[1] and pair[1].subnet_of(other[1])


def _covers(addresses, mac: str, ip: str) -> bool:
    return any(mac == their_mac and ip_address(ip) in prefix for their_mac, prefix in addresses)


def _allow(port, mac, prefix):
    yield p.PORT_SECURITY.flow(
        ALLOW, Match(reg6=port.key, eth_src=mac, eth_type=p.ETH_TYPE_IPV4,
                     **prefix_match('ipv4_src', prefix)), [p.EGRESS_CONNTRACK.goto()],
        cookie=port.key)
    yield p.PORT_SECURITY.flow(
        ALLOW, Match(reg6=port.key, eth_src=mac, eth_type=p.ETH_TYPE_ARP, arp_sha=mac,
                     **prefix_match('arp_spa', prefix)), [p.EGRESS_CONNTRACK.goto()],
        cookie=port.key)
