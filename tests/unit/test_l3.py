"""Table l3: distributed routing between the subnets of a router."""
import pytest

from dragonflow.controller import pipeline as p
from dragonflow.controller.reconciler import Reconciler
from tests.flowsim import Delivery, FlowTableSimulator
from tests.unit.builders import TopologyBuilder, arp_request, install, ip_of, ipv4

NH = '10.0.2.9'  # the address of port nh, the nexthop of the extra routes


class Cloud:
    """A router r on s1 (10.0.1.0/24) and s2 (10.0.2.0/24), s3 (10.0.3.0/24) not on it.

    Ports: a (ofport 1) on s1, b (2) and nh (4) on s2, c (3) on s3.
    """

    def __init__(self, routes=()):
        self.builder = b = TopologyBuilder()
        self.s1, self.s2, self.s3 = (b.subnet(b.network(f'n{i}'), f'10.0.{i}.0/24')
                                     for i in (1, 2, 3))
        self.router = b.router('r', self.s1, self.s2, routes=list(routes))
        self.a = b.port(self.s1, '10.0.1.5', ofport=1)
        self.b = b.port(self.s2, '10.0.2.5', ofport=2)
        self.c = b.port(self.s3, '10.0.3.5', ofport=3)
        self.nh = b.port(self.s2, '10.0.2.9', ofport=4)
        self.reconciler = Reconciler(FlowTableSimulator())
        self.sync()

    def sync(self):
        return install(self.builder.build(), self.reconciler)

    @property
    def sim(self):
        return self.reconciler.switch

    def gateway_mac(self, subnet):
        interface = next(i for i in self.router.interfaces if i.subnet_id == subnet.id)
        return self.builder.ports[interface.port_id].mac_address

    def subnet_of(self, port):
        return next(s for s in (self.s1, self.s2, self.s3) if s.network_id == port.network_id)

    def send(self, src, ipv4_dst, ofport, ttl=64):
        """src sends to ipv4_dst through its gateway; every copy that leaves br-int."""
        packet = ipv4(src, self.gateway_mac(self.subnet_of(src)), ipv4_dst, ttl=ttl)
        return self.sim.run(ofport, **packet)

    def routed(self, src, ofport, dst, dst_ofport, ipv4_dst=None, ttl=64):
        """The single delivery a correctly routed packet makes: TTL one less, from the
        router's MAC on the destination subnet to the destination's MAC, IPs unchanged."""
        packet = ipv4(src, dst.mac_address, ipv4_dst or ip_of(dst), ttl=ttl - 1,
                      eth_src=self.gateway_mac(self.subnet_of(dst)))
        return [Delivery(dst_ofport, {'in_port': ofport, **packet})]


def test_routed_packet_arrives_with_ttl_decremented_and_macs_rewritten():
    cloud = Cloud()
    deliveries = cloud.send(cloud.a, ip_of(cloud.b), 1)
    assert deliveries == cloud.routed(cloud.a, 1, cloud.b, 2)
    packet = deliveries[0].packet
    assert packet['ip_ttl'] == 63
    assert packet['eth_src'] == cloud.gateway_mac(cloud.s2)
    assert packet['eth_dst'] == cloud.b.mac_address
    assert (packet['ipv4_src'], packet['ipv4_dst']) == (ip_of(cloud.a), ip_of(cloud.b))
    assert cloud.send(cloud.b, ip_of(cloud.a), 2) == cloud.routed(cloud.b, 2, cloud.a, 1)


def test_arp_for_the_gateway_then_route():
    """What a VM does: ARP for its gateway, then send to the MAC it learned."""
    cloud = Cloud()
    [reply] = cloud.sim.run(1, **arp_request(cloud.a, cloud.s1.gateway_ip))
    assert reply.port == 1 and reply.packet['arp_spa'] == cloud.s1.gateway_ip
    gateway_mac = reply.packet['arp_sha']
    deliveries = cloud.sim.run(1, **ipv4(cloud.a, gateway_mac, ip_of(cloud.b)))
    assert deliveries == cloud.routed(cloud.a, 1, cloud.b, 2)


def test_subnet_not_on_the_router_is_unreachable():
    cloud = Cloud()
    assert cloud.send(cloud.a, ip_of(cloud.c), 1) == []
    assert cloud.send(cloud.a, '10.0.2.77', 1) == []  # on s2 but nobody's address
    # c's gateway address is no router interface: only the DHCP server answers ARP for it,
    # and what is sent to that MAC goes nowhere.
    request = arp_request(cloud.c, cloud.s3.gateway_ip)
    [answer] = cloud.sim.run(3, **request)
    server_mac = answer.packet['arp_sha']
    assert server_mac.startswith('02:df:')
    assert cloud.sim.run(3, **ipv4(cloud.c, server_mac, ip_of(cloud.a))) == []


def test_adding_and_removing_an_interface():
    cloud = Cloud()
    cloud.builder.add_interface(cloud.router, cloud.s3)
    cloud.sync()
    assert cloud.send(cloud.a, ip_of(cloud.c), 1) == cloud.routed(cloud.a, 1, cloud.c, 3)
    assert cloud.send(cloud.c, ip_of(cloud.a), 3) == cloud.routed(cloud.c, 3, cloud.a, 1)
    gateway_mac = cloud.gateway_mac(cloud.s3)

    cloud.builder.remove_interface(cloud.router, cloud.s3)
    cloud.sync()
    assert cloud.send(cloud.a, ip_of(cloud.c), 1) == []
    assert cloud.sim.run(3, **ipv4(cloud.c, gateway_mac, ip_of(cloud.a))) == []
    assert cloud.send(cloud.a, ip_of(cloud.b), 1) == cloud.routed(cloud.a, 1, cloud.b, 2)


def test_extra_route_forwards_the_prefix_to_its_nexthop():
    cloud = Cloud(routes=[{'destination': '192.168.0.0/16', 'nexthop': NH}])
    for dst in ('192.168.7.7', '192.168.200.1'):
        assert cloud.send(cloud.a, dst, 1) == cloud.routed(cloud.a, 1, cloud.nh, 4, dst)
    assert cloud.send(cloud.a, '192.169.0.1', 1) == []


def test_longest_prefix_wins():
    nh, b = NH, '10.0.2.5'
    cloud = Cloud(routes=[{'destination': '192.168.0.0/16', 'nexthop': nh},
                          {'destination': '192.168.7.0/24', 'nexthop': b},
                          {'destination': '192.168.7.7/32', 'nexthop': nh},
                          {'destination': '10.0.2.0/24', 'nexthop': nh}])
    assert cloud.send(cloud.a, '192.168.8.8', 1) == cloud.routed(cloud.a, 1, cloud.nh, 4,
                                                                 '192.168.8.8')
    assert cloud.send(cloud.a, '192.168.7.8', 1) == cloud.routed(cloud.a, 1, cloud.b, 2,
                                                                 '192.168.7.8')
    assert cloud.send(cloud.a, '192.168.7.7', 1) == cloud.routed(cloud.a, 1, cloud.nh, 4,
                                                                 '192.168.7.7')
    # A port's own address beats a route covering it.
    assert cloud.send(cloud.a, b, 1) == cloud.routed(cloud.a, 1, cloud.b, 2)


def test_default_route_is_matched_without_an_address():
    """The switch reports a /0 as no ipv4_dst at all; the flow must say the same, or every
    resync would replace it."""
    cloud = Cloud(routes=[{'destination': '0.0.0.0/0', 'nexthop': NH}])
    assert cloud.send(cloud.a, '8.8.8.8', 1) == cloud.routed(cloud.a, 1, cloud.nh, 4, '8.8.8.8')
    [default] = [f for f in cloud.sim.table(p.L3.number) if f.priority == 100]
    assert 'ipv4_dst' not in default.match.fields()


def test_route_whose_nexthop_is_not_on_the_router_is_ignored():
    cloud = Cloud(routes=[{'destination': '192.168.0.0/16', 'nexthop': '10.0.3.5'},
                          {'destination': '172.16.0.0/12', 'nexthop': '10.0.2.77'}])
    assert cloud.send(cloud.a, '192.168.1.1', 1) == []
    assert cloud.send(cloud.a, '172.16.1.1', 1) == []


def test_routes_to_one_prefix_with_two_nexthops_pick_one_in_any_order():
    routes = [{'destination': '192.168.0.0/16', 'nexthop': NH},
              {'destination': '192.168.0.0/16', 'nexthop': '10.0.2.5'}]
    for order in (routes, routes[::-1]):
        cloud = Cloud(routes=order)
        assert cloud.send(cloud.a, '192.168.1.1', 1) == \
            cloud.routed(cloud.a, 1, cloud.b, 2, '192.168.1.1')


@pytest.mark.parametrize('ttl', [1, 0])
def test_expiring_ttl_is_not_delivered(ttl):
    cloud = Cloud()
    assert cloud.send(cloud.a, ip_of(cloud.b), 1, ttl=ttl) == []


def test_ttl_2_is_delivered_with_ttl_1():
    cloud = Cloud()
    assert cloud.send(cloud.a, ip_of(cloud.b), 1, ttl=2) == \
        cloud.routed(cloud.a, 1, cloud.b, 2, ttl=2)


def _two_routers():
    """Projects p1 and p2, each a router on 10.0.1.0/24 and 10.0.2.0/24 with the same IPs."""
    b = TopologyBuilder()
    sides = {}
    for project, first_ofport in (('p1', 1), ('p2', 3)):
        s1 = b.subnet(b.network(f'{project}-n1', project=project), '10.0.1.0/24')
        s2 = b.subnet(b.network(f'{project}-n2', project=project), '10.0.2.0/24')
        router = b.router(project, s1, s2)
        gateway = b.ports[router.interfaces[0].port_id]
        sides[project] = (b.port(s1, '10.0.1.5', ofport=first_ofport),
                          b.port(s2, '10.0.2.5', ofport=first_ofport + 1), gateway)
    return install(b.build()), sides


def test_two_routers_do_not_leak_into_each_other():
    sim, sides = _two_routers()
    for project, (src, dst) in (('p1', (1, 2)), ('p2', (3, 4))):
        a, b, gateway = sides[project]
        deliveries = sim.run(src, **ipv4(a, gateway.mac_address, '10.0.2.5'))
        assert [d.port for d in deliveries] == [dst]
        assert deliveries[0].packet['eth_dst'] == b.mac_address
    # Another project's router MAC is unknown on this network.
    p1_a, p2_gateway = sides['p1'][0], sides['p2'][2]
    assert sim.run(1, **ipv4(p1_a, p2_gateway.mac_address, '10.0.2.5')) == []


def test_routes_of_one_router_are_not_in_another():
    sim, _ = _two_routers()
    by_router = {}
    for flow in sim.table(p.L3.number):
        by_router.setdefault(flow.match['reg5'], set()).add(flow.match['ipv4_dst'])
    assert len(by_router) == 2
    assert all(dsts == {'10.0.1.5', '10.0.2.5'} for dsts in by_router.values())
