"""Tunnels: remote ports are reached through the tunnel port of the network's type (VXLAN,
Geneve, GRE; a network of no type: the first) with its tunnel key (segmentation id; the
network key for old records); packets from tunnels reach local ports only, or wait in the
controller for a port about to be plugged here; broadcasts go once to each other chassis,
never back; physical networks never enter a tunnel."""
import pytest

from dragonflow.controller.apps import tunnels
from dragonflow.controller.flows import CONTROLLER
from dragonflow.model import AddressPair, Chassis
from tests.unit.builders import (
    BROADCAST,
    TUNNEL_OFPORT,
    TUNNEL_OFPORTS,
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


# Tunnel types: one tunnel port per type; a network crosses in its type's with its tunnel_key.
def typed_chassis(*types, peer_types=('vxlan', 'geneve', 'gre')):
    b = TopologyBuilder()
    b.tunnel_types(*types)
    b.chassis['chassis-2'] = Chassis(id='chassis-2', tunnel_ip='172.31.0.12',
                                     tunnel_types=list(peer_types))
    return b


def _network_with_ports(b, name, **provider):
    net = b.network(name, **provider)
    subnet = b.subnet(net, f'10.0.{len(b.networks)}.0/24')
    local = b.port(subnet, f'10.0.{len(b.networks)}.5', ofport=len(b.ofports) + 1)
    remote = b.port(subnet, f'10.0.{len(b.networks)}.7', **REMOTE_HOST)
    return net, local, remote


@pytest.mark.parametrize('kind', ['vxlan', 'geneve', 'gre'])
def test_a_network_crosses_in_its_types_tunnel_with_its_segmentation_id(kind):
    b = typed_chassis('vxlan', 'geneve', 'gre')
    net, local, remote = _network_with_ports(b, 'n', network_type=kind, segmentation_id=5000)
    switch = install(b.build())
    [delivery] = switch.run(local_ofport(b, local), **ipv4(local, remote.mac_address,
                                                          ip_of(remote)))
    assert delivery.port == TUNNEL_OFPORTS[kind]
    assert delivery.packet['tunnel_id'] == 5000 != net.key
    back = frame(remote, local.mac_address, tunnel_id=5000)
    assert switch.outputs(TUNNEL_OFPORTS[kind], **back) == [local_ofport(b, local)]
    for other in set(TUNNEL_OFPORTS.values()) - {TUNNEL_OFPORTS[kind]}:
        assert switch.outputs(other, **back) == []  # classified per (tunnel port, key)
    assert switch.outputs(TUNNEL_OFPORTS[kind], **dict(back, tunnel_id=net.key)) == []


def test_two_types_may_carry_one_key_for_two_networks():
    b = typed_chassis('vxlan', 'gre')
    vx, vx_local, _ = _network_with_ports(b, 'vx', network_type='vxlan', segmentation_id=7)
    gre, gre_local, _ = _network_with_ports(b, 'g', network_type='gre', segmentation_id=7)
    switch = install(b.build())
    assert switch.outputs(TUNNEL_OFPORTS['vxlan'], **frame(vx_local, vx_local.mac_address,
                                                           tunnel_id=7)) == [1]
    assert switch.outputs(TUNNEL_OFPORTS['gre'], **frame(gre_local, gre_local.mac_address,
                                                         tunnel_id=7)) == [2]


def test_a_network_of_no_type_crosses_in_the_first_type_with_its_key():
    b = typed_chassis('gre', 'vxlan', peer_types=('gre', 'vxlan'))
    net, local, remote = _network_with_ports(b, 'old')
    [delivery] = install(b.build()).run(1, **ipv4(local, remote.mac_address, ip_of(remote)))
    assert delivery.port == TUNNEL_OFPORTS['gre'] and delivery.packet['tunnel_id'] == net.key


def test_no_tunnel_to_a_chassis_that_would_take_the_network_in_another_type():
    """gre here, but the peer has no gre: it would take the network in its vxlan."""
    b = typed_chassis('vxlan', 'gre', peer_types=('vxlan',))
    _, local, remote = _network_with_ports(b, 'g', network_type='gre', segmentation_id=9)
    assert install(b.build()).run(1, **ipv4(local, remote.mac_address, ip_of(remote))) == []


def test_a_type_neither_chassis_terminates_crosses_in_their_first_type(caplog):
    """Controllers given tunnel_types = geneve while df-api makes vxlan networks (Neutron's
    default tenant type): the networks still cross, in geneve, and the chassis says why."""
    b = typed_chassis('geneve', peer_types=('geneve',))
    b.chassis[b.chassis_id] = Chassis(id=b.chassis_id, tunnel_ip='172.31.0.11',
                                      tunnel_types=['geneve'])
    _, local, remote = _network_with_ports(b, 'v', network_type='vxlan', segmentation_id=10)
    [delivery] = install(b.build()).run(1, **ipv4(local, remote.mac_address, ip_of(remote)))
    assert delivery.port == TUNNEL_OFPORTS['geneve'] and delivery.packet['tunnel_id'] == 10
    assert 'crosses in geneve' in caplog.text


def test_a_physical_network_never_enters_a_tunnel():
    b = typed_chassis('vxlan')
    net = b.provider_network('v', 100)
    subnet = b.subnet(net, '10.0.9.0/24')
    local = b.port(subnet, '10.0.9.5', ofport=1)
    remote = b.port(subnet, '10.0.9.7', **REMOTE_HOST)
    switch = install(b.build())
    assert TUNNEL_OFPORTS['vxlan'] not in switch.outputs(
        1, **ipv4(local, remote.mac_address, ip_of(remote)))
    assert TUNNEL_OFPORTS['vxlan'] not in switch.outputs(1, **arp_request(local, '10.0.9.99'))
    assert not any(f for f in tunnels.flows(b.build()))


def local_ofport(b, port) -> int:
    return b.ofports[port.id]


def test_a_topology_that_knows_one_tunnel_port_only_uses_it_for_every_type():
    """Callers from before tunnel types give tunnel_ofport alone."""
    b = TopologyBuilder()
    b.remote_chassis('chassis-2', '172.31.0.12')
    _, local, remote = _network_with_ports(b, 'n', network_type='vxlan', segmentation_id=77)
    [delivery] = install(b.build()).run(1, **ipv4(local, remote.mac_address, ip_of(remote)))
    assert delivery.port == TUNNEL_OFPORT and delivery.packet['tunnel_id'] == 77


def test_from_a_tunnel_a_frame_to_a_local_ports_pair_mac_reaches_it():
    b, net, _, local, _, remote, _, _ = two_chassis()
    local.allowed_address_pairs.append(
        AddressPair(ip_address='10.0.1.100', mac_address='fa:16:3e:aa:00:01'))
    switch = install(b.build())
    assert switch.outputs(TUNNEL_OFPORT, **frame(remote, 'fa:16:3e:aa:00:01',
                                                  tunnel_id=net.key)) == [1]


def test_a_gateway_chassis_takes_its_routers_networks_from_tunnels_without_a_local_port():
    """Their traffic out comes to it while it holds the router's gateway (snat.py); until
    then what comes waits in the controller."""
    b, _, _, _, _, _, _, _ = two_chassis()
    elsewhere = b.subnet(b.network('elsewhere'), '10.0.9.0/24')
    stranger = b.port(elsewhere, '10.0.9.5', **REMOTE_HOST)
    _, external = b.external_network('public', '172.24.4.0/24')
    router = b.router('r', elsewhere)
    b.router_gateway(router, external, '172.24.4.10')
    vni = b.networks[elsewhere.network_id].key
    to_gateway = frame(stranger, b.ports[router.gateway_port_id].mac_address, tunnel_id=vni)
    assert install(b.build()).outputs(TUNNEL_OFPORT, **to_gateway) == []
    b.gateway_chassis(router, 'chassis-2', b.chassis_id)
    assert install(b.build()).outputs(TUNNEL_OFPORT, **to_gateway) == [CONTROLLER]
