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

Written out, a rule is one flow per local port, service and peer address: ports x rules x
members, quadratic for a group that lets itself in, as every project's default group does. One
conjunction per remote group still took a flow per (local port, service of its rules), ports x
rules. So each rule is one conjunctive match (as OVN's port groups and address sets), its id
the rule's key, which the store allocates once (a recompute never renames a conjunction, so
the flows do not churn). Its clauses are "the local port is in the rule's group" (one flow
per port and direction, naming every rule of its groups), "the service" (protocol, ports,
remote prefix; one flow per distinct match, shared by every rule that allows it) and, for a
remote group, "the peer is a member" (one flow per member address, naming every rule that
names a group the address is in). Each part changes on its own: a port joining a group
rewrites its own clause flow, a member moving its address flow, a rule its conj_id flow and
its conjunction in the clause flows. The flows grow with ports + rules + member addresses.

The flow a conjunction leads to cannot name the port, so the port's zone travels in a
register, set where the port is known (the per-port conntrack flows), and both ct() actions
read it. A rule that allows anything from anywhere has no clause but the port's and stays a
direct per-port flow.
"""
import dataclasses
from typing import Optional

from dragonflow.controller import pipeline as p
from dragonflow.controller.apps.units import unit
from dragonflow.controller.flows import (
    CT_ESTABLISHED,
    CT_INVALID,
    CT_NEW,
    CT_RELATED,
    CT_TRACKED,
    Conjunction,
    Conntrack,
    Match,
    SetField,
    ct_state,
    prefix_match,
)
from dragonflow.controller.memo import memoized
from dragonflow.model import SecurityGroup, SecurityGroupRule

NAME = 'security_groups'
PORT_FIELDS = {6: 'tcp_dst', 17: 'udp_dst', 132: 'sctp_dst'}
ICMP = 1
NEW = ct_state(set_bits=CT_TRACKED | CT_NEW, clear_bits=CT_ESTABLISHED | CT_RELATED | CT_INVALID)
# A packet may be +est and +rel at once (ovs-fields(7): rel goes with any other flag), so the
# related flow leaves +est to the other: two flows at one priority that both match a packet
# leave the switch free to take either.
STATEFUL_PASS = (ct_state(set_bits=CT_TRACKED | CT_ESTABLISHED, clear_bits=CT_INVALID),
                 ct_state(set_bits=CT_TRACKED | CT_RELATED,
                          clear_bits=CT_INVALID | CT_ESTABLISHED))
INVALID = ct_state(set_bits=CT_TRACKED | CT_INVALID)
ZONE = p.CONNTRACK_ZONE_REG
# A port's flow for a rule that allows anything matches exactly what its clause flow matches,
# so the two need different priorities; where it matches, no conjunction is needed.
RULE_PRIORITY = 100
CONJUNCTION_PRIORITY = 90
PORT_CLAUSE, SERVICE_CLAUSE = 1, 2  # the member clause comes last


@dataclasses.dataclass(frozen=True)
class Direction:
    conntrack: p.Table
    rules: p.Table
    port_register: str  # the local port: the sender (egress) or the receiver (ingress)
    peer_field: str     # the address of the other end
    after: p.Table

    def allow(self) -> list:
        """Commit the new connection in the port's zone and go on."""
        return [Conntrack(ZONE, commit=True), self.after.goto()]

    def new_from(self, port) -> Match:
        """A new connection of the local port (ct() needs IP in the match)."""
        return Match(**{self.port_register: port.key}, ct_state=NEW, eth_type=p.ETH_TYPE_IPV4)


DIRECTIONS = {
    'egress': Direction(p.EGRESS_CONNTRACK, p.EGRESS_SECURITY_GROUPS, p.SOURCE_PORT_REG,
                        'ipv4_dst', p.SERVICES),
    'ingress': Direction(p.INGRESS_CONNTRACK, p.INGRESS_SECURITY_GROUPS,
                         p.DESTINATION_PORT_REG, 'ipv4_src', p.OUTPUT),
}


@dataclasses.dataclass(frozen=True)
class Rule:
    """An IPv4 rule as a conjunctive match: the matches of its service clause (none: any
    service from any address; a remote prefix is part of it) and its remote group."""
    rule: SecurityGroupRule
    services: tuple
    group: Optional[SecurityGroup]

    @property
    def key(self) -> int:
        return self.rule.key

    @property
    def direction(self) -> Direction:
        return DIRECTIONS[self.rule.direction]

    @property
    def is_conjunction(self) -> bool:
        return bool(self.services or self.group)

    def clause(self, number: int) -> Conjunction:
        return Conjunction(self.key, number, 1 + bool(self.services) + bool(self.group))

    @property
    def member_clause(self) -> int:
        return SERVICE_CLAUSE + bool(self.services)


def flows(topology):
    yield from _table_flows()
    used: dict = {}  # rule key -> Rule, the rules of the local ports
    for port, ofport in topology.local_ports():
        if port.port_security_enabled:
            rules = tuple(_rule(rule, group) for rule, group in _ipv4_rules(topology, port))
            used.update((r.key, r) for r in rules if r.is_conjunction)
            yield from _conntrack(port, ofport)
            yield from _port_flows(port, rules)
    yield from _rule_flows(topology, [used[key] for key in sorted(used)])


@unit
def _table_flows():
    for d in DIRECTIONS.values():
        yield d.conntrack.flow(0, Match(), [d.after.goto()])
        for state in STATEFUL_PASS:
            yield d.rules.flow(200, Match(ct_state=state), [d.after.goto()])
        yield d.rules.flow(210, Match(ct_state=INVALID), [])


@unit
def _conntrack(port, zone: int):
    yield p.EGRESS_CONNTRACK.flow(
        110, Match(reg6=port.key, eth_type=p.ETH_TYPE_IPV4, ip_proto=17, udp_src=68,
                   udp_dst=67), [p.SERVICES.goto()], cookie=port.key)
    for d in DIRECTIONS.values():
        yield d.conntrack.flow(100, Match(**{d.port_register: port.key},
                                          eth_type=p.ETH_TYPE_IPV4),
                               [SetField(ZONE, zone), Conntrack(ZONE, table=d.rules.number)],
                               cookie=port.key)


def _ipv4_rules(topology, port):
    """The port's IPv4 rules (IPv6 is not forwarded yet), with their remote group. A rule
    whose remote group is not known here yet has no members to allow."""
    for rule in topology.rules_of(port):
        if rule.ethertype != 'IPv4':
            continue
        group = None
        if rule.remote_group_id:
            group = topology.security_groups.get(rule.remote_group_id)
            if group is None:
                continue
        yield rule, group


@memoized
def _rule(rule, group) -> Rule:
    return Rule(rule, tuple(_service_matches(DIRECTIONS[rule.direction], rule)), group)


@unit
def _port_flows(port, rules: tuple):
    """Per direction, the port's clause naming every conjunctive rule of its groups, and one
    flow if some rule allows anything."""
    for name, d in DIRECTIONS.items():
        mine = [r for r in rules if r.rule.direction == name]
        if any(not r.is_conjunction for r in mine):
            yield d.rules.flow(RULE_PRIORITY, d.new_from(port), d.allow(), cookie=port.key)
        conjunctions = {r.clause(PORT_CLAUSE) for r in mine if r.is_conjunction}
        if conjunctions:
            yield d.rules.flow(CONJUNCTION_PRIORITY, d.new_from(port), conjunctions,
                               cookie=port.key)


def _rule_flows(topology, rules):
    """Per rule the flow its conjunction leads to; the service and member clauses, one flow
    per distinct match with the conjunctions of every rule that has it. A packet may complete
    the conjunctions of several rules of its port: OVS takes any, and all commit in the
    port's zone and go on."""
    clauses: dict = {}  # (direction, match) -> conjunctions
    for r in rules:
        yield from _conjunction(r)
        members = tuple(topology.members(r.group.id)) if r.group else ()
        for clause, number in _clauses(r, members):
            clauses.setdefault(clause, set()).add(number)
    for (d, match), numbers in clauses.items():
        yield from _clause(d, match, tuple(sorted(numbers)))


@unit
def _conjunction(r: Rule):
    """The flow the rule's conjunction leads to."""
    d = r.direction
    yield d.rules.flow(CONJUNCTION_PRIORITY, Match(conj_id=r.key, eth_type=p.ETH_TYPE_IPV4),
                       d.allow(), cookie=r.key)


@memoized
def _clauses(r: Rule, members: tuple) -> tuple:
    """The rule's clauses: ((direction, match), (conjunction id, clause, clauses))."""
    d = r.direction
    parts = [((d, match), _numbers(r.clause(SERVICE_CLAUSE))) for match in r.services]
    parts += [((d, Match(eth_type=p.ETH_TYPE_IPV4, **prefix_match(d.peer_field, address))),
               _numbers(r.clause(r.member_clause))) for address in members]
    return tuple(parts)


def _numbers(conjunction: Conjunction) -> tuple:
    return conjunction.id, conjunction.clause, conjunction.n_clauses


@unit
def _clause(d: Direction, match: Match, conjunctions: tuple):
    yield d.rules.flow(CONJUNCTION_PRIORITY, match,
                       [Conjunction(*numbers) for numbers in conjunctions])


def _service_matches(d, rule) -> list:
    """What the rule allows above IP, and its remote prefix, as the matches of its service
    clause; none when it allows any protocol from any address."""
    peer = prefix_match(d.peer_field, rule.normalized_cidr) if rule.remote_ip_prefix else {}
    services = _services(rule)
    if services == [{}] and not peer:
        return []
    return [Match(eth_type=p.ETH_TYPE_IPV4, **service, **peer) for service in services]


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


