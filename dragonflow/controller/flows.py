"""Flows as plain values: what apps produce, what the reconciler diffs and installs.

A flow is identified by (table, priority, match), as OpenFlow identifies it; two flows with the
same identity and different actions are a bug in the apps. Matches and actions use os-ken's
OXM field names (eth_dst, ipv4_dst, reg7, metadata, tunnel_id, ...), and values in the form
os-ken parses them back from the switch (MACs lower-case strings, IPv4 dotted strings, masked
fields as (value, mask)), so flows read from br-int compare equal to flows the apps made.
Conjunctive matches use Nicira's ``conj_id`` match field and the Conjunction action.
"""
import dataclasses
import functools
import ipaddress
from typing import Optional, Union

# Cookie layout: the owning app in the top byte, the owning object's data-plane key below.
COOKIE_APP_SHIFT = 56
COOKIE_OBJECT_MASK = (1 << COOKIE_APP_SHIFT) - 1

MatchValue = Union[int, str, tuple]


class Match(tuple):
    """An immutable, canonical (sorted) set of (field, value) pairs."""

    def __new__(cls, **fields: MatchValue):
        return super().__new__(cls, sorted((k, _canonical(v)) for k, v in fields.items()))

    @classmethod
    def from_pairs(cls, pairs):
        return cls(**dict(pairs))

    def __getitem__(self, field):  # type: ignore[override]
        if isinstance(field, int):
            return tuple.__getitem__(self, field)
        return dict(self)[field]

    def get(self, field, default=None):
        return dict(self).get(field, default)

    def fields(self) -> set[str]:
        return {k for k, _ in self}

    def __repr__(self):
        return 'Match(' + ', '.join(f'{k}={v!r}' for k, v in self) + ')'


def prefix_match(field: str, prefix) -> dict:
    """Match ``field`` against an IP address or prefix (a string or an ipaddress object; host
    bits may be set) in the one form the switch reads it back in, so a resync finds the flow
    unchanged: OVS keeps only the bits under the mask (10.0.0.5/24 is 10.0.0.0/24), reports
    an all-ones mask as a plain value (a /32 is an address) and an all-zeros mask as no field
    at all (a /0 matches anything: lib/nx-match.c, nxm_put). Use it as ``Match(**...)``."""
    return dict(_prefix_match(field, prefix))


@functools.lru_cache(maxsize=1 << 16)
def _prefix_match(field: str, prefix) -> tuple:
    network = ipaddress.ip_network(prefix, strict=False)
    if network.prefixlen == 0:
        return ()
    address = str(network.network_address)
    if network.prefixlen == network.max_prefixlen:
        return ((field, address),)
    return ((field, (address, str(network.netmask))),)


def _canonical(value: MatchValue) -> MatchValue:
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, tuple):
        return tuple(_canonical(v) for v in value)
    return value


@dataclasses.dataclass(frozen=True)
class Output:
    port: int


@dataclasses.dataclass(frozen=True)
class SetField:
    field: str
    value: Union[int, str]

    def __post_init__(self):
        object.__setattr__(self, 'value', _canonical(self.value))


@dataclasses.dataclass(frozen=True)
class Move:
    """Copy ``n_bits`` from ``src`` to ``dst`` (Nicira reg_move)."""
    src: str
    dst: str
    n_bits: int


@dataclasses.dataclass(frozen=True)
class DecTTL:
    pass


@dataclasses.dataclass(frozen=True)
class Resubmit:
    """Run the packet through ``table`` and come back (Nicira resubmit)."""
    table: int


@dataclasses.dataclass(frozen=True)
class Goto:
    """Continue in ``table``; only as the last action (OpenFlow goto_table instruction)."""
    table: int


@dataclasses.dataclass(frozen=True)
class ToController:
    """Send the packet to the controller (packet-in)."""
    max_len: int = 0xffff


@dataclasses.dataclass(frozen=True)
class PushVlan:
    """Push an 802.1Q header (its VLAN id is then set with SetField('vlan_vid', 0x1000|id))."""
    ethertype: int = 0x8100


@dataclasses.dataclass(frozen=True)
class PopVlan:
    """Pop the outer 802.1Q header."""


@dataclasses.dataclass(frozen=True)
class BundleLoad:
    """Nicira bundle_load, active_backup: the first of ``members`` (OpenFlow port numbers)
    that is live (a port with BFD: while its session says forwarding) is written to the
    register ``dst``; OFPP_NONE (0xffff) when none is."""
    members: tuple
    dst: str = 'reg3'


@dataclasses.dataclass(frozen=True)
class CheckPktLarger:
    """OVS check_pkt_larger: bit ``bit`` of register ``dst`` = whether the packet (its whole
    frame) is longer than ``length`` bytes."""
    length: int
    dst: str = 'reg0'
    bit: int = 0


@dataclasses.dataclass(frozen=True)
class Nat:
    """The nat() of a ct action. With no ``kind``, a packet of a connection that has NAT is
    translated as the connection says (and the inner headers of an ICMP error related to it);
    others pass unchanged. With ``kind`` 'src' or 'dst' (only with commit), a new connection
    gets its source or destination address rewritten to ``address``."""
    kind: Optional[str] = None
    address: Optional[str] = None

    def __post_init__(self):
        if (self.kind is None) != (self.address is None) or \
                self.kind not in (None, 'src', 'dst'):
            raise ValueError(f'OVS refuses {self}')


@dataclasses.dataclass(frozen=True)
class Conntrack:
    """Send the packet through connection tracking in ``zone``: ``commit`` records its
    connection; with ``table`` the packet continues there with ct_state set (recirculation),
    without it the actions after this one go on. The zone (16 bits) is a number, or the name
    of a register whose low 16 bits hold it, for a flow shared by packets of several zones.
    ``nat``: see Nat."""
    zone: Union[int, str]
    commit: bool = False
    table: Optional[int] = None
    nat: Optional[Nat] = None

    def __post_init__(self):
        if self.nat is not None and self.nat.kind is not None and not self.commit:
            raise ValueError(f'a NAT of a new connection needs commit: {self}')


@dataclasses.dataclass(frozen=True)
class Conjunction:
    """Clause ``clause`` of ``n_clauses`` (1-based, as ovs-ofctl writes it) of conjunctive match
    ``id``. A packet matches ``conj_id=id`` when, for every clause, some flow with the same table
    and priority that carries this clause matches it; the flow matching ``conj_id=id`` then
    acts. A flow with conjunctions has no other actions."""
    id: int
    clause: int
    n_clauses: int

    def __post_init__(self):
        if not (0 <= self.id < 1 << 32 and 1 <= self.clause <= self.n_clauses
                and 2 <= self.n_clauses <= 64):
            raise ValueError(f'OVS refuses {self}')


Action = Union[Output, SetField, Move, DecTTL, Resubmit, Goto, ToController, Conntrack,
               Conjunction, PushVlan, PopVlan, BundleLoad, CheckPktLarger]

# ct_state bits (Nicira): match ("+trk+est") as (bits, mask).
CT_NEW, CT_ESTABLISHED, CT_RELATED, CT_REPLY, CT_INVALID, CT_TRACKED = 1, 2, 4, 8, 16, 32


def ct_state(*, set_bits: int = 0, clear_bits: int = 0) -> tuple:
    """A ct_state match: these bits set, those clear, others ignored."""
    return (set_bits, set_bits | clear_bits)

# OpenFlow reserved ports: send the packet back out of the port it came in on; the
# controller (the in_port of a packet the controller sends, and the output to it).
IN_PORT = 0xfffffff8
CONTROLLER = 0xfffffffd


@dataclasses.dataclass(frozen=True)
class Flow:
    table: int
    priority: int
    match: Match
    actions: tuple = ()
    cookie: int = 0

    def __post_init__(self):
        for action in self.actions[:-1]:
            if isinstance(action, Goto):
                raise ValueError(f'Goto must be the last action: {self}')
        conjunctions = [a for a in self.actions if isinstance(a, Conjunction)]
        if conjunctions:
            if len(conjunctions) != len(self.actions):
                raise ValueError(f'a flow with conjunctions has no other actions: {self}')
            # Their order means nothing to the switch, so one canonical order makes a flow
            # read back compare equal to the flow an app made.
            object.__setattr__(self, 'actions', tuple(sorted(
                conjunctions, key=lambda c: (c.id, c.clause))))

    def with_cookie(self, cookie: int) -> 'Flow':
        """The same flow under another cookie, not checked again: every flow of a pass is
        stamped with its app's id, and building each one twice was a fifth of the apps' time."""
        flow = object.__new__(Flow)
        flow.__dict__.update(self.__dict__, cookie=cookie)
        return flow

    @functools.cached_property
    def key(self) -> tuple:
        """The identity of the flow in the switch."""
        return (self.table, self.priority, self.match)

    @property
    def app_id(self) -> int:
        return self.cookie >> COOKIE_APP_SHIFT


def cookie(app_id: int, object_key: int = 0) -> int:
    return (app_id << COOKIE_APP_SHIFT) | (object_key & COOKIE_OBJECT_MASK)
