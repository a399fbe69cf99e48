"""Table port_security: a VM may send only with its port's MAC and IPv4 addresses, or an
allowed address pair's, in Ethernet, IP and ARP headers alike; a DHCP request from 0.0.0.0 and
an ARP probe (sender IP 0.0.0.0) with its own MAC are allowed, so it can get and check an
address. Anything else from the port misses and is dropped. A port with port security
disabled passes everything."""

from dragonflow.controller import pipeline as p
from dragonflow.controller.apps.units import unit
from dragonflow.controller.flows import Match
from dragonflow.controller.topology import ip_network, ipv4_addresses

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
    for mac, address in _addresses(port):
        yield from _allow(port, mac, address)
    yield p.PORT_SECURITY.flow(
        ALLOW, Match(reg6=port.key, eth_src=port.mac_address, eth_type=p.ETH_TYPE_IPV4,
                     ipv4_src=UNSPECIFIED, ip_proto=17, udp_src=DHCP_CLIENT_PORT,
                     udp_dst=DHCP_SERVER_PORT), [p.EGRESS_CONNTRACK.goto()], cookie=port.key)
    yield p.PORT_SECURITY.flow(
        ALLOW, Match(reg6=port.key, eth_src=port.mac_address, eth_type=p.ETH_TYPE_ARP,
                     arp_sha=port.mac_address, arp_spa=UNSPECIFIED),
        [p.EGRESS_CONNTRACK.goto()], cookie=port.key)


def _addresses(port):
    """(MAC, IPv4 address or prefix) pairs the port may send with."""
    pairs = [(port.mac_address, ip) for ip in ipv4_addresses(port)]
    for pair in port.allowed_address_pairs:
        prefix = ip_network(pair.ip_address)
        if prefix.version == 4:
            pairs.append(((pair.mac_address or port.mac_address).lower(), prefix))
    return sorted(set((mac, ip_network(a)) for mac, a in pairs),
                  key=str)


def _allow(port, mac, prefix):
    address = str(prefix.network_address) if prefix.prefixlen == 32 else \
        (str(prefix.network_address), str(prefix.netmask))
    yield p.PORT_SECURITY.flow(
        ALLOW, Match(reg6=port.key, eth_src=mac, eth_type=p.ETH_TYPE_IPV4, ipv4_src=address),
        [p.EGRESS_CONNTRACK.goto()], cookie=port.key)
    yield p.PORT_SECURITY.flow(
        ALLOW, Match(reg6=port.key, eth_src=mac, eth_type=p.ETH_TYPE_ARP, arp_sha=mac,
                     arp_spa=address), [p.EGRESS_CONNTRACK.goto()], cookie=port.key)
