"""Stateful security groups through the simulator's conntrack: rules open new connections,
replies of allowed ones come back, everything else is dropped."""
import pytest

from dragonflow.controller.apps.security_groups import port_masks
from dragonflow.controller.reconciler import Reconciler
from tests.flowsim import FlowTableSimulator
from tests.unit.builders import TopologyBuilder, install, ip_of, ipv4


def tcp(src, dst, dport, sport=40000):
    return dict(ipv4(src, dst.mac_address, ip_of(dst)), ip_proto=6, tcp_src=sport, tcp_dst=dport)


def udp(src, dst, dport, sport=40000):
    return dict(ipv4(src, dst.mac_address, ip_of(dst)), ip_proto=17, udp_src=sport,
                udp_dst=dport)


def icmp(src, dst, kind=8):
    return dict(ipv4(src, dst.mac_address, ip_of(dst)), icmpv4_type=kind, icmpv4_code=0)


def reply(packet, src, dst):
    """The answer to ``packet`` (sent by dst's peer src... back from dst to src)."""
    swapped = dict(packet, eth_src=dst.mac_address, eth_dst=src.mac_address,
                   ipv4_src=packet['ipv4_dst'], ipv4_dst=packet['ipv4_src'])
    for proto in ('tcp', 'udp'):
        if f'{proto}_src' in packet:
            swapped[f'{proto}_src'], swapped[f'{proto}_dst'] = \
                packet[f'{proto}_dst'], packet[f'{proto}_src']
    return swapped


@pytest.fixture
def net():
    """web (group web: ingress tcp/22 from 10.0.0.0/28 only, icmp, udp/53; egress any),
    a in 10.0.0.0/28 and b outside it (both in group open), all on one chassis."""
    b = TopologyBuilder()
    subnet = b.subnet(b.network('a'), '10.0.0.0/24')
    web_group = b.security_group(
        'web', ('egress', {}),
        ('ingress', dict(protocol='tcp', port_range_min=22, port_range_max=22,
                         remote_ip_prefix='10.0.0.0/28')),
        ('ingress', dict(protocol='icmp')),
        ('ingress', dict(protocol='udp', port_range_min=53, port_range_max=53)))
    web = b.port(subnet, '10.0.0.100', ofport=1, security_groups=[web_group.id])
    inside = b.port(subnet, '10.0.0.5', ofport=2)
    outside = b.port(subnet, '10.0.0.50', ofport=3)
    return b, web, inside, outside


def test_a_rule_opens_tcp_22_from_one_cidr_only(net):
    b, web, inside, outside = net
    switch = install(b.build())
    assert switch.outputs(2, **tcp(inside, web, 22)) == [1]
    assert switch.outputs(2, **tcp(inside, web, 23)) == []
    assert switch.outputs(3, **tcp(outside, web, 22)) == []


def test_icmp_and_udp_rules(net):
    b, web, inside, outside = net
    switch = install(b.build())
    assert switch.outputs(3, **icmp(outside, web)) == [1]
    assert switch.outputs(3, **udp(outside, web, 53)) == [1]
    assert switch.outputs(3, **udp(outside, web, 54)) == []


def test_replies_of_allowed_connections_pass_both_ways(net):
    b, web, inside, outside = net
    switch = install(b.build())
    request = tcp(web, outside, 8080)  # web may open anything (egress any)
    assert switch.outputs(1, **request) == [3]
    answer = reply(request, web, outside)
    assert switch.outputs(3, **answer) == [1]  # no ingress rule, but it is the reply
    assert switch.outputs(3, **tcp(outside, web, 8080, sport=40001)) == []  # a new one is not


def test_removing_a_rule_stops_new_connections_not_established_ones(net):
    b, web, inside, outside = net
    reconciler = Reconciler(FlowTableSimulator())
    switch = install(b.build(), reconciler)
    first = tcp(inside, web, 22)
    assert switch.outputs(2, **first) == [1]
    del b.rules[next(r for r, rule in b.rules.items() if rule.port_range_min == 22)]
    install(b.build(), reconciler)
    assert switch.outputs(2, **tcp(inside, web, 22, sport=40002)) == []
    assert switch.outputs(2, **first) == [1]  # conntrack still knows it


def test_a_remote_group_rule_follows_its_members(net):
    b, web, inside, outside = net
    friends = b.security_group('friends', ('egress', {}))
    b.rule(b.security_groups['sg-web'], 'ingress', protocol='tcp', port_range_min=80,
           port_range_max=80, remote_group_id=friends.id)
    assert install(b.build()).outputs(3, **tcp(outside, web, 80)) == []
    b.ports[outside.id].security_groups.append(friends.id)  # outside joins friends
    assert install(b.build()).outputs(3, **tcp(outside, web, 80)) == [1]


def test_no_group_means_no_traffic_but_dhcp_and_no_port_security_means_no_filter():
    b = TopologyBuilder()
    subnet = b.subnet(b.network('a'), '10.0.0.0/24')
    closed = b.port(subnet, '10.0.0.5', ofport=1, security_groups=[])
    open_port = b.port(subnet, '10.0.0.6', ofport=2)
    free = b.port(subnet, '10.0.0.7', ofport=3, port_security_enabled=False, security_groups=[])
    switch = install(b.build())
    assert switch.outputs(2, **icmp(open_port, closed)) == []
    assert switch.outputs(1, **icmp(closed, open_port)) == []
    discover = dict(ipv4(closed, 'ff:ff:ff:ff:ff:ff', '255.255.255.255'), ipv4_src='0.0.0.0',
                    ip_proto=17, udp_src=68, udp_dst=67)
    assert switch.outputs(1, **discover) == [-1]  # to the controller's DHCP server
    assert switch.outputs(2, **icmp(open_port, free)) == [3]
    assert switch.outputs(3, **icmp(free, open_port)) == [2]


@pytest.mark.parametrize('low,high', [(22, 22), (1, 65535), (1000, 1999), (0, 7), (80, 443),
                                      (65535, 65535), (1024, 65535)])
def test_port_masks_cover_exactly_the_range(low, high):
    covered = set()
    for item in port_masks(low, high):
        value, mask = item if isinstance(item, tuple) else (item, 0xffff)
        covered |= {v for v in range(0, 65536) if v & mask == value}
    assert covered == set(range(low, high + 1))
