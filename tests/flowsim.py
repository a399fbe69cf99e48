"""A flow-table simulator: an in-process model of OpenFlow tables (as Faucet's fakeoftable).

It is a Switch for the reconciler (apply/dump_flows) and runs a packet, given as a dict of OXM
fields, through the installed flows: highest-priority match per table, actions applied in order,
goto_table, Nicira resubmit and reg_move, dec_ttl, conntrack (in a zone given as a number or
by a register), and conjunctive matches as OVS's classifier finds them. The result is every
copy that leaves the switch: the output port and the headers it leaves with.

Like the switch, it refuses a bundle (as a whole) holding a flow that OVS would refuse: a field
matched without its eth_type prerequisite, ct() without IP in the match, or a goto_table that
does not go forward.
"""
import concurrent.futures
import dataclasses
import ipaddress

from dragonflow.controller import flows as of

MAC_FIELDS = {'eth_src', 'eth_dst', 'arp_sha', 'arp_tha'}
IPV4_FIELDS = {'ipv4_src', 'ipv4_dst', 'arp_spa', 'arp_tpa'}
MAX_RESUBMIT_DEPTH = 64
ETH_TYPE_IPV4, ETH_TYPE_ARP, ETH_TYPE_IPV6 = 0x0800, 0x0806, 0x86dd
PREREQUISITES = {
    'ipv4_src': {ETH_TYPE_IPV4}, 'ipv4_dst': {ETH_TYPE_IPV4},
    'ip_proto': {ETH_TYPE_IPV4, ETH_TYPE_IPV6},
    'arp_op': {ETH_TYPE_ARP}, 'arp_spa': {ETH_TYPE_ARP}, 'arp_tpa': {ETH_TYPE_ARP},
    'arp_sha': {ETH_TYPE_ARP}, 'arp_tha': {ETH_TYPE_ARP},
}


@dataclasses.dataclass(frozen=True)
class Delivery:
    port: int
    packet: dict


class FlowTableSimulator:
    def __init__(self):
        self.flows: dict[tuple, of.Flow] = {}
        self.bundles = 0
        self.connections: dict[int, set] = {}  # conntrack zone -> committed connections

    # The Switch protocol of the reconciler.
    def dump_flows(self):
        return list(self.flows.values())

    def apply(self, deletes, adds, then=None):
        for flow in adds:
            _check(flow)
        self.bundles += 1
        for flow in deletes:
            self.flows.pop(flow.key, None)  # a strict delete of a missing flow is a no-op
        for flow in adds:
            self.flows[flow.key] = flow
        if then:
            then()
        confirmation = concurrent.futures.Future()
        confirmation.set_result(None)
        return confirmation

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
            self._actions(flow.actions, state, out, depth)
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

    def _actions(self, actions, state, out, depth):
        for action in actions:
            if isinstance(action, of.SetField):
                state[action.field] = action.value
            elif isinstance(action, of.Move):
                state[action.dst] = state.get(action.src)
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
                out.append(Delivery(of.CONTROLLER, _headers(state)))
            elif isinstance(action, of.Conntrack):
                self._conntrack(action, state, out, depth)
            else:
                raise NotImplementedError(action)

    def _conntrack(self, action, state, out, depth):
        """A connection is its 5-tuple (ICMP: protocol and addresses); a packet of a committed
        one, or of its reverse (a reply), is established; anything else is new. A zone named
        by a register is its low 16 bits."""
        number = state.get(action.zone, 0) & 0xffff if isinstance(action.zone, str) \
            else action.zone
        zone = self.connections.setdefault(number, set())
        key = _connection(state)
        if action.commit and key[::-1] not in zone:
            zone.add(key)
        if action.table is not None:
            known = key in zone or key[::-1] in zone
            state = dict(state, ct_state=of.CT_TRACKED | (
                of.CT_ESTABLISHED | (of.CT_REPLY if key[::-1] in zone else 0) if known
                else of.CT_NEW))
            self._table(action.table, state, out, depth + 1)


def _arriving(in_port: int, packet: dict) -> dict:
    """A packet's state as it enters the switch: registers and metadata clear."""
    return {'in_port': in_port, 'metadata': 0, 'ip_ttl': 64, **packet}


def _check(flow: of.Flow) -> None:
    """Refuse what OVS refuses (OFPBMC_BAD_PREREQ, OFPBIC_BAD_TABLE_ID)."""
    eth_type = flow.match.get('eth_type')
    for field in flow.match.fields():
        if field in PREREQUISITES and eth_type not in PREREQUISITES[field]:
            raise ValueError(f'{field} matched without its eth_type prerequisite: {flow}')
    for action in flow.actions:
        if isinstance(action, of.Goto) and action.table <= flow.table:
            raise ValueError(f'goto_table must go forward: {flow}')
        if isinstance(action, of.Conntrack) and eth_type not in (ETH_TYPE_IPV4, ETH_TYPE_IPV6):
            raise ValueError(f'ct() without IP in the match: {flow}')


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


def _connection(state) -> tuple:
    """(source address, source port, protocol, destination port, destination address):
    reversed, it is the reply's."""
    protocol = state.get('ip_proto', 0)
    ports = [state.get(f'{name}_{end}', 0) for end in ('src', 'dst')
             for name in ('tcp', 'udp', 'sctp') if f'{name}_{end}' in state] or [0, 0]
    return (state.get('ipv4_src'), ports[0], protocol, ports[-1], state.get('ipv4_dst'))


def _headers(state: dict) -> dict:
    return {k: v for k, v in state.items()
            if not k.startswith('reg') and k not in ('metadata', 'ct_state')}


def _matches_all(state, match) -> bool:
    return all(_matches(state, field, value) for field, value in match)


def _matches(state, field, value) -> bool:
    actual = state.get(field)
    if actual is None:
        return False
    if isinstance(value, tuple):
        expected, mask = value
        return _masked(field, actual, mask) == _masked(field, expected, mask)
    return _normal(field, actual) == _normal(field, value)


def _normal(field, value):
    return value.lower() if isinstance(value, str) else value


def _masked(field, value, mask):
    if field in MAC_FIELDS:
        return int(value.replace(':', ''), 16) & int(mask.replace(':', ''), 16)
    if field in IPV4_FIELDS:
        return int(ipaddress.ip_address(value)) & int(ipaddress.ip_address(mask))
    return value & mask
