"""Stateful security groups with connection tracking.

IPv4 from a local port with port security goes through conntrack in that port's zone
(egress_conntrack) and comes back in egress_security_groups with its state: packets of
established or related connections pass, invalid ones drop, and a new connection passes only
if one of the port's egress rules allows it, which commits it. Towards a local port the same
happens in ingress_conntrack / ingress_security_groups with its ingress rules, before output.
The zone is the port's OpenFlow port number, unique on the chassis: each port keeps its own
connections, so one port's egress commit never makes a packet "established" at another
port's ingress. DHCP from the port is never filtered (it has no address yet); ARP is not IP.
A port with port security disabled has no flows here and passes.
"""
import ipaddress

from dragonflow.controller import pipeline as p
from dragonflow.controller.flows import (
    CT_ESTABLISHED,
    CT_INVALID,
    CT_NEW,
    CT_RELATED,
    CT_TRACKED,
    Conntrack,
    Match,
    ct_state,
)

NAME = 'security_groups'
PORT_FIELDS = {6: 'tcp_dst', 17: 'udp_dst', 132: 'sctp_dst'}
ICMP = 1
NEW = ct_state(set_bits=CT_TRACKED | CT_NEW, clear_bits=CT_ESTABLISHED | CT_RELATED | CT_INVALID)
STATEFUL_PASS = (ct_state(set_bits=CT_TRACKED | CT_ESTABLISHED, clear_bits=CT_INVALID),
                 ct_state(set_bits=CT_TRACKED | CT_RELATED, clear_bits=CT_INVALID))
INVALID = ct_state(set_bits=CT_TRACKED | CT_INVALID)
DIRECTIONS = {
    # direction: (conntrack table, rules table, port register, peer address field, next table)
    'egress': (p.EGRESS_CONNTRACK, p.EGRESS_SECURITY_GROUPS, p.SOURCE_PORT_REG, 'ipv4_dst',
               p.SERVICES),
    'ingress': (p.INGRESS_CONNTRACK, p.INGRESS_SECURITY_GROUPS, p.DESTINATION_PORT_REG,
                'ipv4_src', p.OUTPUT),
}


def flows(topology):
    for conntrack, rules, _, _, after in DIRECTIONS.values():
        yield conntrack.flow(0, Match(), [after.goto()])
        for state in STATEFUL_PASS:
            yield rules.flow(200, Match(ct_state=state), [after.goto()])
        yield rules.flow(210, Match(ct_state=INVALID), [])
    for port, ofport in topology.local_ports():
        if port.port_security_enabled:
            yield from _port(topology, port, zone=ofport)


def _port(topology, port, zone):
    yield p.EGRESS_CONNTRACK.flow(
        110, Match(reg6=port.key, eth_type=p.ETH_TYPE_IPV4, ip_proto=17, udp_src=68,
                   udp_dst=67), [p.SERVICES.goto()], cookie=port.key)
    for conntrack, rules, register, _, _ in DIRECTIONS.values():
        yield conntrack.flow(100, Match(**{register: port.key}, eth_type=p.ETH_TYPE_IPV4),
                             [Conntrack(zone, table=rules.number)], cookie=port.key)
    seen = set()
    for rule in topology.rules_of(port):
        if rule.ethertype != 'IPv4':
            continue  # IPv6 is not forwarded yet
        conntrack, rules, register, peer_field, after = DIRECTIONS[rule.direction]
        for match in _rule_matches(topology, rule, peer_field):
            full = Match(**{register: port.key}, ct_state=NEW, eth_type=p.ETH_TYPE_IPV4,
                         **match)
            if full not in seen:  # two groups of a port may allow the same thing
                seen.add(full)
                yield rules.flow(100, full, [Conntrack(zone, commit=True), after.goto()],
                                 cookie=port.key)


def _rule_matches(topology, rule, peer_field) -> list[dict]:
    """The rule as a list of matches (ranges as masks, a remote group as its members)."""
    protocol = rule.protocol_number
    services = [{}] if protocol in (None, 0) else [{'ip_proto': protocol}]
    if protocol in PORT_FIELDS and rule.port_range_min is not None:
        field = PORT_FIELDS[protocol]
        services = [{'ip_proto': protocol, field: masked}
                    for masked in port_masks(rule.port_range_min, rule.port_range_max)]
    elif protocol == ICMP and rule.port_range_min is not None:
        services = [{'ip_proto': ICMP, 'icmpv4_type': rule.port_range_min,
                     **({'icmpv4_code': rule.port_range_max}
                        if rule.port_range_max is not None else {})}]
    if rule.remote_group_id:
        peers = [_peer(peer_field, a) for a in topology.members(rule.remote_group_id)]
    elif rule.remote_ip_prefix:
        peers = [_peer(peer_field, rule.normalized_cidr)]
    else:
        peers = [{}]
    return [{**service, **peer} for service in services for peer in peers]


def _peer(field: str, address: str) -> dict:
    """Match an address or prefix the way the switch reports it back (/0: no match)."""
    prefix = ipaddress.ip_network(address, strict=False)
    if prefix.prefixlen == 0:
        return {}
    if prefix.prefixlen == 32:
        return {field: str(prefix.network_address)}
    return {field: (str(prefix.network_address), str(prefix.netmask))}


def port_masks(low: int, high: int) -> list:
    """The fewest (value, mask) pairs (or plain values) covering the 16-bit range."""
    result = []
    while low <= high:
        size = low & -low if low else 1 << 16
        while low + size - 1 > high:
            size >>= 1
        mask = 0xffff & ~(size - 1)
        result.append(low if size == 1 else (low, mask))
        low += size
    return result


