"""A flow-table simulator: an in-process model of OpenFlow tables (as Faucet's fakeoftable).

It is a Switch for the reconciler (apply/dump_flows) and runs a packet, given as a dict of OXM
fields, through the installed flows: highest-priority match per table, actions applied in order,
goto_table, Nicira resubmit and reg_move, dec_ttl, conntrack (in a zone given as a number or
by a register), and conjunctive matches as OVS's classifier finds them. The result is every
copy that leaves the switch: the output port and the headers it leaves with (a packet-in
also with the table, cookie and non-zero registers OVS gives with it).

It is as strict as Open vSwitch where a lenient model would let an app's bug through:

- A bundle is refused as a whole if a flow in it breaks a prerequisite (the rules are
  production's own, dragonflow/controller/prerequisites.py), has a goto_table that does not
  go forward, or if, once applied, two flows of one table and priority overlap: some packet
  matches both, and which one acts on it is undefined (OpenFlow 1.3, 6.4). Flows with only
  conjunction actions are the exception, since OVS combines them by design (ovs-fields(7),
  "Conjunctive Match Fields"). The same flow twice is one flow.
- A flow is kept, and dumped, in the form OVS keeps it: a masked field holds only the bits
  under its mask, an all-ones mask is a plain value and an all-zeros mask no field at all
  (lib/nx-match.c, nxm_put). A flow an app builds in any other form reads back different, and
  the reconciler rewrites it at every resync; a test that resyncs sees that as a non-empty
  diff. Deletes are matched in the same form, as OVS parses a delete's match.
- A packet enters with every register, metadata and conntrack field zero: a test cannot hand
  it a value that only the pipeline may set. The fields it carries must have their
  prerequisites (a tcp_dst needs ip_proto 6).

Conntrack, per zone: a connection is its 5-tuple (ICMP: protocol and addresses). A reply (a
packet of a committed connection's reverse) is +est+rpl, and makes the connection
established: from then on its original direction is +est too. Before any reply, and for any
packet of no committed connection, it is +new (the committing packet included, as OVS
recirculates it), and ct(commit) records it. An ICMP error (destination unreachable, source
quench, redirect, time exceeded, parameter problem) is never a connection of its own: it
carries in ``quoted`` the header of the packet it is about (a dict of the same fields, as
that packet was sent), and is +rel if that packet's connection is committed in the zone
(+rpl too when that packet went in the connection's original direction), else +inv, as Linux
and the userspace datapath mark an error about nothing they know. Nothing else is invalid
here: no TCP state is kept.

NAT, as Linux and the userspace datapath do it (addresses only: no port is translated here).
ct(commit, nat(src=A)) or nat(dst=A) on a new connection records it with that translation and
translates the packet; a connection's replies are then the reverse of the translated packet.
A ct(nat) translates a packet of a connection with NAT as the connection says: its original
direction as the first packet was, its replies back to the first packet's addresses. An ICMP
error related to it gets the address the NAT manipulates rewritten in its outer header, and
the packet it quotes restored to what that packet was before the translation, so the sender
of the first packet sees an error about the packet it sent. Packets of no connection, or of
one without NAT, pass a ct(nat) unchanged. Without ``table``, the translated packet goes on
with the actions after the ct() (the datapath translates it in place).
``flush_conntrack_zones`` forgets every connection of the zones given, as OVS's
NXT_CT_FLUSH_ZONE does.

VLANs: a packet with an 802.1Q header carries ``vlan_vid`` = OFPVID_PRESENT | id; one without
has no ``vlan_vid`` and matches vlan_vid=0 (OFPVID_NONE), as in OpenFlow 1.3. push_vlan adds a
header with id 0, set_field vlan_vid sets its id, pop_vlan removes it; the prerequisites
refuse a flow that pops or sets a header its packets do not have. One header at most (QinQ is
not modelled).

Lengths: a packet may carry ``frame_len``, the length in bytes of its whole frame as OVS's
check_pkt_larger measures it: from the Ethernet header on, its 802.1Q header included
(push_vlan adds 4 bytes, pop_vlan takes them off). A packet without one is a default ping's
(DEFAULT_FRAME_LEN). check_pkt_larger(length) sets its destination bit when the frame is
longer than ``length``.

Liveness: bundle_load (active_backup) writes the first of its members that is live to its
register, OFPP_NONE (0xffff) when none is. Every port is live unless ``live_ports`` (a set of
port numbers, given to the constructor or set at any time) says which are, as BFD's
forwarding state makes a port usable to a bundle in OVS.

reg_move copies the low ``n_bits`` of its source into the low bits of its destination, as
bits: a MAC or an address can go through a register and back.
"""
import collections
import concurrent.futures
import dataclasses
import ipaddress
from typing import Optional

from dragonflow.controller import flows as of
from dragonflow.controller import prerequisites

MAC_FIELDS = {'eth_src', 'eth_dst', 'arp_sha', 'arp_tha', 'ipv6_nd_sll', 'ipv6_nd_tll'}
MAX_RESUBMIT_DEPTH = 64
# Every packet starts with these at zero (ovs-fields(7): registers and metadata are zero when
# a packet enters; the conntrack fields are zero until ct()).
PIPELINE_FIELDS = ('metadata', *(f'reg{i}' for i in range(16)), 'ct_state', 'ct_zone',
                   'ct_mark', 'ct_label')
ICMP_ERRORS = {3, 4, 5, 11, 12}
# Bits of the maskable integer fields wider or narrower than 32 (registers, ct_state, ...).
INT_WIDTHS = {'metadata': 64, 'tunnel_id': 64, 'pkt_mark': 32, 'tcp_src': 16, 'tcp_dst': 16,
              'udp_src': 16, 'udp_dst': 16, 'sctp_src': 16, 'sctp_dst': 16, 'tcp_flags': 12,
              'vlan_vid': 13, 'eth_type': 16, 'ip_proto': 8, 'icmpv4_type': 8,
              'icmpv4_code': 8, 'arp_op': 16, 'ct_zone': 16, **{f'xreg{i}': 64 for i in range(8)}}
OFPVID_PRESENT = prerequisites.OFPVID_PRESENT
VLAN_HEADER_LEN = 4
# A packet's frame_len when it carries none: a default ping (ping -s 56): Ethernet 14 bytes,
# IPv4 20, ICMP 8, 56 of data.
DEFAULT_FRAME_LEN = 98
OFPP_NONE = 0xffff  # what bundle_load writes when no member is live (lib/bundle.c)
IP_FIELDS = {'ipv4_src', 'ipv4_dst', 'arp_spa', 'arp_tpa', 'tun_ipv4_src', 'tun_ipv4_dst'}


class OverlapError(ValueError):
    """Two flows of one table and priority match some packet in common."""


@dataclasses.dataclass(frozen=True)
class Delivery:
    """A copy that leaves the switch. One to the controller (a packet-in) also says what a
    packet-in says besides the packet: the table and cookie of the flow that sent it, and
    the pipeline fields that are not zero (OVS puts them in the packet-in's match). They
    are left out of comparisons."""
    port: int
    packet: dict
    table: Optional[int] = dataclasses.field(default=None, compare=False)
    cookie: int = dataclasses.field(default=0, compare=False)
    pipeline: dict = dataclasses.field(default_factory=dict, compare=False)


@dataclasses.dataclass(eq=False)
class Connection:
    """A committed connection: its 5-tuple (see _connection) as its first packet came, and
    as its replies come (that packet's reverse, after its NAT if it has one)."""
    original: tuple
    reply: tuple
    nat: Optional[of.Nat] = None
    replied: bool = False  # a reply has been seen: only then is it established (as in OVS)


class FlowTableSimulator:
    def __init__(self, live_ports: Optional[set] = None):
        """``live_ports``: the ports a bundle may choose; None: every port."""
        self.flows: dict[tuple, of.Flow] = {}
        self.live_ports = live_ports
        self.bundles = 0
        # conntrack zone -> {5-tuple: (its Connection, whether it is the reply's)}
        self.connections: dict[int, dict[tuple, tuple[Connection, bool]]] = {}

    # The Switch protocol of the reconciler.
    def dump_flows(self):
        return list(self.flows.values())

    def apply(self, deletes, adds, then=None):
        kept = [as_kept(flow) for flow in adds]
        for flow in kept:
            _check(flow)
        flows = dict(self.flows)
        for flow in deletes:
            flows.pop(as_kept(flow).key, None)  # a strict delete of a missing flow is a no-op
        for flow in kept:
            flows[flow.key] = flow
        _check_overlaps(flows.values(), {(f.table, f.priority) for f in kept})
        self.bundles += 1
        self.flows = flows
        if then:
            then()
        confirmation = concurrent.futures.Future()
        confirmation.set_result(None)
        return confirmation

    def flush_conntrack_zones(self, zones):
        """Forget every connection of the zones (OVS's NXT_CT_FLUSH_ZONE)."""
        for zone in zones:
            self.connections.pop(zone, None)

    # Running packets.
    def run(self, in_port: int, **packet) -> list[Delivery]:
        """Every copy of the packet that leaves the switch, in order."""
        out: list[Delivery] = []
        self._table(0, _arriving(in_port, packet), out, depth=0)
        return out

    def packet_out(self, actions, **packet) -> list[Delivery]:
        """Every copy that leaves when the controller sends the packet through ``actions``
        (in_port CONTROLLER)."""
        out: list[Delivery] = []
        self._actions(actions, _arriving(of.CONTROLLER, packet), out, depth=0)
        return out

    def outputs(self, in_port: int, **packet) -> list[int]:
        return [d.port for d in self.run(in_port, **packet)]

    def table(self, number: int) -> list[of.Flow]:
        return sorted((f for f in self.flows.values() if f.table == number),
                      key=lambda f: -f.priority)

    def _table(self, number, state, out, depth):
        if depth > MAX_RESUBMIT_DEPTH:
            raise RuntimeError('resubmit loop')
        flow = self._lookup(number, state)
        if flow is not None:
            self._actions(flow.actions, state, out, depth, flow)
        # A table miss drops the packet.

    def _lookup(self, number, state):
        """The flow that acts on the packet: the highest-priority matching flow without
        conjunctions, unless, at a higher priority, every clause of a conjunction matches and
        some flow without conjunctions matches the packet with conj_id set to its id. A
        conjunction without such a flow counts as no match."""
        table = self.table(number)
        matching = [f for f in table if _matches_all(state, f.match)]
        hard = next((f for f in matching if not _is_clause(f)), None)
        floor = hard.priority if hard else -1
        for priority in sorted({f.priority for f in matching if _is_clause(f)}, reverse=True):
            if priority <= floor:
                break
            for conj_id in _satisfied([f for f in matching if f.priority == priority]):
                found = next((f for f in table if not _is_clause(f)
                              and _matches_all(dict(state, conj_id=conj_id), f.match)), None)
                if found:
                    return found
        return hard

    def _actions(self, actions, state, out, depth, flow=None):
        for action in actions:
            if isinstance(action, of.SetField):
                if action.field == 'vlan_vid' and 'vlan_vid' not in state:
                    raise ValueError(f'set_field vlan_vid of an untagged packet: {state}')
                state[action.field] = action.value
            elif isinstance(action, of.PushVlan):
                if 'vlan_vid' in state:
                    raise NotImplementedError('a second 802.1Q header (QinQ)')
                state['vlan_vid'] = OFPVID_PRESENT
                _resize(state, VLAN_HEADER_LEN)
            elif isinstance(action, of.PopVlan):
                if state.pop('vlan_vid', None) is None:
                    raise ValueError(f'pop_vlan of an untagged packet: {state}')
                _resize(state, -VLAN_HEADER_LEN)
            elif isinstance(action, of.Move):
                _move(state, action)
            elif isinstance(action, of.BundleLoad):
                state[action.dst] = next(
                    (port for port in action.members
                     if self.live_ports is None or port in self.live_ports), OFPP_NONE)
            elif isinstance(action, of.CheckPktLarger):
                larger = state.get('frame_len', DEFAULT_FRAME_LEN) > action.length
                state[action.dst] = state[action.dst] & ~(1 << action.bit) | \
                    larger << action.bit
            elif isinstance(action, of.DecTTL):
                state['ip_ttl'] -= 1
                if state['ip_ttl'] <= 0:
                    return
            elif isinstance(action, of.Output):
                port = state['in_port'] if action.port == of.IN_PORT else action.port
                if port != state['in_port'] or action.port == of.IN_PORT:
                    out.append(Delivery(port, _headers(state)))
            elif isinstance(action, of.Resubmit):
                self._table(action.table, state, out, depth + 1)
            elif isinstance(action, of.Goto):
                self._table(action.table, state, out, depth + 1)
            elif isinstance(action, of.ToController):
                out.append(Delivery(of.CONTROLLER, _headers(state),
                                    flow.table if flow else None, flow.cookie if flow else 0,
                                    {k: state[k] for k in PIPELINE_FIELDS if state[k]}))
            elif isinstance(action, of.Conntrack):
                self._conntrack(action, state, out, depth)
            else:
                raise NotImplementedError(action)

    def _conntrack(self, action, state, out, depth):
        """Track the packet in its zone, NAT it if asked (see the module docstring); a zone
        named by a register is its low 16 bits."""
        number = state[action.zone] & 0xffff if isinstance(action.zone, str) else action.zone
        zone = self.connections.setdefault(number, {})
        if action.table is not None:
            state = dict(state)  # the recirculated packet; this one goes no further
        if _is_icmp_error(state):
            found = zone.get(_connection(state['quoted'])[::-1]) if state.get('quoted') \
                else None
            ct = of.CT_RELATED | (of.CT_REPLY if found[1] else 0) if found else of.CT_INVALID
            if found and action.nat:
                _translate_error(state, *found)
        else:
            key = _connection(state)
            found = zone.get(key)
            if found is None and action.commit:
                connection = _committed(key, action.nat)
                zone[key] = (connection, False)
                zone.setdefault(connection.reply, (connection, True))
                found = zone[key]
            if found and found[1]:
                found[0].replied = True
            # A connection is new until a reply is seen, its committing packet included.
            ct = of.CT_NEW if not found or not found[0].replied else \
                of.CT_ESTABLISHED | (of.CT_REPLY if found[1] else 0)
            if found and action.nat:
                _translate(state, *found)
        if action.table is not None:
            state.update(ct_state=of.CT_TRACKED | ct, ct_zone=number)
            self._table(action.table, state, out, depth + 1)


def _resize(state: dict, change: int) -> None:
    if 'frame_len' in state:
        state['frame_len'] += change


def _move(state: dict, move: of.Move) -> None:
    """reg_move src[0..n_bits-1] -> dst[0..n_bits-1]."""
    if state.get(move.src) is None:
        raise ValueError(f'{move} of a packet without {move.src}: {state}')
    mask = (1 << move.n_bits) - 1
    bits = _bits(move.src, state[move.src]) & mask
    old = state.get(move.dst)
    old_bits = 0 if old is None else _bits(move.dst, old)
    state[move.dst] = _as_field(move.dst, old_bits & ~mask | bits)


def _width(field: str) -> int:
    if field in MAC_FIELDS:
        return 48
    if field in IP_FIELDS:
        return 32
    if field.startswith('ipv6_') and field.endswith(('_src', '_dst', 'target')):
        return 128
    return INT_WIDTHS.get(field, 32)


def _as_field(field: str, bits: int):
    """``bits`` in the form a packet carries the field: a MAC or an address string, or an
    int."""
    if field in MAC_FIELDS:
        return _text(field, bits, '')
    if field in IP_FIELDS:
        return str(ipaddress.IPv4Address(bits))
    return bits


def _committed(key: tuple, nat: Optional[of.Nat]) -> Connection:
    """The connection a new packet with this 5-tuple commits, NATed as ``nat`` says."""
    if nat is None or nat.kind is None:
        return Connection(key, key[::-1])
    translated = (nat.address, *key[1:]) if nat.kind == 'src' else (*key[:4], nat.address)
    return Connection(key, translated[::-1], nat)


# The addresses of a 5-tuple, by the packet field that holds them.
_ADDRESSES = (('ipv4_src', 0), ('ipv4_dst', 4))


def _translate(state: dict, connection: Connection, is_reply: bool) -> None:
    """A packet of the connection, as its NAT makes it: the original direction looks like
    the reverse of the replies, the replies like the reverse of the original."""
    if connection.nat is None:
        return
    target = (connection.original if is_reply else connection.reply)[::-1]
    for field, index in _ADDRESSES:
        state[field] = target[index]


def _translate_error(state: dict, connection: Connection, is_reply: bool) -> None:
    """An ICMP error related to a connection with NAT (going in its reply direction if
    ``is_reply``): the address its NAT manipulates in that direction rewritten in the outer
    header (the other may be a router's on the way), and the packet it quotes, which went
    the other way, restored to what it was before its translation."""
    if connection.nat is None:
        return
    ahead, behind = (connection.reply, connection.original) if is_reply else \
        (connection.original, connection.reply)
    target = behind[::-1]
    quoted = dict(state['quoted'])
    for field, index in _ADDRESSES:
        if ahead[index] != target[index]:
            state[field] = target[index]
        if behind[index] != ahead[::-1][index]:
            quoted[field] = behind[index]
    state['quoted'] = quoted


def as_kept(flow: of.Flow) -> of.Flow:
    """The flow as OVS keeps it and dumps it (see the module docstring)."""
    match = of.Match.from_pairs(
        kept for kept in (_kept(field, value) for field, value in flow.match) if kept)
    if match == flow.match:
        return flow
    return dataclasses.replace(flow, match=match)


def _kept(field, value) -> Optional[tuple]:
    """A match field as OVS keeps it: None if it matches nothing."""
    if not isinstance(value, tuple):
        return field, value
    value, mask = value
    mask_bits = _bits(field, mask)
    bits = _bits(field, value) & mask_bits
    if mask_bits == 0:
        return None
    if mask_bits == _all_ones(field, value):
        return field, _text(field, bits, value)
    return field, (_text(field, bits, value), mask)


def _all_ones(field, sample) -> int:
    """The mask of every bit of the field."""
    if field in MAC_FIELDS:
        return (1 << 48) - 1
    if isinstance(sample, str):
        return (1 << ipaddress.ip_address(sample).max_prefixlen) - 1
    return (1 << INT_WIDTHS.get(field, 32)) - 1


def _text(field, bits: int, sample):
    """``bits`` written as ``sample`` is: a MAC or an IP address string, or an int."""
    if field in MAC_FIELDS:
        return ':'.join(f'{b:02x}' for b in bits.to_bytes(6, 'big'))
    if isinstance(sample, str):
        version = ipaddress.ip_address(sample).version
        return str(ipaddress.IPv4Address(bits) if version == 4 else ipaddress.IPv6Address(bits))
    return bits


def _check(flow: of.Flow) -> None:
    """Refuse what OVS refuses (OFPBMC_BAD_PREREQ, OFPBAC_MATCH_INCONSISTENT, OFPBAC_BAD_SET_LEN,
    OFPBIC_BAD_TABLE_ID)."""
    prerequisites.check(flow.match, flow.actions)
    for action in flow.actions:
        if isinstance(action, of.Goto) and action.table <= flow.table:
            raise ValueError(f'goto_table must go forward: {flow}')
        if isinstance(action, of.Move) and \
                action.n_bits > min(_width(action.src), _width(action.dst)):
            # lib/ofp-actions.c, check_REG_MOVE: mf_check_src/dst of the subfields
            raise ValueError(f'{action}: more bits than its fields have')


def _check_overlaps(flows, groups: set) -> None:
    """Refuse two flows of one of these (table, priority) groups that overlap."""
    by_group = collections.defaultdict(list)
    for flow in flows:
        if (flow.table, flow.priority) in groups and not _is_clause(flow):
            by_group[flow.table, flow.priority].append(flow)
    for group in by_group.values():
        pair = _first_overlap(group, frozenset())
        if pair:
            raise OverlapError('flows of one table and priority match a packet in common, '
                               f'and OVS may take either: {pair[0]} and {pair[1]}')


def _first_overlap(flows: list, skip: frozenset) -> Optional[tuple]:
    """Two overlapping flows, if any. Flows are split by the value of the field most of them
    match exactly, so only flows that agree on it (or do not match it) are compared."""
    if len(flows) < 16:
        return _pairwise(flows)
    counts = collections.Counter(field for f in flows for field, value in f.match
                                 if field not in skip and not isinstance(value, tuple))
    if not counts:
        return _pairwise(flows)
    field = max(counts, key=counts.get)
    buckets, loose = collections.defaultdict(list), []
    for flow in flows:
        value = flow.match.get(field)
        if value is None or isinstance(value, tuple):
            loose.append(flow)
        else:
            buckets[_bits(field, value)].append(flow)
    for bucket in buckets.values():
        pair = _first_overlap(bucket + loose, skip | {field})
        if pair:
            return pair
    return None


def _pairwise(flows: list) -> Optional[tuple]:
    for i, first in enumerate(flows):
        for second in flows[i + 1:]:
            if _overlap(first.match, second.match):
                return first, second
    return None


def _overlap(a: of.Match, b: of.Match) -> bool:
    """Whether some packet matches both. A field only one of them matches leaves the other
    free, and the prerequisites put every field's context (eth_type, ip_proto) in its
    match, so the fields both match decide it."""
    theirs = dict(b)
    for field, value in a:
        if field in theirs:
            (bits, mask), (other, other_mask) = _masked(field, value), \
                _masked(field, theirs[field])
            if (bits ^ other) & mask & other_mask:
                return False
    return True


def _masked(field, value) -> tuple:
    """(bits, mask) of a match value; a plain value has every bit."""
    if isinstance(value, tuple):
        return _bits(field, value[0]), _bits(field, value[1])
    return _bits(field, value), -1


def _bits(field, value) -> int:
    if isinstance(value, int):
        return value
    if field in MAC_FIELDS:
        return int(value.replace(':', ''), 16)
    return int(ipaddress.ip_address(value))


def _arriving(in_port: int, packet: dict) -> dict:
    """A packet's state as it enters the switch: registers, metadata and conntrack clear."""
    carried = sorted(set(PIPELINE_FIELDS) & packet.keys())
    if carried:
        raise ValueError(f'a packet cannot enter with {carried}: the pipeline sets them')
    for field in packet:
        needed = field in prerequisites.FIELDS and prerequisites.unmet(field, packet)
        if needed:
            raise ValueError(f'a packet with {field} must be {needed}: {packet}')
    vlan = packet.get('vlan_vid')
    if vlan is not None and not OFPVID_PRESENT <= vlan <= OFPVID_PRESENT | 0xfff:
        raise ValueError(f'a tagged packet has vlan_vid OFPVID_PRESENT | id, not {vlan}; an '
                         'untagged one none')
    length = packet.get('frame_len')
    if length is not None and length < 14 + (VLAN_HEADER_LEN if vlan is not None else 0):
        raise ValueError(f'a frame_len of {length} has no room for its Ethernet header')
    return {'in_port': in_port, 'ip_ttl': 64, **dict.fromkeys(PIPELINE_FIELDS, 0), **packet}


def _is_clause(flow: of.Flow) -> bool:
    return any(isinstance(a, of.Conjunction) for a in flow.actions)


def _satisfied(clauses: list[of.Flow]) -> list[int]:
    """The ids of the conjunctions whose every clause is among these matching flows."""
    seen: dict[int, set] = {}
    sizes: dict[int, int] = {}
    for flow in clauses:
        for conjunction in flow.actions:
            seen.setdefault(conjunction.id, set()).add(conjunction.clause)
            sizes[conjunction.id] = conjunction.n_clauses
    return sorted(i for i, found in seen.items() if len(found) == sizes[i])


def _is_icmp_error(state) -> bool:
    return state.get('ip_proto') == prerequisites.IP_PROTO_ICMP and \
        state.get('icmpv4_type') in ICMP_ERRORS


def _connection(state) -> tuple:
    """(source address, source port, protocol, destination port, destination address):
    reversed, it is the reply's."""
    protocol = state.get('ip_proto', 0)
    ports = [state.get(f'{name}_{end}', 0) for end in ('src', 'dst')
             for name in ('tcp', 'udp', 'sctp') if f'{name}_{end}' in state] or [0, 0]
    return (state.get('ipv4_src'), ports[0], protocol, ports[-1], state.get('ipv4_dst'))


def _headers(state: dict) -> dict:
    return {k: v for k, v in state.items() if k not in PIPELINE_FIELDS}


def _matches_all(state, match) -> bool:
    return all(_matches(state, field, value) for field, value in match)


def _matches(state, field, value) -> bool:
    actual = state.get(field, 0 if field == 'vlan_vid' else None)  # untagged: OFPVID_NONE
    if actual is None:
        return False
    if isinstance(value, tuple):
        bits, mask = _masked(field, value)
        return _bits(field, actual) & mask == bits & mask
    return _normal(actual) == value


def _normal(value):
    return value.lower() if isinstance(value, str) else value
