"""OpenFlow's prerequisites, one definition: a table refuses to build a flow the switch would
refuse, and the simulated switch refuses to install it."""
import pytest

from dragonflow.controller import pipeline as p
from dragonflow.controller.flows import (
    CT_INVALID,
    CT_TRACKED,
    BundleLoad,
    CheckPktLarger,
    Conntrack,
    DecTTL,
    Flow,
    Match,
    Move,
    Nat,
    Output,
    PopVlan,
    PushVlan,
    SetField,
    ct_state,
)
from dragonflow.controller.prerequisites import PrerequisiteError, check
from tests.flowsim import FlowTableSimulator

IP, ARP = p.ETH_TYPE_IPV4, p.ETH_TYPE_ARP
INVALID = ct_state(set_bits=CT_TRACKED | CT_INVALID)

# (refused flow, the same flow with what it lacked): each refusal is for the reason named.
CASES = {
    'ipv4 field without eth_type': (
        (Match(ipv4_dst='10.0.0.5'), ()),
        (Match(eth_type=IP, ipv4_dst='10.0.0.5'), ())),
    'ipv4 field in an ARP flow': (
        (Match(eth_type=ARP, ipv4_src='10.0.0.5'), ()),
        (Match(eth_type=ARP, arp_spa='10.0.0.5'), ())),
    'ip_proto without IP': (
        (Match(ip_proto=6), ()),
        (Match(eth_type=IP, ip_proto=6), ())),
    'tcp port without ip_proto': (
        (Match(eth_type=IP, tcp_dst=22), ()),
        (Match(eth_type=IP, ip_proto=6, tcp_dst=22), ())),
    'udp port with the TCP ip_proto': (
        (Match(eth_type=IP, ip_proto=6, udp_dst=53), ()),
        (Match(eth_type=IP, ip_proto=17, udp_dst=53), ())),
    'sctp port without IP': (
        (Match(ip_proto=132, sctp_dst=5000), ()),
        (Match(eth_type=IP, ip_proto=132, sctp_dst=5000), ())),
    'icmpv4 type in TCP': (
        (Match(eth_type=IP, ip_proto=6, icmpv4_type=8), ()),
        (Match(eth_type=IP, ip_proto=1, icmpv4_type=8), ())),
    'arp field without ARP': (
        (Match(arp_tpa='10.0.0.1'), ()),
        (Match(eth_type=ARP, arp_tpa='10.0.0.1'), ())),
    'set_field of an L4 field without its protocol': (
        (Match(eth_type=IP), (SetField('tcp_dst', 80),)),
        (Match(eth_type=IP, ip_proto=6), (SetField('tcp_dst', 80),))),
    'set_field of an ARP field in IP': (
        (Match(eth_type=IP), (SetField('arp_spa', '10.0.0.1'),)),
        (Match(eth_type=ARP), (SetField('arp_spa', '10.0.0.1'),))),
    'reg_move out of an ARP field without ARP': (
        (Match(), (Move('arp_sha', 'arp_tha', 48),)),
        (Match(eth_type=ARP), (Move('arp_sha', 'arp_tha', 48),))),
    'reg_move into an IP field without IP': (
        (Match(), (Move('reg0', 'ipv4_dst', 32),)),
        (Match(eth_type=IP), (Move('reg0', 'ipv4_dst', 32),))),
    'dec_ttl without IP': (
        (Match(), (DecTTL(),)),
        (Match(eth_type=IP), (DecTTL(),))),
    'ct() without IP': (
        (Match(reg6=1), (Conntrack(1, table=15),)),
        (Match(reg6=1, eth_type=IP), (Conntrack(1, table=15),))),
    'ct(commit) of an invalid packet': (
        (Match(eth_type=IP, ct_state=INVALID), (Conntrack(1, commit=True),)),
        (Match(eth_type=IP, ct_state=INVALID), (Conntrack(1),))),
    'set_field of a read-only field': (
        (Match(eth_type=IP), (SetField('ip_proto', 6),)),
        (Match(eth_type=IP), (SetField('ipv4_src', '10.0.0.1'),))),
    # VLAN and NAT: as Open vSwitch 3.1 answered (OFPBAC_MATCH_INCONSISTENT, BAD_TAG,
    # BAD_SET_ARGUMENT), checked once through OpenFlowSwitch.
    'pop_vlan of a packet the match does not say is tagged': (
        (Match(in_port=1), (PopVlan(),)),
        (Match(in_port=1, vlan_vid=0x1000 | 5), (PopVlan(),))),
    'pop_vlan twice of one tag': (
        (Match(in_port=1, vlan_vid=0x1000 | 5), (PopVlan(), PopVlan())),
        (Match(in_port=1, vlan_vid=(0x1000, 0x1000)), (PopVlan(),))),
    'pop_vlan of an untagged packet (vlan_vid=0)': (
        (Match(in_port=1, vlan_vid=0), (PopVlan(),)),
        (Match(in_port=1), (PushVlan(), PopVlan()))),
    'set_field vlan_vid without a VLAN header': (
        (Match(metadata=1), (SetField('vlan_vid', 0x1000 | 5),)),
        (Match(metadata=1), (PushVlan(), SetField('vlan_vid', 0x1000 | 5)))),
    'set_field vlan_vid without OFPVID_PRESENT': (
        (Match(metadata=1), (PushVlan(), SetField('vlan_vid', 5))),
        (Match(metadata=1, vlan_vid=0x1000 | 7), (SetField('vlan_vid', 0x1000 | 5),))),
    'a third VLAN header': (
        (Match(metadata=1), (PushVlan(), PushVlan(), PushVlan())),
        (Match(metadata=1), (PushVlan(), PushVlan()))),
    'nat to an IPv4 address in IPv6': (
        (Match(eth_type=0x86dd), (Conntrack(1, commit=True, nat=Nat('dst', '10.0.0.5')),)),
        (Match(eth_type=IP), (Conntrack(1, commit=True, nat=Nat('dst', '10.0.0.5')),))),
    'nat without IP': (
        (Match(reg5=1), (Conntrack(1, nat=Nat(), table=51),)),
        (Match(reg5=1, eth_type=0x86dd), (Conntrack(1, nat=Nat(), table=51),))),
    'bundle_load into a read-only field': (
        (Match(reg5=1), (BundleLoad((1, 2), dst='ct_zone'),)),
        (Match(reg5=1), (BundleLoad((1, 2), dst='reg3'),))),
    'bundle_load into an IP field without IP': (
        (Match(reg5=1), (BundleLoad((1, 2), dst='ipv4_dst'),)),
        (Match(reg5=1, eth_type=IP), (BundleLoad((1, 2), dst='ipv4_dst'),))),
    'check_pkt_larger into a read-only field (any other, even without its prerequisites)': (
        (Match(reg5=1), (CheckPktLarger(1514, dst='ct_state'),)),
        (Match(reg5=1), (CheckPktLarger(1514, dst='ipv4_dst'),))),
    'a field nobody knows the prerequisites of': (
        (Match(nw_tos_shifted=1), ()),
        (Match(eth_type=IP, ip_dscp=1), ())),
}


@pytest.mark.parametrize('name', CASES)
def test_the_rules_refuse_what_the_switch_refuses_and_only_that(name):
    (match, actions), (fixed, fixed_actions) = CASES[name]
    with pytest.raises(PrerequisiteError):
        check(match, actions)
    check(fixed, fixed_actions)


@pytest.mark.parametrize('name', CASES)
def test_the_simulated_switch_refuses_the_bundle(name):
    (match, actions), _ = CASES[name]
    sim = FlowTableSimulator()
    good = Flow(80, 100, Match(reg7=5), (Output(1),))
    with pytest.raises(PrerequisiteError):
        sim.apply([], [good, Flow(40, 100, match, actions + (Output(1),))])
    assert sim.flows == {} and sim.bundles == 0


def test_a_table_refuses_to_build_a_flow_lacking_a_prerequisite():
    with pytest.raises(PrerequisiteError, match='tcp_dst matched without TCP'):
        p.EGRESS_SECURITY_GROUPS.flow(100, Match(eth_type=IP, tcp_dst=22), [p.SERVICES.goto()])
    with pytest.raises(PrerequisiteError, match='DecTTL needs IP'):
        p.L3.flow(100, Match(reg5=1), [DecTTL(), p.EGRESS_DISPATCH.goto()])
    p.L3.flow(100, Match(reg5=1, eth_type=IP), [DecTTL(), p.EGRESS_DISPATCH.goto()])
