"""Tunnels: remote ports are reached through the tunnel port with VNI = network key; packets
from tunnels reach local ports only, or wait in the controller for a port about to be plugged
here; broadcasts go once to each other chassis, never back."""
from dragonflow.controller.apps import tunnels
from dragonflow.controller.flows import CONTROLLER
from tests.unit.builders import (
    BROADCAST,
    TUNNEL_OFPORT,
    TopologyBuilder,
    arp_request,
    frame,
    install,
    ip_of,
    ipv4,
)

REMOTE_HOST = {'binding:host_id': 'chassis-2'}
OTHER_HOST = {'binding:host_id': 'chassis-3'}


def two_chassis():
    b = TopologyBuilder()
    b.remote_chassis('chassis-2', '172.31.0.12')
    b.remote_chassis('chassis-3', '172.31.0.13')
    net = b.network('a')
    subnet = b.subnet(net, '10.0.1.0/24')
    local = b.port(subnet, '10.0.1.5', ofport=1)
    local2 = b.port(subnet, '10.0.1.6', ofport=2)
    remote = b.port(subnet, '10.0.1.7', **REMOTE_HOST)
    remote_same_chassis = b.port(subnet, '10.0.1.8', **REMOTE_HOST)
    other = b.port(subnet, '10.0.1.9', **OTHER_HOST)
    return b, net, subnet, local, local2, remote, remote_same_chassis, other


def test_unicast_to_a_remote_port_leaves_through_the_tunnel_with_the_network_vni():
    b, net, _, local, _, remote, _, _ = two_chassis()
    switch = install(b.build())
    [delivery] = switch.run(1, **ipv4(local, remote.mac_address, ip_of(remote)))
    assert delivery.port == TUNNEL_OFPORT
    assert delivery.packet['tunnel_id'] == net.key
    assert delivery.packet['tun_ipv4_dst'] == '172.31.0.12'


def test_routed_packet_to_a_remote_port_is_routed_here_and_crosses_once():
    b = TopologyBuilder()
    b.remote_chassis('chassis-2', '172.31.0.12')
    s1 = b.subnet(b.network('a'), '10.0.1.0/24')
    net_b = b.network('b')
    s2 = b.subnet(net_b, '10.0.2.0/24')
    local = b.port(s1, '10.0.1.5', ofport=1)
    remote = b.port(s2, '10.0.2.5', **REMOTE_HOST)
    b.router('r', s1, s2)
    switch = install(b.build())
    router_mac = b.ports[b.routers['router-r'].interfaces[0].port_id].mac_address
    [delivery] = switch.run(1, **ipv4(local, router_mac, ip_of(remote)))
    assert delivery.port == TUNNEL_OFPORT
    assert delivery.packet['tunnel_id'] == net_b.key  # the destination network's VNI
    assert delivery.packet['eth_dst'] == remote.mac_address
    assert delivery.packet['ip_ttl'] == 63


def test_broadcast_from_a_local_port_goes_once_to_each_other_chassis():
    b, net, _, local, _, _, _, _ = two_chassis()
    deliveries = install(b.build()).run(1, **arp_request(local, '10.0.1.99'))
    assert sorted(d.port for d in deliveries if d.port != TUNNEL_OFPORT) == [2]
    tunnelled = sorted(d.packet['tun_ipv4_dst'] for d in deliveries if d.port == TUNNEL_OFPORT)
    assert tunnelled == ['172.31.0.12', '172.31.0.13']


def test_from_a_tunnel_only_local_ports_receive():
    b, net, _, local, local2, remote, _, _ = two_chassis()
    switch = install(b.build())
    unicast = frame(remote, local.mac_address, tunnel_id=net.key)
    assert switch.outputs(TUNNEL_OFPORT, **unicast) == [1]
    to_remote = frame(remote, remote.mac_address, tunnel_id=net.key)
    assert switch.outputs(TUNNEL_OFPORT, **to_remote) == [CONTROLLER]  # held, never sent back
    broadcast = frame(remote, BROADCAST, tunnel_id=net.key)
    assert sorted(switch.outputs(TUNNEL_OFPORT, **broadcast)) == [1, 2]


def test_unknown_vni_and_networks_without_local_ports_are_dropped():
    b, net, _, local, _, remote, _, _ = two_chassis()
    elsewhere = b.subnet(b.network('elsewhere'), '10.0.9.0/24')
    stranger = b.port(elsewhere, '10.0.9.5', **REMOTE_HOST)
    switch = install(b.build())
    assert switch.outputs(TUNNEL_OFPORT, **frame(remote, local.mac_address,
                                                 tunnel_id=net.key + 100)) == []
    vni = b.networks[elsewhere.network_id].key
    assert switch.outputs(TUNNEL_OFPORT, **frame(stranger, BROADCAST, tunnel_id=vni)) == []


def test_without_a_tunnel_port_remote_ports_get_no_flows():
    b = TopologyBuilder()
    subnet = b.subnet(b.network('a'), '10.0.1.0/24')
    local = b.port(subnet, '10.0.1.5', ofport=1)
    remote = b.port(subnet, '10.0.1.7', **REMOTE_HOST)
    assert install(b.build()).outputs(1, **ipv4(local, remote.mac_address, ip_of(remote))) == []


def test_a_port_bound_nowhere_yet_is_reached_on_every_chassis_of_its_network():
    b, net, subnet, local, _, _, _, _ = two_chassis()
    arriving = b.port(subnet, '10.0.1.20')  # its VM is being plugged somewhere
    switch = install(b.build())
    deliveries = switch.run(1, **ipv4(local, arriving.mac_address, ip_of(arriving)))
    assert sorted(d.packet['tun_ipv4_dst'] for d in deliveries) == ['172.31.0.12', '172.31.0.13']
    assert {d.port for d in deliveries} == {TUNNEL_OFPORT}
    assert {d.packet['tunnel_id'] for d in deliveries} == {net.key}
    b.ports[arriving.id] = arriving.model_copy(update={'binding_host_id': 'chassis-3'})
    [delivery] = install(b.build()).run(1, **ipv4(local, arriving.mac_address, ip_of(arriving)))
    assert delivery.packet['tun_ipv4_dst'] == '172.31.0.13'


def test_a_network_with_a_port_bound_here_but_not_plugged_takes_packets_from_tunnels():
    """Nova binds before it plugs: its packets are held here until the VM is plugged."""
    b = TopologyBuilder()
    b.remote_chassis('chassis-2', '172.31.0.12')
    net = b.network('a')
    subnet = b.subnet(net, '10.0.1.0/24')
    remote = b.port(subnet, '10.0.1.7', **REMOTE_HOST)
    bound_here = b.port(subnet, '10.0.1.8', **{'binding:host_id': b.chassis_id})
    to_port = frame(remote, bound_here.mac_address, tunnel_id=net.key)
    assert install(b.build()).outputs(TUNNEL_OFPORT, **to_port) == [CONTROLLER]


def test_from_a_tunnel_a_packet_for_a_mac_not_plugged_here_goes_to_the_controller():
    """Its port may be plugged here next (bound nowhere yet, or bound here as Nova binds before
    it plugs, or not known here yet): the controller holds the packet for a while. A drop
    would stay cached in the datapath after the port's flows are in."""
    b, net, subnet, _, _, remote, _, _ = two_chassis()
    unbound = b.port(subnet, '10.0.1.20')
    bound_here = b.port(subnet, '10.0.1.21', **{'binding:host_id': b.chassis_id})
    switch = install(b.build())
    for mac in (unbound.mac_address, bound_here.mac_address, 'fa:16:3e:99:99:99'):
        to_port = frame(remote, mac, tunnel_id=net.key)
        assert switch.outputs(TUNNEL_OFPORT, **to_port) == [CONTROLLER]


def test_a_held_packet_sent_on_once_its_port_is_plugged_reaches_only_that_port():
    b, net, subnet, _, _, remote, _, _ = two_chassis()
    arriving = b.port(subnet, '10.0.1.20')
    b.ofports[arriving.id] = 7
    topology = b.build()
    held = ipv4(remote, arriving.mac_address, ip_of(arriving))
    [delivery] = install(topology).packet_out(
        tunnels.release_actions(net, topology.ports[arriving.id]), **held)
    assert delivery.port == 7
    assert delivery.packet['eth_dst'] == arriving.mac_address
