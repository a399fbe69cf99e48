"""Stateful security groups through the simulator's conntrack: rules open new connections,
replies of allowed ones come back, everything else is dropped."""
import pytest

from dragonflow.controller import apps
from dragonflow.controller.apps.security_groups import port_masks
from dragonflow.controller.flows import CONTROLLER, COOKIE_OBJECT_MASK, Conjunction, Match
from dragonflow.controller.reconciler import Reconciler
from dragonflow.model import AddressPair, FixedIP
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
    assert switch.outputs(1, **reply(first, inside, web)) == [2]  # now established
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
    assert switch.outputs(1, **discover) == [CONTROLLER]  # to the controller's DHCP server
    assert switch.outputs(2, **icmp(open_port, free)) == [3]
    assert switch.outputs(3, **icmp(free, open_port)) == [2]


@pytest.fixture
def friends(net):
    """web also lets in tcp 1000-1999 from group friends, of which inside is a member."""
    b, web, inside, outside = net
    group = b.security_group('friends', ('egress', {}))
    b.rule(b.security_groups['sg-web'], 'ingress', protocol='tcp', port_range_min=1000,
           port_range_max=1999, remote_group_id=group.id)
    b.ports[inside.id].security_groups.append(group.id)
    return b, web, inside, outside, group


def test_a_remote_group_rule_lets_in_members_on_its_ports_only(friends):
    b, web, inside, outside, _ = friends
    switch = install(b.build())
    for port in (1000, 1500, 1999):
        assert switch.outputs(2, **tcp(inside, web, port)) == [1]
    for port in (999, 2000):
        assert switch.outputs(2, **tcp(inside, web, port)) == []
    assert switch.outputs(2, **udp(inside, web, 1500)) == []
    assert switch.outputs(3, **tcp(outside, web, 1500)) == []  # not a member


def test_a_member_that_leaves_is_shut_out_and_one_that_moves_is_followed(friends):
    b, web, inside, outside, group = friends
    reconciler = Reconciler(FlowTableSimulator())
    switch = install(b.build(), reconciler)
    assert switch.outputs(2, **tcp(inside, web, 1500)) == [1]
    b.ports[inside.id].fixed_ips = [FixedIP(subnet_id=inside.fixed_ips[0].subnet_id,
                                            ip_address='10.0.0.6')]
    install(b.build(), reconciler)
    assert switch.outputs(2, **dict(tcp(inside, web, 1500), ipv4_src='10.0.0.6')) == [1]
    b.ports[inside.id].security_groups.remove(group.id)
    install(b.build(), reconciler)
    assert switch.outputs(2, **dict(tcp(inside, web, 1501), ipv4_src='10.0.0.6')) == []


def test_allowed_address_pairs_of_members_are_members(friends):
    b, web, inside, outside, group = friends
    b.ports[outside.id].security_groups.append(group.id)
    b.ports[outside.id].allowed_address_pairs.append(AddressPair(ip_address='10.0.0.128/26'))
    switch = install(b.build())
    assert switch.outputs(3, **dict(tcp(outside, web, 1500), ipv4_src='10.0.0.130')) == [1]


def test_an_egress_rule_with_a_remote_group(net):
    b, web, inside, outside = net
    talker = b.security_group('talker')
    b.rule(talker, 'egress', protocol='udp', port_range_min=53, port_range_max=53,
           remote_group_id='sg-web')
    b.ports[inside.id].security_groups = [talker.id]
    switch = install(b.build())
    request = udp(inside, web, 53)
    assert switch.outputs(2, **request) == [1]
    assert switch.outputs(1, **reply(request, inside, web)) == [2]
    assert switch.outputs(2, **udp(inside, outside, 53)) == []  # outside is not in web
    assert switch.outputs(2, **udp(inside, web, 54)) == []


def test_two_groups_with_remote_group_rules_on_one_port(friends):
    """web's groups name friends (tcp 1000-1999) and, through a second group, pals (udp 53
    and tcp 1500): each member gets what its own groups were granted, and a peer in both
    groups matches both conjunctions at once."""
    b, web, inside, outside, friends_group = friends
    pals = b.security_group('pals', ('egress', {}))
    second = b.security_group('second')
    for attrs in (dict(protocol='udp', port_range_min=53, port_range_max=53),
                  dict(protocol='tcp', port_range_min=1500, port_range_max=1500)):
        b.rule(second, 'ingress', remote_group_id=pals.id, **attrs)
    b.ports[web.id].security_groups.append(second.id)
    b.ports[outside.id].security_groups.append(pals.id)
    switch = install(b.build())
    assert switch.outputs(3, **tcp(outside, web, 1500)) == [1]
    assert switch.outputs(3, **tcp(outside, web, 1501)) == []  # friends' range, not pals'
    assert switch.outputs(2, **tcp(inside, web, 1501)) == [1]
    b.ports[inside.id].security_groups.append(pals.id)
    switch = install(b.build())
    assert switch.outputs(2, **tcp(inside, web, 1500)) == [1]  # both conjunctions match
    assert switch.outputs(2, **udp(inside, web, 53, sport=40001)) == [1]


def test_each_port_commits_in_its_own_zone(net):
    """The shared flows that commit take the zone from the register the port's conntrack
    flow set: the sender's commit does not make the packet established at the receiver."""
    b, web, inside, outside = net
    switch = install(b.build())
    assert switch.outputs(2, **tcp(inside, web, 8080)) == []  # inside may send, web not take
    assert switch.outputs(2, **tcp(inside, web, 22)) == [1]
    assert set(switch.connections) == {1, 2}  # web's ofport and inside's


def test_conjunction_ids_are_the_rule_keys_and_do_not_churn(friends):
    """The reconciler diffs by (table, priority, match): an id that changed between two
    computations would rewrite every flow of the conjunction. Another member joining adds
    the flows of its port and of its address, and changes nothing else."""
    b, web, inside, outside, group = friends
    reconciler = Reconciler(FlowTableSimulator())
    switch = install(b.build(), reconciler)
    ids = {a.id for f in switch.flows.values() for a in f.actions
           if isinstance(a, Conjunction)}
    conjunctive = {r.key for r in b.rules.values() if r.security_group_id == 'sg-web'
                   and (r.protocol or r.remote_ip_prefix or r.remote_group_id)}
    assert ids == conjunctive and len(ids) == 4
    sg = apps.APP_IDS['security_groups']
    before = {f for f in switch.flows.values() if f.app_id == sg}
    newcomer = b.port(b.subnets[inside.fixed_ips[0].subnet_id], '10.0.0.7', ofport=4,
                      security_groups=[group.id])
    change = reconciler.reconcile(apps.desired_flows(b.build()))
    assert change.deletes == []
    others = [f for f in change.adds
              if f.app_id == sg and f.cookie & COOKIE_OBJECT_MASK != newcomer.key]
    assert [f.match for f in others] == [Match(eth_type=0x0800, ipv4_src='10.0.0.7')]
    assert before <= set(switch.flows.values())


def test_every_conjunction_is_whole_at_one_priority(friends):
    """OVS completes a conjunction only from flows at one priority in one table, all saying
    the same number of clauses; a clause without flows would never match."""
    b = friends[0]
    found: dict = {}  # id -> {(table, priority)}, {n_clauses}, {clause}
    for flow in apps.desired_flows(b.build()):
        for c in flow.actions:
            if isinstance(c, Conjunction):
                where, sizes, clauses = found.setdefault(c.id, (set(), set(), set()))
                where.add((flow.table, flow.priority))
                sizes.add(c.n_clauses)
                clauses.add(c.clause)
        if 'conj_id' in flow.match.fields():
            found[flow.match['conj_id']][0].add((flow.table, flow.priority))
    assert found
    for where, sizes, clauses in found.values():
        assert len(where) == 1 and len(sizes) == 1
        assert clauses == set(range(1, sizes.pop() + 1))


def _flow_count(n_ports: int, n_rules: int, n_groups: int = 4) -> int:
    """Security group flows on a chassis with n ports spread over groups of n_rules rules
    (a tcp port each, from the next group) plus a default group (any egress, any ingress from
    the group itself)."""
    b = TopologyBuilder()
    subnet = b.subnet(b.network('a'), '10.0.0.0/16')
    default = b.security_group('default', ('egress', {}))
    b.rule(default, 'ingress', remote_group_id=default.id)
    groups = [b.security_group(f'tier{i}') for i in range(n_groups)]
    for i, group in enumerate(groups):
        for j in range(n_rules):
            b.rule(group, 'ingress', protocol='tcp', port_range_min=1000 + j,
                   port_range_max=1000 + j, remote_group_id=groups[(i + 1) % n_groups].id)
    for i in range(n_ports):
        b.port(subnet, f'10.0.{i // 200}.{i % 200 + 10}', ofport=i + 1,
               security_groups=[default.id, groups[i % n_groups].id])
    app_id = apps.APP_IDS['security_groups']
    return sum(1 for f in apps.desired_flows(b.build()) if f.app_id == app_id)


def test_flows_grow_with_ports_plus_rules_not_their_product():
    """A port adds its conntrack and clause flows and its address's member flow; a rule its
    conj_id flow and a service flow if no rule had its service yet. Nothing is per (port,
    rule) or per (port, member), as one flow per (port, rule, member) was."""
    base = _flow_count(40, 10)
    per_port = (_flow_count(80, 10) - base) / 40
    per_rule = (_flow_count(40, 20) - base) / 40  # 4 groups x 10 more rules
    assert per_port <= 8 and per_rule <= 2
    assert _flow_count(400, 10) - base == 360 * per_port
    assert _flow_count(40, 80) - base == 280 * per_rule
    assert _flow_count(400, 80) - base == 360 * per_port + 280 * per_rule


@pytest.mark.parametrize('low,high', [(22, 22), (1, 65535), (1000, 1999), (0, 7), (80, 443),
                                      (65535, 65535), (1024, 65535)])
def test_port_masks_cover_exactly_the_range(low, high):
    covered = set()
    for item in port_masks(low, high):
        value, mask = item if isinstance(item, tuple) else (item, 0xffff)
        covered |= {v for v in range(0, 65536) if v & mask == value}
    assert covered == set(range(low, high + 1))


def test_an_icmp_error_about_an_allowed_connection_passes_though_no_rule_lets_icmp_in(net):
    """Conntrack relates the error to the connection it quotes (+rel): the unreachable that
    answers quiet's UDP comes in, while a ping to quiet does not."""
    b, web, inside, outside = net
    group = b.security_group('quiet', ('egress', {}))
    quiet = b.port(b.subnets[web.fixed_ips[0].subnet_id], '10.0.0.200', ofport=4,
                   security_groups=[group.id])
    switch = install(b.build())
    request = udp(quiet, outside, 5000)
    assert switch.outputs(4, **request) == [3]
    assert switch.outputs(3, **icmp(outside, quiet)) == []
    assert switch.outputs(3, **dict(icmp(outside, quiet, kind=3), quoted=request)) == [4]


def test_an_icmp_error_about_no_connection_is_invalid_and_dropped(net):
    """Both ends let any ICMP through, yet an error quoting a packet never sent is +inv."""
    b, web, inside, outside = net
    switch = install(b.build())
    assert switch.outputs(3, **icmp(outside, web)) == [1]
    never_sent = udp(web, outside, 5000)
    assert switch.outputs(3, **dict(icmp(outside, web, kind=3), quoted=never_sent)) == []
    assert switch.outputs(1, **never_sent) == [3]
    assert switch.outputs(3, **dict(icmp(outside, web, kind=3), quoted=never_sent)) == [1]
