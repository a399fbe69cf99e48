"""Table arp_responder: requests for known addresses are answered back out of the asking port;
the rest are flooded within the network."""
from dragonflow.controller import pipeline as p
from tests.flowsim import Delivery
from tests.unit.builders import TopologyBuilder, arp_request, as_sent, install, ip_of


def _topology():
    """blue 10.0.0.0/24: a(1), b(2), c (remote), router r; green 10.1.0.0/24: d(4), e(5)."""
    b = TopologyBuilder()
    blue, green = b.network('blue'), b.network('green')
    s_blue, s_green = b.subnet(blue, '10.0.0.0/24'), b.subnet(green, '10.1.0.0/24')
    router = b.router('r', s_blue)
    ports = {'a': b.port(s_blue, '10.0.0.11', ofport=1), 'b': b.port(s_blue, '10.0.0.12', ofport=2),
             'c': b.port(s_blue, '10.0.0.13'),
             'd': b.port(s_green, '10.1.0.11', ofport=4),
             'e': b.port(s_green, '10.1.0.12', ofport=5)}
    ports['gw'] = b.ports[router.interfaces[0].port_id]
    return install(b.build()), ports


def _reply(asker, ip, mac):
    """The reply the asking port must get, every Ethernet and ARP field spelled out."""
    return {'eth_src': mac, 'eth_dst': asker.mac_address, 'eth_type': p.ETH_TYPE_ARP,
            'arp_op': p.ARP_REPLY, 'arp_sha': mac, 'arp_spa': ip,
            'arp_tha': asker.mac_address, 'arp_tpa': ip_of(asker)}


def test_router_interface_ip_is_answered_back_to_the_asker():
    sim, ports = _topology()
    a, gw = ports['a'], ports['gw']
    assert sim.run(1, **arp_request(a, '10.0.0.1')) == \
        [Delivery(1, as_sent(1, _reply(a, '10.0.0.1', gw.mac_address)))]


def test_port_ips_are_answered_local_or_remote():
    sim, ports = _topology()
    a = ports['a']
    for name in ('b', 'c'):
        target = ports[name]
        assert sim.run(1, **arp_request(a, ip_of(target))) == \
            [Delivery(1, as_sent(1, _reply(a, ip_of(target), target.mac_address)))]


def test_unknown_ip_is_flooded_within_the_network_only():
    sim, ports = _topology()
    request = arp_request(ports['a'], '10.0.0.99')
    assert sim.run(1, **request) == [Delivery(2, as_sent(1, request))]
    request = arp_request(ports['d'], '10.1.0.99')
    assert sim.run(4, **request) == [Delivery(5, as_sent(4, request))]


def test_another_networks_ip_is_not_answered():
    sim, ports = _topology()
    request = arp_request(ports['d'], ip_of(ports['b']))
    assert sim.run(4, **request) == [Delivery(5, as_sent(4, request))]
    request = arp_request(ports['d'], '10.0.0.1')  # r has no interface on green
    assert sim.run(4, **request) == [Delivery(5, as_sent(4, request))]


def test_own_address_probe_and_gratuitous_arp_are_not_answered():
    """Duplicate address detection (sender 0.0.0.0) and gratuitous ARP (sender = target) must
    not be answered with the port's own MAC: the port would think its address is taken."""
    sim, ports = _topology()
    a = ports['a']
    for sender_ip in ('0.0.0.0', ip_of(a)):
        request = arp_request(a, ip_of(a), sender_ip=sender_ip)
        assert sim.run(1, **request) == [Delivery(2, as_sent(1, request))]


def test_another_port_asking_for_an_address_is_still_answered():
    sim, ports = _topology()
    a, b = ports['a'], ports['b']
    assert sim.run(2, **arp_request(b, ip_of(a))) == \
        [Delivery(2, as_sent(2, _reply(b, ip_of(a), a.mac_address)))]
