"""The simulated switch is as strict as Open vSwitch where a lenient model would hide an app's
bug: overlapping flows, flows kept in OVS's form, registers zero on entry, conntrack's
related and invalid states, VLAN headers, and NAT as conntrack does it (ICMP errors too);
bundles choose by liveness, check_pkt_larger measures the frame, reg_move copies bits."""
import pytest

from dragonflow.controller.flows import (
    CT_ESTABLISHED,
    CT_INVALID,
    CT_NEW,
    CT_RELATED,
    CT_REPLY,
    CT_TRACKED,
    IN_PORT,
    BundleLoad,
    CheckPktLarger,
    Conjunction,
    Conntrack,
    Flow,
    Goto,
    Match,
    Move,
    Nat,
    Output,
    PopVlan,
    PushVlan,
    SetField,
    ct_state,
)
from tests.flowsim import DEFAULT_FRAME_LEN, FlowTableSimulator, OverlapError, as_kept

IP = 0x0800
A, B = 'fa:16:3e:00:00:01', 'fa:16:3e:00:00:02'


def _to(port, **match):
    return Flow(0, 100, Match(**match), (Output(port),))


@pytest.mark.parametrize('first, second', [
    (dict(eth_type=IP, ipv4_dst=('10.0.0.0', '255.255.255.0')),
     dict(eth_type=IP, ipv4_dst='10.0.0.5')),                       # a prefix and a host in it
    (dict(eth_type=IP, ipv4_src='10.0.0.5'), dict(eth_type=IP, ipv4_dst='10.0.0.6')),
    (dict(eth_dst=('01:00:00:00:00:00', '01:00:00:00:00:00')), dict(eth_dst='ff:ff:ff:ff:ff:ff')),
    (dict(eth_type=IP, ip_proto=6, tcp_dst=(1024, 0xfc00)),
     dict(eth_type=IP, ip_proto=6, tcp_dst=2000)),
    (dict(ct_state=ct_state(set_bits=CT_TRACKED | CT_ESTABLISHED)),
     dict(ct_state=ct_state(set_bits=CT_TRACKED | CT_RELATED))),   # +est+rel matches both
    (dict(reg6=1), dict()),
])
def test_overlapping_flows_of_one_priority_are_refused_as_a_whole(first, second):
    sim = FlowTableSimulator()
    before = _to(9, reg7=9)
    sim.apply([], [before])
    with pytest.raises(OverlapError):
        sim.apply([before], [_to(1, **first), _to(2, **second)])
    assert list(sim.flows.values()) == [before] and sim.bundles == 1
    sim = FlowTableSimulator()
    sim.apply([], [_to(1, **first)])
    with pytest.raises(OverlapError):  # also against a flow installed already
        sim.apply([], [_to(2, **second)])


@pytest.mark.parametrize('first, second', [
    (dict(eth_type=IP, ipv4_dst=('10.0.1.0', '255.255.255.0')),
     dict(eth_type=IP, ipv4_dst='10.0.0.5')),
    (dict(eth_type=IP, ip_proto=6, tcp_dst=22), dict(eth_type=IP, ip_proto=17, udp_dst=22)),
    (dict(eth_type=IP, ipv4_src='10.0.0.5'), dict(eth_type=0x0806, arp_spa='10.0.0.5')),
    (dict(eth_dst=('01:00:00:00:00:00', '01:00:00:00:00:00')), dict(eth_dst=A)),
    (dict(ct_state=ct_state(set_bits=CT_TRACKED | CT_ESTABLISHED)),
     dict(ct_state=ct_state(set_bits=CT_TRACKED | CT_RELATED, clear_bits=CT_ESTABLISHED))),
])
def test_disjoint_flows_of_one_priority_are_accepted(first, second):
    FlowTableSimulator().apply([], [_to(1, **first), _to(2, **second)])


def test_overlaps_are_found_among_many_flows():
    """Beyond a handful the flows are compared by buckets of one field's value: the one flow
    that lacks the field is still compared with every bucket."""
    flows = [_to(1, reg6=port, eth_src=f'fa:16:3e:00:01:{port:02x}') for port in range(40)]
    FlowTableSimulator().apply([], flows)
    with pytest.raises(OverlapError):
        FlowTableSimulator().apply([], flows + [_to(2, eth_type=IP)])
    with pytest.raises(OverlapError):
        FlowTableSimulator().apply([], flows + [_to(2, reg6=33)])
    FlowTableSimulator().apply([], flows + [_to(2, reg6=99)])


def test_other_priorities_identical_flows_and_conjunction_clauses_may_overlap():
    clause = Conjunction(7, 1, 2)
    FlowTableSimulator().apply([], [
        _to(1, reg6=1), Flow(0, 90, Match(reg6=1), (Output(2),)),      # priorities differ
        _to(1, reg6=2), _to(1, reg6=2),                                  # the same flow twice
        Flow(0, 80, Match(reg6=1), (clause,)), Flow(0, 80, Match(), (Conjunction(7, 2, 2),)),
        Flow(0, 80, Match(conj_id=7), (Output(3),))])


def test_flows_are_kept_and_deleted_in_the_form_ovs_keeps_them():
    sim = FlowTableSimulator()
    made = [_to(1, reg6=1, eth_type=IP, ipv4_dst=('10.0.0.5', '255.255.255.0')),  # host bits
            _to(2, reg6=2, eth_type=IP, ipv4_src=('10.0.0.7', '255.255.255.255')),  # all ones
            _to(3, reg6=3, eth_type=IP, ipv4_src=('10.0.0.0', '0.0.0.0')),  # matches anything
            _to(4, reg6=4, eth_type=IP, ip_proto=6, tcp_dst=(80, 0xffff)),
            _to(5, reg6=5, eth_dst=('FA:16:3E:00:00:01', 'ff:ff:ff:00:00:00'))]
    sim.apply([], made)
    assert {f.match for f in sim.dump_flows()} == {
        Match(reg6=1, eth_type=IP, ipv4_dst=('10.0.0.0', '255.255.255.0')),
        Match(reg6=2, eth_type=IP, ipv4_src='10.0.0.7'),
        Match(reg6=3, eth_type=IP),
        Match(reg6=4, eth_type=IP, ip_proto=6, tcp_dst=80),
        Match(reg6=5, eth_dst=('fa:16:3e:00:00:00', 'ff:ff:ff:00:00:00'))}
    assert all(as_kept(f) != f for f in made)
    sim.apply(made, [])
    assert sim.flows == {}


def test_a_packet_enters_with_registers_metadata_and_conntrack_zero():
    sim = FlowTableSimulator()
    sim.apply([], [Flow(0, 100, Match(reg6=0, metadata=0, reg15=0, ct_state=0), (Output(1),))])
    assert sim.outputs(5, eth_dst=A) == [1]
    for field in ('reg6', 'metadata', 'ct_state', 'reg0'):
        with pytest.raises(ValueError, match='cannot enter with'):
            sim.run(5, eth_dst=A, **{field: 7})


def test_a_packet_carries_only_fields_it_can_have():
    sim = FlowTableSimulator()
    with pytest.raises(ValueError, match='tcp_dst must be TCP'):
        sim.run(5, eth_type=IP, ip_proto=17, tcp_dst=22)
    with pytest.raises(ValueError, match='ipv4_src must be IPv4'):
        sim.run(5, eth_type=0x0806, ipv4_src='10.0.0.5')
    assert sim.run(5, eth_type=IP, ip_proto=6, tcp_dst=22) == []


def _conntracked() -> FlowTableSimulator:
    """Table 0 tracks IP in zone 1; table 1 outputs by state: new (and commits) to 1,
    established to 2 (6 if a reply), related to 3 (4 if a reply), invalid to 5."""
    sim = FlowTableSimulator()
    by_port = {1: CT_NEW, 2: CT_ESTABLISHED, 3: CT_RELATED, 5: CT_INVALID,
               4: CT_RELATED | CT_REPLY, 6: CT_ESTABLISHED | CT_REPLY}
    sim.apply([], [Flow(0, 100, Match(eth_type=IP), (Conntrack(1, table=1),))] + [
        Flow(1, 100, Match(eth_type=IP, ct_state=_exactly(bits)),
             ((Conntrack(1, commit=True),) if bits == CT_NEW else ()) + (Output(port),))
        for port, bits in by_port.items()])
    return sim


def _exactly(bits: int) -> tuple:
    """ct_state: +trk, these bits, none of the others."""
    every = CT_NEW | CT_ESTABLISHED | CT_RELATED | CT_REPLY | CT_INVALID
    return ct_state(set_bits=CT_TRACKED | bits, clear_bits=every & ~bits)


UDP = dict(eth_type=IP, ipv4_src='10.0.0.5', ipv4_dst='10.0.0.6', ip_proto=17, udp_src=40000,
           udp_dst=53)
REPLY = dict(UDP, ipv4_src='10.0.0.6', ipv4_dst='10.0.0.5', udp_src=53, udp_dst=40000)


def _unreachable(quoted: dict, **fields) -> dict:
    """An ICMP port unreachable, from the quoted packet's destination back to its source."""
    return dict(eth_type=IP, ipv4_src=quoted['ipv4_dst'], ipv4_dst=quoted['ipv4_src'],
                ip_proto=1, icmpv4_type=3, icmpv4_code=3, quoted=quoted, **fields)


def test_an_icmp_error_about_a_committed_connection_is_related():
    sim = _conntracked()
    assert sim.outputs(9, **UDP) == [1]          # new, committed
    assert sim.outputs(9, **UDP) == [1]          # still new: no reply seen yet, as in OVS
    assert sim.outputs(9, **REPLY) == [6]        # established, reply
    assert sim.outputs(9, **UDP) == [2]          # established
    assert sim.outputs(9, **_unreachable(UDP)) == [4]    # about what 10.0.0.5 sent: a reply
    assert sim.outputs(9, **_unreachable(REPLY)) == [3]  # about the reply: original direction


def test_an_icmp_error_about_nothing_known_is_invalid_and_never_a_connection():
    sim = _conntracked()
    error = _unreachable(UDP)
    assert sim.outputs(9, **error) == [5]
    assert sim.outputs(9, **error) == [5]        # nothing was committed for it
    assert sim.outputs(9, **{k: v for k, v in error.items() if k != 'quoted'}) == [5]
    echo = dict(eth_type=IP, ipv4_src='10.0.0.6', ipv4_dst='10.0.0.5', ip_proto=1,
                icmpv4_type=8, icmpv4_code=0)
    assert sim.outputs(9, **echo) == [1]         # not an error: a connection of its own


def test_conntrack_sets_the_zone():
    sim = FlowTableSimulator()
    sim.apply([], [Flow(0, 100, Match(eth_type=IP), (SetField('reg4', 0x10007),
                                                      Conntrack('reg4', table=1))),
                   Flow(1, 100, Match(ct_zone=7), (Output(1),)),
                   Flow(1, 90, Match(eth_type=IP), (Goto(2),))])
    assert sim.outputs(9, **UDP) == [1]


# VLANs: tagged packets carry vlan_vid = OFPVID_PRESENT | id, untagged ones match vlan_vid=0.
TAG = 0x1000


def _vlan_switch() -> FlowTableSimulator:
    """Port 1 is a trunk: VLAN 100 to port 2 (tag popped), untagged to port 3; from port 2
    tagged 100 to the trunk."""
    sim = FlowTableSimulator()
    sim.apply([], [Flow(0, 100, Match(in_port=1, vlan_vid=TAG | 100), (PopVlan(), Output(2))),
                   Flow(0, 100, Match(in_port=1, vlan_vid=0), (Output(3),)),
                   Flow(0, 100, Match(in_port=2),
                        (PushVlan(), SetField('vlan_vid', TAG | 100), Output(1)))])
    return sim


def test_vlan_headers_are_matched_popped_and_pushed():
    sim = _vlan_switch()
    [out] = sim.run(1, eth_dst=A, vlan_vid=TAG | 100)
    assert out.port == 2 and 'vlan_vid' not in out.packet
    assert sim.outputs(1, eth_dst=A) == [3]                     # untagged: OFPVID_NONE
    assert sim.outputs(1, eth_dst=A, vlan_vid=TAG | 200) == []  # another VLAN: no flow
    [out] = sim.run(2, eth_dst=B)
    assert out.port == 1 and out.packet['vlan_vid'] == TAG | 100


def test_a_tagged_packet_carries_ofpvid_present():
    with pytest.raises(ValueError, match='OFPVID_PRESENT'):
        _vlan_switch().run(1, eth_dst=A, vlan_vid=100)


def test_a_vlan_vid_of_every_bit_is_kept_as_a_plain_value():
    flow = Flow(0, 100, Match(vlan_vid=(TAG | 5, 0x1fff)), (Output(1),))
    assert as_kept(flow).match == Match(vlan_vid=TAG | 5)


# NAT as a floating IP does it, in one zone: port 1 outside, port 2 the VM (V) whose floating
# IP is F. In: ct(nat); a new connection to F committed with DNAT to V. Out: ct(nat); a new
# one from V committed with SNAT to F. Established and related go on as ct(nat) made them.
V, F, OUTSIDE, ROUTER = '10.0.0.5', '172.24.4.10', '203.0.113.10', '172.24.4.1'
NEW, KNOWN = ct_state(set_bits=CT_TRACKED | CT_NEW), ct_state(set_bits=CT_TRACKED,
                                                               clear_bits=CT_NEW | CT_INVALID)


def _nat_switch() -> FlowTableSimulator:
    sim = FlowTableSimulator()
    zone = 9
    sim.apply([], [
        Flow(0, 100, Match(in_port=1, eth_type=IP), (Conntrack(zone, nat=Nat(), table=1),)),
        Flow(1, 100, Match(eth_type=IP, ct_state=NEW, ipv4_dst=F),
             (Conntrack(zone, commit=True, nat=Nat('dst', V), table=2),)),
        Flow(1, 90, Match(ct_state=KNOWN), (Goto(2),)),
        Flow(2, 100, Match(), (Output(2),)),
        Flow(0, 100, Match(in_port=2, eth_type=IP), (Conntrack(zone, nat=Nat(), table=3),)),
        Flow(3, 100, Match(eth_type=IP, ct_state=NEW, ipv4_src=V),
             (Conntrack(zone, commit=True, nat=Nat('src', F), table=4),)),
        Flow(3, 90, Match(ct_state=KNOWN), (Goto(4),)),
        Flow(4, 100, Match(), (Output(1),))])
    return sim


def _udp(src, dst, sport=40000, dport=53) -> dict:
    return dict(eth_type=IP, ipv4_src=src, ipv4_dst=dst, ip_proto=17, udp_src=sport,
                udp_dst=dport)


def _addresses(delivery) -> tuple:
    return delivery.port, delivery.packet['ipv4_src'], delivery.packet['ipv4_dst']


def test_a_dnat_connection_is_translated_both_ways():
    sim = _nat_switch()
    [inside] = sim.run(1, **_udp(OUTSIDE, F))
    assert _addresses(inside) == (2, OUTSIDE, V)
    [reply] = sim.run(2, **_udp(V, OUTSIDE, 53, 40000))
    assert _addresses(reply) == (1, F, OUTSIDE)
    [again] = sim.run(1, **_udp(OUTSIDE, F))  # established: ct(nat) alone translates it
    assert _addresses(again) == (2, OUTSIDE, V)


def test_an_snat_connection_is_translated_both_ways():
    sim = _nat_switch()
    [out] = sim.run(2, **_udp(V, OUTSIDE))
    assert _addresses(out) == (1, F, OUTSIDE)
    [reply] = sim.run(1, **_udp(OUTSIDE, F, 53, 40000))
    assert _addresses(reply) == (2, OUTSIDE, V)


def test_a_packet_of_no_connection_passes_ct_nat_unchanged():
    sim = _nat_switch()
    assert sim.run(1, **_udp(OUTSIDE, V)) == []  # new and not to F: no flow takes it
    [out] = sim.run(1, **_udp(OUTSIDE, F, 53, 40000))  # new to F: DNAT, not an SNAT reply
    assert _addresses(out) == (2, OUTSIDE, V)


def test_an_icmp_error_from_behind_dnat_comes_out_about_what_the_sender_sent():
    sim = _nat_switch()
    [inside] = sim.run(1, **_udp(OUTSIDE, F))
    [error] = sim.run(2, **_unreachable(_headers(inside.packet)))
    assert _addresses(error) == (1, F, OUTSIDE)
    assert (error.packet['quoted']['ipv4_src'], error.packet['quoted']['ipv4_dst']) == (
        OUTSIDE, F)


def test_an_icmp_error_from_a_router_on_the_way_reaches_the_snat_sender():
    """Time exceeded from a router upstream, about the packet as SNAT sent it: the outer
    destination and the quoted source go back to the VM's address; the router's stays."""
    sim = _nat_switch()
    [out] = sim.run(2, **_udp(V, OUTSIDE))
    error = dict(eth_type=IP, ipv4_src=ROUTER, ipv4_dst=F, ip_proto=1, icmpv4_type=11,
                 icmpv4_code=0, quoted=_headers(out.packet))
    [back] = sim.run(1, **error)
    assert _addresses(back) == (2, ROUTER, V)
    assert (back.packet['quoted']['ipv4_src'], back.packet['quoted']['ipv4_dst']) == (
        V, OUTSIDE)


def test_an_icmp_error_about_a_reply_goes_the_original_way_translated():
    sim = _nat_switch()
    sim.run(1, **_udp(OUTSIDE, F))
    [reply] = sim.run(2, **_udp(V, OUTSIDE, 53, 40000))
    [error] = sim.run(1, **_unreachable(_headers(reply.packet)))  # OUTSIDE about F's reply
    assert _addresses(error) == (2, OUTSIDE, V)
    assert (error.packet['quoted']['ipv4_src'], error.packet['quoted']['ipv4_dst']) == (
        V, OUTSIDE)


def test_conntrack_without_nat_leaves_a_natted_connection_alone():
    sim = _nat_switch()
    sim.run(1, **_udp(OUTSIDE, F))
    sim.apply([], [Flow(0, 200, Match(in_port=3, eth_type=IP), (Conntrack(9, table=4),))])
    [out] = sim.run(3, **_udp(OUTSIDE, F))
    assert _addresses(out) == (1, OUTSIDE, F)


def _headers(packet: dict) -> dict:
    """A delivered packet as the next hop sends it on (its ip_ttl is the pipeline's)."""
    return {k: v for k, v in packet.items() if k not in ('in_port', 'ip_ttl')}


# bundle_load active_backup: the first live member into the register, OFPP_NONE if none is.
def _bundled(**live) -> FlowTableSimulator:
    """Table 0 loads reg3 from members 7, 8, 9; table 1 outputs to the port reg3 names, and
    to port 99 when it holds OFPP_NONE."""
    sim = FlowTableSimulator(**live)
    sim.apply([], [Flow(0, 100, Match(), (BundleLoad((7, 8, 9)), Goto(1))),
                   *(Flow(1, 100, Match(reg3=port), (Output(port),)) for port in (7, 8, 9)),
                   Flow(1, 100, Match(reg3=0xffff), (Output(99),))])
    return sim


def test_a_bundle_loads_its_first_live_member():
    assert _bundled().outputs(1, eth_dst=A) == [7]  # every port live unless told
    sim = _bundled(live_ports={8, 9})
    assert sim.outputs(1, eth_dst=A) == [8]
    sim.live_ports = {9, 7}
    assert sim.outputs(1, eth_dst=A) == [7]         # the members' order, not the set's
    sim.live_ports = {1, 2}
    assert sim.outputs(1, eth_dst=A) == [99]        # none live: OFPP_NONE


# check_pkt_larger: the whole frame's length against the limit, into one bit.
def _measured(limit: int) -> FlowTableSimulator:
    """Frames longer than ``limit`` to port 2 (reg0 bit 0), others to port 3; reg0's other
    bits are kept (bit 4 set before)."""
    sim = FlowTableSimulator()
    sim.apply([], [Flow(0, 100, Match(), (SetField('reg0', 0x10), CheckPktLarger(limit),
                                          Goto(1))),
                   Flow(1, 100, Match(reg0=0x11), (Output(2),)),
                   Flow(1, 100, Match(reg0=0x10), (Output(3),))])
    return sim


def test_check_pkt_larger_sets_its_bit_for_a_frame_longer_than_its_length():
    sim = _measured(1514)
    assert sim.outputs(1, eth_dst=A, frame_len=1514) == [3]  # not larger: equal
    assert sim.outputs(1, eth_dst=A, frame_len=1515) == [2]
    assert sim.outputs(1, eth_dst=A) == [3]                  # a default ping's frame
    assert _measured(DEFAULT_FRAME_LEN - 1).outputs(1, eth_dst=A) == [2]


def test_check_pkt_larger_counts_the_vlan_header():
    """A tag pushed before the check counts; one popped does not."""
    sim = FlowTableSimulator()
    sim.apply([], [Flow(0, 100, Match(in_port=1),
                        (PushVlan(), SetField('vlan_vid', TAG | 5), CheckPktLarger(1514),
                         Goto(1))),
                   Flow(0, 100, Match(in_port=2, vlan_vid=TAG | 5),
                        (PopVlan(), CheckPktLarger(1514), Goto(1))),
                   Flow(1, 100, Match(reg0=1), (Output(8),)),
                   Flow(1, 100, Match(reg0=0), (Output(9),))])
    assert sim.outputs(1, eth_dst=A, frame_len=1511) == [8]
    assert sim.outputs(1, eth_dst=A, frame_len=1510) == [9]
    assert sim.outputs(2, eth_dst=A, vlan_vid=TAG | 5, frame_len=1518) == [9]
    [out] = sim.run(2, eth_dst=A, vlan_vid=TAG | 5, frame_len=1519)
    assert out.port == 8 and out.packet['frame_len'] == 1515


def test_a_frame_len_has_room_for_its_headers():
    with pytest.raises(ValueError, match='no room'):
        FlowTableSimulator().run(1, eth_dst=A, frame_len=13)


# reg_move copies bits, so an echo request can be answered in place.
G, GW_MAC = '172.24.4.20', 'fa:16:3e:99:00:01'
ECHO = dict(eth_src=A, eth_dst=GW_MAC, eth_type=IP, ipv4_src=OUTSIDE, ipv4_dst=G, ip_proto=1,
            icmpv4_type=8, icmpv4_code=0)


def test_an_echo_request_is_answered_in_place():
    sim = FlowTableSimulator()
    sim.apply([], [Flow(0, 100, Match(eth_type=IP, ip_proto=1, icmpv4_type=8, ipv4_dst=G),
                        (Move('eth_src', 'eth_dst', 48), SetField('eth_src', GW_MAC),
                         Move('ipv4_src', 'ipv4_dst', 32), SetField('ipv4_src', G),
                         SetField('icmpv4_type', 0), Output(IN_PORT)))])
    [reply] = sim.run(4, **ECHO)
    assert reply.port == 4
    assert {k: reply.packet[k] for k in ('eth_src', 'eth_dst', 'ipv4_src', 'ipv4_dst',
                                         'icmpv4_type')} == {
        'eth_src': GW_MAC, 'eth_dst': A, 'ipv4_src': G, 'ipv4_dst': OUTSIDE,
        'icmpv4_type': 0}


def test_a_reg_move_copies_bits_through_a_register_and_keeps_the_others():
    sim = FlowTableSimulator()
    sim.apply([], [Flow(0, 100, Match(eth_type=IP),
                        (SetField('reg1', 0xabcd0000), Move('ipv4_src', 'reg1', 16),
                         Move('ipv4_dst', 'ipv4_src', 32), Move('reg2', 'ipv4_dst', 32),
                         Goto(1))),
                   Flow(1, 100, Match(reg1=0xabcd000a, eth_type=IP, ipv4_src=G,
                                      ipv4_dst='0.0.0.0'), (Output(2),))])
    assert sim.outputs(4, **dict(ECHO, ipv4_src='10.0.0.10')) == [2]


def test_a_reg_move_of_more_bits_than_a_field_has_is_refused():
    with pytest.raises(ValueError, match='more bits'):
        FlowTableSimulator().apply([], [Flow(0, 100, Match(), (Move('eth_src', 'reg1', 48),))])
