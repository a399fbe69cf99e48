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

A rule with a remote group means every address of every port in that group. As one flow per
member address, service and local port it would be quadratic in the ports of a group that
lets itself in, as every project's default group does. So such rules are conjunctive matches
(as in Neutron's OVS firewall and OVN's address sets), one per remote group in each direction's
table, its id the group's key (allocated by the store from 1, 32 bits are plenty): stable
across recomputes, so the flows do not churn. Clause 1 says "a local port has a rule naming the
group that allows this service" (one flow per port and service), clause 2 "the peer is a
member" (one flow per member address, shared by all ports and groups), and one flow per (port,
group) matching conj_id commits the connection in the port's zone. The flows grow with the
local ports' services plus the members, no longer with their product, and a member joining or
leaving changes its address flow only. Rules with a remote prefix or none stay direct flows.
"""
import dataclasses
import ipaddress

from dragonflow.controller import pipeline as p
from dragonflow.controller.flows import (
    CT_ESTABLISHED,
    CT_INVALID,
    CT_NEW,
    CT_RELATED,
    CT_TRACKED,
    Conjunction,
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
RULE_PRIORITY = 100
# Below the direct rules: a clause 1 flow may have a direct rule's match (the same port and
# service with any address), and where a direct rule matches, the conjunction is not needed.
CONJUNCTION_PRIORITY = 90
PORT_CLAUSE, MEMBER_CLAUSE = 1, 2


@dataclasses.dataclass(frozen=True)
class Direction:
    conntrack: p.Table
    rules: p.Table
    port_register: str  # the local port: the sender (egress) or the receiver (ingress)
    peer_field: str     # the address of the other end
    after: p.Table

    def allow(self, zone: int) -> list:
        """Commit the new connection in the port's zone and go on."""
        return [Conntrack(zone, commit=True), self.after.goto()]


DIRECTIONS = {
    'egress': Direction(p.EGRESS_CONNTRACK, p.EGRESS_SECURITY_GROUPS, p.SOURCE_PORT_REG,
                        'ipv4_dst', p.SERVICES),
    'ingress': Direction(p.INGRESS_CONNTRACK, p.INGRESS_SECURITY_GROUPS,
                         p.DESTINATION_PORT_REG, 'ipv4_src', p.OUTPUT),
}


def flows(topology):
    for d in DIRECTIONS.values():
        yield d.conntrack.flow(0, Match(), [d.after.goto()])
        for state in STATEFUL_PASS:
            yield d.rules.flow(200, Match(ct_state=state), [d.after.goto()])
        yield d.rules.flow(210, Match(ct_state=INVALID), [])
    remote_groups = set()
    for port, ofport in topology.local_ports():
        if port.port_security_enabled:
            rules = list(_ipv4_rules(topology, port))
            remote_groups |= {(rule.direction, group.id) for rule, group in rules if group}
            yield from _conntrack(port, zone=ofport)
            yield from _rules(port, rules, zone=ofport)
    yield from _members(topology, remote_groups)


def _conntrack(port, zone):
    yield p.EGRESS_CONNTRACK.flow(
        110, Match(reg6=port.key, eth_type=p.ETH_TYPE_IPV4, ip_proto=17, udp_src=68,
                   udp_dst=67), [p.SERVICES.goto()], cookie=port.key)
    for d in DIRECTIONS.values():
        yield d.conntrack.flow(100, Match(**{d.port_register: port.key},
                                          eth_type=p.ETH_TYPE_IPV4),
                               [Conntrack(zone, table=d.rules.number)], cookie=port.key)


def _ipv4_rules(topology, port):
    """The port's IPv4 rules (IPv6 is not forwarded yet) with their remote group (None without
    one). A rule whose remote group is not known here yet has no members to allow."""
    for rule in topology.rules_of(port):
        if rule.ethertype != 'IPv4':
            continue
        if not rule.remote_group_id:
            yield rule, None
        elif rule.remote_group_id in topology.security_groups:
            yield rule, topology.security_groups[rule.remote_group_id]


def _rules(port, rules, zone):
    """One flow per service for a rule with a remote prefix or none; for a rule with a remote
    group, clause 1 of the group's conjunction per service and the flow the conjunction leads
    to. Two groups of a port may allow the same thing: each match is made once."""
    direct: dict = {}   # (direction, match), as an ordered set
    clauses: dict = {}  # (direction, match) -> keys of the remote groups
    for rule, group in rules:
        d = DIRECTIONS[rule.direction]
        for service in _services(rule):
            fields = {d.port_register: port.key, 'ct_state': NEW, 'eth_type': p.ETH_TYPE_IPV4,
                      **service}
            if group:
                clauses.setdefault((rule.direction, Match(**fields)), set()).add(group.key)
            else:
                peer = _peer(d.peer_field, rule.normalized_cidr) if rule.remote_ip_prefix else {}
                direct[(rule.direction, Match(**fields, **peer))] = None
    for direction, match in direct:
        d = DIRECTIONS[direction]
        yield d.rules.flow(RULE_PRIORITY, match, d.allow(zone), cookie=port.key)
    for (direction, match), keys in clauses.items():
        yield _clause(DIRECTIONS[direction], match, keys, PORT_CLAUSE, cookie=port.key)
    for direction, key in sorted({(direction, key) for (direction, _), keys in clauses.items()
                                  for key in keys}):
        d = DIRECTIONS[direction]
        yield d.rules.flow(CONJUNCTION_PRIORITY,
                           Match(conj_id=key, **{d.port_register: port.key},
                                 eth_type=p.ETH_TYPE_IPV4),  # ct() needs IP in the match
                           d.allow(zone), cookie=port.key)


def _members(topology, remote_groups):
    """Clause 2: one flow per direction and member address, with a conjunction for each
    remote group the address is in. A peer in two groups that one port's rules name matches
    both conjunctions; OVS then takes either, and both commit in the port's zone and go on."""
    clauses: dict = {}  # (direction, match) -> keys of the remote groups
    for direction, group_id in sorted(remote_groups):
        d = DIRECTIONS[direction]
        for address in topology.members(group_id):
            match = Match(eth_type=p.ETH_TYPE_IPV4, **_peer(d.peer_field, address))
            clauses.setdefault((direction, match), set()).add(
                topology.security_groups[group_id].key)
    for (direction, match), keys in clauses.items():
        yield _clause(DIRECTIONS[direction], match, keys, MEMBER_CLAUSE, cookie=0)


def _clause(d, match, group_keys, clause, cookie):
    return d.rules.flow(CONJUNCTION_PRIORITY, match,
                        [Conjunction(key, clause, 2) for key in sorted(group_keys)], cookie)


def _services(rule) -> list[dict]:
    """What the rule allows above IP, as matches (a port range as masks)."""
    protocol = rule.protocol_number
    if protocol in PORT_FIELDS and rule.port_range_min is not None:
        return [{'ip_proto': protocol, PORT_FIELDS[protocol]: masked}
                for masked in port_masks(rule.port_range_min, rule.port_range_max)]
    if protocol == ICMP and rule.port_range_min is not None:
        return [{'ip_proto': ICMP, 'icmpv4_type': rule.port_range_min,
                 **({'icmpv4_code': rule.port_range_max}
                    if rule.port_range_max is not None else {})}]
    return [{}] if protocol is None else [{'ip_proto': protocol}]


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


