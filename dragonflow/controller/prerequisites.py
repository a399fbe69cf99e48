"""OpenFlow's prerequisites: what a flow must match before the switch lets it match a field,
write one, or send the packet through conntrack.

A TCP port means nothing in an ARP frame, so OpenFlow 1.3 (7.2.3.6, "Flow Match Field
Prerequisite") lets a flow match tcp_dst only if it also matches an IP eth_type and
ip_proto=6, and Open vSwitch refuses the flow_mod otherwise (OFPBMC_BAD_PREREQ). The same
holds for an action: set_field or reg_move on a field whose prerequisites the match does not
meet, dec_ttl or ct() on a flow that does not match IP, are refused (OFPBAC_MATCH_INCONSISTENT;
lib/ofp-actions.c: check_SET_FIELD, mf_check_src/mf_check_dst, check_DEC_TTL, check_CT).
VLAN actions need the header they act on (a pop_vlan or a set_field vlan_vid on a packet the
match does not say is tagged, and not pushed by an earlier action), and a ct()'s nat() to an
IPv4 address needs IPv4 (check_NAT).

This module is the one statement of those rules: pipeline.Table.flow refuses a flow that
breaks one when it is built, and the flow-table simulator (tests/flowsim.py) when it is
installed. The fields are os-ken's names; their prerequisites are the "Prereqs" column of
ovs-fields(7). A field not listed here is refused rather than let through unchecked.
"""
import dataclasses

from dragonflow.controller import flows as of

ETH_TYPE_IPV4, ETH_TYPE_ARP, ETH_TYPE_RARP, ETH_TYPE_IPV6 = 0x0800, 0x0806, 0x8035, 0x86dd
ETH_TYPE_MPLS = (0x8847, 0x8848)
IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP, IP_PROTO_ICMPV6, IP_PROTO_SCTP = 1, 6, 17, 58, 132
ND_SOLICIT, ND_ADVERT = 135, 136


class PrerequisiteError(ValueError):
    """The switch would refuse this flow."""


@dataclasses.dataclass(frozen=True)
class Prerequisite:
    """What the match must also say: for each of ``requires``' fields, one of its values
    (exactly: eth_type and ip_proto cannot be masked)."""
    name: str
    requires: tuple = ()  # ((field, frozenset of values), ...), all of them

    def met_by(self, fields: dict) -> bool:
        for field, values in self.requires:
            if fields.get(field) not in values:
                return False
        return True

    def __str__(self):
        return self.name


def _needs(name: str, *requires) -> Prerequisite:
    return Prerequisite(name, tuple((field, frozenset(values)) for field, values in requires))


NONE = None
IPV4 = _needs('IPv4 (eth_type=0x0800)', ('eth_type', {ETH_TYPE_IPV4}))
IPV6 = _needs('IPv6 (eth_type=0x86dd)', ('eth_type', {ETH_TYPE_IPV6}))
IP_ANY = _needs('IPv4 or IPv6', ('eth_type', {ETH_TYPE_IPV4, ETH_TYPE_IPV6}))
ARP = _needs('ARP (eth_type=0x0806 or 0x8035)', ('eth_type', {ETH_TYPE_ARP, ETH_TYPE_RARP}))
MPLS = _needs('MPLS', ('eth_type', ETH_TYPE_MPLS))
TCP = _needs('TCP (IP, ip_proto=6)', *IP_ANY.requires, ('ip_proto', {IP_PROTO_TCP}))
UDP = _needs('UDP (IP, ip_proto=17)', *IP_ANY.requires, ('ip_proto', {IP_PROTO_UDP}))
SCTP = _needs('SCTP (IP, ip_proto=132)', *IP_ANY.requires, ('ip_proto', {IP_PROTO_SCTP}))
ICMPV4 = _needs('ICMPv4 (IPv4, ip_proto=1)', *IPV4.requires, ('ip_proto', {IP_PROTO_ICMP}))
ICMPV6 = _needs('ICMPv6 (IPv6, ip_proto=58)', *IPV6.requires, ('ip_proto', {IP_PROTO_ICMPV6}))
ND = _needs('ND (ICMPv6 type 135 or 136, code 0)', *ICMPV6.requires,
            ('icmpv6_type', {ND_SOLICIT, ND_ADVERT}), ('icmpv6_code', {0}))
ND_SOLICIT_ONLY = _needs('ND solicit (ICMPv6 type 135, code 0)', *ICMPV6.requires,
                         ('icmpv6_type', {ND_SOLICIT}), ('icmpv6_code', {0}))
ND_ADVERT_ONLY = _needs('ND advert (ICMPv6 type 136, code 0)', *ICMPV6.requires,
                        ('icmpv6_type', {ND_ADVERT}), ('icmpv6_code', {0}))

# Field -> its prerequisite (ovs-fields(7)). Metadata, registers, tunnel and conntrack state
# fields have none: a flow may match them in any combination. (The conntrack tuple fields,
# ct_nw_src and the like, need a valid ct_state; os-ken has no names for them.)
FIELDS: dict = {
    **dict.fromkeys(('in_port', 'in_phy_port', 'metadata', 'pkt_mark', 'conj_id',
                     'tunnel_id', 'tun_ipv4_src', 'tun_ipv4_dst', 'tun_ipv6_src',
                     'tun_ipv6_dst', 'ct_state', 'ct_zone', 'ct_mark', 'ct_label',
                     'eth_src', 'eth_dst', 'eth_type', 'vlan_vid',
                     *(f'reg{i}' for i in range(16)), *(f'xreg{i}' for i in range(8))), NONE),
    **dict.fromkeys(('ipv4_src', 'ipv4_dst'), IPV4),
    **dict.fromkeys(('ipv6_src', 'ipv6_dst', 'ipv6_flabel'), IPV6),
    **dict.fromkeys(('ip_proto', 'ip_dscp', 'ip_ecn', 'nw_ttl'), IP_ANY),
    **dict.fromkeys(('arp_op', 'arp_spa', 'arp_tpa', 'arp_sha', 'arp_tha'), ARP),
    **dict.fromkeys(('mpls_label', 'mpls_tc', 'mpls_bos'), MPLS),
    **dict.fromkeys(('tcp_src', 'tcp_dst', 'tcp_flags'), TCP),
    **dict.fromkeys(('udp_src', 'udp_dst'), UDP),
    **dict.fromkeys(('sctp_src', 'sctp_dst'), SCTP),
    **dict.fromkeys(('icmpv4_type', 'icmpv4_code'), ICMPV4),
    **dict.fromkeys(('icmpv6_type', 'icmpv6_code'), ICMPV6),
    'ipv6_nd_target': ND, 'ipv6_nd_sll': ND_SOLICIT_ONLY, 'ipv6_nd_tll': ND_ADVERT_ONLY,
}
# Matchable but not writable (the "RW?" column); OpenFlow forbids setting in_port outright.
_UNKNOWN = object()
READ_ONLY = frozenset({'in_port', 'in_phy_port', 'eth_type', 'ip_proto', 'tcp_flags',
                       'mpls_bos', 'conj_id', 'ct_state', 'ct_zone'})


def prerequisite(field: str):
    """The field's prerequisite (NONE if it has none); an unknown field is refused."""
    needed = FIELDS.get(field, _UNKNOWN)
    if needed is _UNKNOWN:
        raise PrerequisiteError(f'no known prerequisites for field {field}')
    return needed


def unmet(field: str, fields: dict):
    """The field's prerequisite if ``fields`` (a match or a packet) does not meet it."""
    needed = prerequisite(field)
    return needed if needed is not NONE and not needed.met_by(fields) else None


def check(match: of.Match, actions=()) -> None:
    """Refuse, as the switch would, a flow whose match or actions lack prerequisites.
    Every flow an app builds passes here, so what needs nothing costs only a lookup."""
    fields = None
    for field, _ in match:
        if prerequisite(field) is not NONE:
            fields = fields or dict(match)
            needed = unmet(field, fields)
            if needed:
                raise PrerequisiteError(f'{field} matched without {needed}: {match}')
    tags = None  # VLAN headers the packet has at this action, once an action asks
    for action in actions:
        kind = type(action)
        if kind in _FIELDLESS:
            continue
        if kind in _VLAN_ACTIONS or kind is of.SetField and action.field == 'vlan_vid':
            tags = _check_vlan(action, _vlan_tags(match) if tags is None else tags, match)
            continue
        if kind is of.SetField and FIELDS.get(action.field, _UNKNOWN) is NONE \
                and action.field not in READ_ONLY:
            continue
        _check_action(action, fields or dict(match), match)


def _check_action(action, fields: dict, match: of.Match) -> None:
    for field, role in _fields_of(action):
        needed = unmet(field, fields) if role != 'marking' else None
        if needed:
            raise PrerequisiteError(f'{role} {field} without {needed} in {match}')
        if role != 'reading' and field in READ_ONLY:
            raise PrerequisiteError(f'{role} {field}, which is read-only')
    if isinstance(action, (of.DecTTL, of.Conntrack)) and not IP_ANY.met_by(fields):
        raise PrerequisiteError(f'{type(action).__name__} needs IP in the match: {match}')
    if isinstance(action, of.Conntrack) and action.commit and _matches_invalid(fields):
        raise PrerequisiteError(f'ct(commit) of a packet matched as invalid: {match}')
    if isinstance(action, of.Conntrack) and action.nat and action.nat.address \
            and not IPV4.met_by(fields):
        raise PrerequisiteError(f'nat to an IPv4 address needs {IPV4} in the match: {match}')


# VLAN headers (lib/ofp-actions.c: check_POP_VLAN, check_PUSH_VLAN, check_SET_FIELD): the
# switch follows, action by action, how many 802.1Q headers the packet has: one if the
# match says a VLAN is present (vlan_vid with OFPVID_PRESENT), none otherwise; push_vlan
# adds one (at most two in all), pop_vlan and set_field vlan_vid need one.
OFPVID_PRESENT = 0x1000
MAX_VLAN_HEADERS = 2
VLAN_ETHERTYPES = (0x8100, 0x88a8)
_VLAN_ACTIONS = frozenset({of.PushVlan, of.PopVlan})


def _vlan_tags(match: of.Match) -> int:
    value = match.get('vlan_vid')
    if value is None:
        return 0
    bits, mask = value if isinstance(value, tuple) else (value, OFPVID_PRESENT)
    return 1 if bits & mask & OFPVID_PRESENT else 0


def _check_vlan(action, tags: int, match: of.Match) -> int:
    """The VLAN headers after ``action``, or refused as the switch refuses it."""
    if isinstance(action, of.PushVlan):
        if action.ethertype not in VLAN_ETHERTYPES:
            raise PrerequisiteError(f'push_vlan of ethertype {action.ethertype:#x}')
        if tags >= MAX_VLAN_HEADERS:
            raise PrerequisiteError(f'a push_vlan beyond {MAX_VLAN_HEADERS} headers: {match}')
        return tags + 1
    if not tags:
        raise PrerequisiteError(f'{action} of a packet without a VLAN header (the match '
                                f'says no vlan_vid with OFPVID_PRESENT): {match}')
    if isinstance(action, of.PopVlan):
        return tags - 1  # the switch assumes no header under the one popped
    if not (isinstance(action.value, int) and action.value & OFPVID_PRESENT
            and action.value <= OFPVID_PRESENT | 0xfff):
        raise PrerequisiteError(f'set_field vlan_vid needs OFPVID_PRESENT | id: {action}')
    return tags


_FIELDLESS = frozenset({of.Output, of.Goto, of.Resubmit, of.ToController, of.Conjunction})


def _fields_of(action) -> list:
    """(field, role) for every field the action reads or writes."""
    if isinstance(action, of.SetField):
        return [(action.field, 'setting')]
    if isinstance(action, of.Move):
        return [(action.src, 'reading'), (action.dst, 'writing')]
    if isinstance(action, of.Conntrack) and isinstance(action.zone, str):
        return [(action.zone, 'reading')]
    if isinstance(action, of.BundleLoad):
        return [(action.dst, 'writing')]
    if isinstance(action, of.CheckPktLarger):
        # OVS checks only that its destination is writable (decode_NXAST_RAW_CHECK_PKT_LARGER
        # calls mf_check_dst without the match; check_CHECK_PKT_LARGER accepts any).
        return [(action.dst, 'marking')]
    return []


def _matches_invalid(fields: dict) -> bool:
    state = fields.get('ct_state')
    bits = state[0] if isinstance(state, tuple) else state
    return bool(bits and bits & of.CT_INVALID)
