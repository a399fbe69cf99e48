"""Table classify: only known, enabled local ports get into the pipeline."""
from dragonflow.controller.reconciler import Reconciler
from tests.unit.builders import BROADCAST, TopologyBuilder, arp_request, install, ip_of, ipv4


def _topology(**down):
    b = TopologyBuilder()
    net = b.network('blue')
    subnet = b.subnet(net, '10.0.0.0/24')
    b.router('r', subnet)
    ports = {name: b.port(subnet, f'10.0.0.{10 + ofport}', ofport=ofport, name=name,
                          admin_state_up=name not in down)
             for ofport, name in enumerate(('a', 'b', 'c'), start=1)}
    b.ofports['port-not-in-the-store'] = 9
    return b, ports


def test_known_port_enters_the_pipeline():
    b, ports = _topology()
    sim = install(b.build())
    assert sorted(sim.outputs(1, **ipv4(ports['a'], BROADCAST, '10.0.0.255'))) == [2, 3]


def test_packet_from_unknown_ofport_is_dropped():
    b, ports = _topology()
    sim = install(b.build())
    for in_port in (7, 9):  # never seen, and plugged but unknown to the store
        assert sim.run(in_port, **ipv4(ports['a'], BROADCAST, '10.0.0.255')) == []
        assert sim.run(in_port, **ipv4(ports['a'], ports['b'].mac_address, ip_of(ports['b']))) \
            == []
        assert sim.run(in_port, **arp_request(ports['a'], '10.0.0.1')) == []


def test_admin_down_port_sends_nothing():
    b, ports = _topology(c=True)
    sim = install(b.build())
    c = ports['c']
    assert sim.run(3, **ipv4(c, BROADCAST, '10.0.0.255')) == []
    assert sim.run(3, **ipv4(c, ports['a'].mac_address, ip_of(ports['a']))) == []
    assert sim.run(3, **arp_request(c, '10.0.0.1')) == []
    assert sim.run(3, **arp_request(c, ip_of(ports['a']))) == []


def test_admin_down_port_receives_nothing():
    b, ports = _topology(c=True)
    sim = install(b.build())
    a, c = ports['a'], ports['c']
    assert sim.outputs(1, **ipv4(a, BROADCAST, '10.0.0.255')) == [2]
    assert sim.run(1, **ipv4(a, c.mac_address, ip_of(c))) == []


def test_port_coming_up_starts_sending():
    b, ports = _topology(c=True)
    sim = install(b.build())
    ports['c'].admin_state_up = True
    reconciler = Reconciler(sim)
    reconciler.resync()
    install(b.build(), reconciler)
    assert sorted(sim.outputs(3, **ipv4(ports['c'], BROADCAST, '10.0.0.255'))) == [1, 2]

