"""Table l2_lookup: unicast to a known MAC, broadcast/multicast within the network, isolation
between networks even when they reuse addresses."""
from dragonflow.model import AddressPair
from tests.flowsim import Delivery
from tests.unit.builders import (
    BROADCAST,
    TopologyBuilder,
    arp_request,
    as_sent,
    install,
    ip_of,
    ipv4,
)

MULTICASTS = (BROADCAST, '01:00:5e:00:00:fb', '33:33:00:00:00:01')


def _two_networks():
    """blue: a(1), b(2), c(3), d (remote), a router interface; green: e(4), f(5)."""
    b = TopologyBuilder()
    blue, green = b.network('blue'), b.network('green')
    s_blue, s_green = b.subnet(blue, '10.0.0.0/24'), b.subnet(green, '10.1.0.0/24')
    b.router('r', s_blue, s_green)
    ports = {'a': b.port(s_blue, '10.0.0.11', ofport=1), 'b': b.port(s_blue, '10.0.0.12', ofport=2),
             'c': b.port(s_blue, '10.0.0.13', ofport=3), 'd': b.port(s_blue, '10.0.0.14'),
             'e': b.port(s_green, '10.1.0.11', ofport=4),
             'f': b.port(s_green, '10.1.0.12', ofport=5)}
    return install(b.build()), ports


def test_unicast_reaches_exactly_the_port_unchanged():
    sim, ports = _two_networks()
    packet = ipv4(ports['a'], ports['b'].mac_address, ip_of(ports['b']))
    assert sim.run(1, **packet) == [Delivery(2, as_sent(1, packet))]


def test_unicast_arp_reply_reaches_the_asker_unchanged():
    sim, ports = _two_networks()
    a, b = ports['a'], ports['b']
    reply = dict(arp_request(b, ip_of(a)), eth_dst=a.mac_address, arp_op=2,
                 arp_tha=a.mac_address)
    assert sim.run(2, **reply) == [Delivery(1, as_sent(2, reply))]


def test_unicast_to_another_networks_mac_is_dropped():
    sim, ports = _two_networks()
    assert sim.run(1, **ipv4(ports['a'], ports['e'].mac_address, ip_of(ports['e']))) == []


def test_unicast_to_unknown_mac_is_dropped_not_flooded():
    sim, ports = _two_networks()
    assert sim.run(1, **ipv4(ports['a'], 'fa:16:3e:ff:ff:ff', '10.0.0.99')) == []


def test_unicast_to_own_mac_is_not_reflected():
    sim, ports = _two_networks()
    assert sim.run(1, **ipv4(ports['a'], ports['a'].mac_address, ip_of(ports['a']))) == []


def test_broadcast_and_multicast_reach_every_other_port_of_the_network():
    sim, ports = _two_networks()
    for eth_dst in MULTICASTS:
        packet = ipv4(ports['a'], eth_dst, '10.0.0.255')
        deliveries = sim.run(1, **packet)
        assert sorted(d.port for d in deliveries) == [2, 3], eth_dst
        assert all(d.packet == as_sent(1, packet) for d in deliveries)
        packet = ipv4(ports['f'], eth_dst, '10.1.0.255')
        assert sim.outputs(5, **packet) == [4], eth_dst


def _twin_projects():
    """Two projects, each a network on 10.0.0.0/24 with the same two IPs and MACs."""
    b = TopologyBuilder()
    ports = {}
    for project, ofports in (('red', (1, 2)), ('green', (3, 4))):
        subnet = b.subnet(b.network(project, project=project), '10.0.0.0/24')
        for host, ofport in zip((5, 6), ofports, strict=True):
            ports[project, host] = b.port(subnet, f'10.0.0.{host}', ofport=ofport,
                                          mac=f'fa:16:3e:aa:00:{host:02x}')
    return install(b.build()), ports


def test_same_cidr_and_macs_in_two_projects_stay_apart():
    sim, ports = _twin_projects()
    for project, (src, dst) in (('red', (1, 2)), ('green', (3, 4))):
        sender, target = ports[project, 5], ports[project, 6]
        unicast = ipv4(sender, target.mac_address, ip_of(target))
        assert sim.run(src, **unicast) == [Delivery(dst, as_sent(src, unicast))]
        for eth_dst in MULTICASTS:
            assert sim.outputs(src, **ipv4(sender, eth_dst, '10.0.0.255')) == [dst]
        assert sim.outputs(src, **arp_request(sender, '10.0.0.99')) == [dst]


def test_same_ip_in_two_projects_is_answered_per_network():
    sim, ports = _twin_projects()
    for project, src in (('red', 1), ('green', 3)):
        deliveries = sim.run(src, **arp_request(ports[project, 5], '10.0.0.6'))
        assert [d.port for d in deliveries] == [src]
        assert deliveries[0].packet['arp_sha'] == ports[project, 6].mac_address


VIRTUAL_MAC = 'fa:16:3e:aa:00:01'  # a VRRP router's virtual MAC, as an allowed address pair


def _with_pairs(*names):
    b = TopologyBuilder()
    subnet = b.subnet(b.network('blue'), '10.0.0.0/24')
    ports = {name: b.port(subnet, f'10.0.0.{11 + i}', ofport=i + 1)
             for i, name in enumerate(('a', 'b', 'c'))}
    for name in names:
        ports[name].allowed_address_pairs.append(
            AddressPair(ip_address='10.0.0.100', mac_address=VIRTUAL_MAC))
    return install(b.build()), ports


def test_a_frame_to_an_allowed_address_pairs_mac_reaches_its_port():
    sim, ports = _with_pairs('b')
    packet = ipv4(ports['a'], VIRTUAL_MAC, '10.0.0.100')
    assert sim.outputs(1, **packet) == [2]


def test_a_mac_several_ports_pairs_name_reaches_each_of_them():
    """Nothing is learned: which of the VRRP routers holds the address now, only they know."""
    sim, ports = _with_pairs('b', 'c')
    assert sorted(sim.outputs(1, **ipv4(ports['a'], VIRTUAL_MAC, '10.0.0.100'))) == [2, 3]
