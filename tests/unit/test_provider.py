"""Provider (flat and VLAN) networks through the simulator: frames in from the physnet's patch
port by VLAN id to local ports only, frames out tagged through the patch port and never
through a tunnel, routed frames with this chassis' router MAC, and the services that run
before l2 (DHCP, ARP responder, port security, security groups) as on any network."""
import pytest

from dragonflow.controller import apps
from dragonflow.controller import pipeline as p
from dragonflow.controller.flows import CONTROLLER
from dragonflow.controller.reconciler import Reconciler
from tests.flowsim import FlowTableSimulator
from tests.unit.builders import (
    BROADCAST,
    PATCH_OFPORT,
    ROUTER_MAC,
    TUNNEL_OFPORT,
    TopologyBuilder,
    arp_request,
    frame,
    install,
    ip_of,
    ipv4,
    only,
    read_back,
)

VID = 101
TAGGED = 0x1000 | VID
REMOTE_HOST = {'binding:host_id': 'chassis-2'}
UPSTREAM_MAC = 'fa:16:3e:99:99:01'  # a machine of the physical network, not a port


class Cloud:
    """VLAN network vlan (10.0.5.0/24, VLAN 101 on physnet1): local ports a (ofport 1) and
    b (2), remote port far on chassis-2; flat network flat (172.24.4.0/24) with local port
    f (3); tunnel network t (10.0.6.0/24) with local port t1 (4), remote t2, routed to vlan
    by router r. chassis-2 is also a tunnel peer: nothing of vlan may go there."""

    def __init__(self, mapped=True, **ports):
        self.b = b = TopologyBuilder()
        b.remote_chassis('chassis-2', '172.31.0.12')
        self.vlan = b.provider_network('vlan', VID, mapped=mapped)
        self.vlan_subnet = b.subnet(self.vlan, '10.0.5.0/24')
        self.a = b.port(self.vlan_subnet, '10.0.5.5', ofport=1, **ports)
        self.b_ = b.port(self.vlan_subnet, '10.0.5.6', ofport=2)
        self.far = b.port(self.vlan_subnet, '10.0.5.7', **REMOTE_HOST)
        self.flat = b.provider_network('flat', mapped=mapped)
        self.flat_subnet = b.subnet(self.flat, '172.24.4.0/24')
        self.f = b.port(self.flat_subnet, '172.24.4.5', ofport=3)
        self.t = b.network('t')
        self.t_subnet = b.subnet(self.t, '10.0.6.0/24')
        self.t1 = b.port(self.t_subnet, '10.0.6.5', ofport=4)
        self.t2 = b.port(self.t_subnet, '10.0.6.6', **REMOTE_HOST)
        self.router = b.router('r', self.vlan_subnet, self.t_subnet)
        self.reconciler = Reconciler(FlowTableSimulator())
        self.sync()

    def sync(self):
        return install(self.b.build(), self.reconciler)

    @property
    def switch(self):
        return self.reconciler.switch

    def interface_mac(self, subnet):
        interface = next(i for i in self.router.interfaces if i.subnet_id == subnet.id)
        return self.b.ports[interface.port_id].mac_address

    def from_physical(self, packet, tag=TAGGED):
        return self.switch.run(PATCH_OFPORT, **(dict(packet, vlan_vid=tag) if tag else packet))


@pytest.fixture
def cloud():
    return Cloud()


def test_a_tagged_frame_reaches_the_local_port_untagged(cloud):
    delivery = only(cloud.from_physical(ipv4(cloud.far, cloud.a.mac_address, ip_of(cloud.a))))
    assert delivery.port == 1 and 'vlan_vid' not in delivery.packet
    assert delivery.packet['eth_src'] == cloud.far.mac_address


def test_frames_of_another_vlan_untagged_or_for_no_local_port_are_dropped(cloud):
    to_a = ipv4(cloud.far, cloud.a.mac_address, ip_of(cloud.a))
    assert cloud.from_physical(to_a, tag=0x1000 | 102) == []
    assert cloud.from_physical(to_a, tag=None) == []  # untagged: the flat network's
    assert cloud.from_physical(ipv4(cloud.far, UPSTREAM_MAC, '10.0.5.99')) == []
    assert cloud.from_physical(ipv4(cloud.far, cloud.far.mac_address, ip_of(cloud.far))) == []


def test_the_flat_network_takes_untagged_frames(cloud):
    packet = ipv4(cloud.far, cloud.f.mac_address, ip_of(cloud.f), eth_src=UPSTREAM_MAC)
    assert only(cloud.from_physical(packet, tag=None)).port == 3


def test_a_broadcast_from_the_physical_network_reaches_local_ports_only(cloud):
    deliveries = cloud.from_physical(arp_request(cloud.far, '10.0.5.99'))
    assert sorted(d.port for d in deliveries) == [1, 2]  # never back out, never a tunnel
    assert all('vlan_vid' not in d.packet for d in deliveries)


@pytest.mark.parametrize('sender', ['f', 'a'])
def test_a_frame_a_vm_tagged_itself_goes_nowhere(cloud, sender):
    """From the flat network's f it would leave untouched, tagged into VLAN 101 (a's
    network), and from a's own VLAN network double-tagged: a VM's port is an access port."""
    port = getattr(cloud, sender)
    untagged = arp_request(port, '10.0.5.6' if sender == 'a' else '172.24.4.99')
    assert cloud.switch.run(cloud.b.ofports[port.id], **untagged)  # it does go untagged
    assert cloud.switch.run(cloud.b.ofports[port.id], **dict(untagged, vlan_vid=TAGGED)) == []
    assert cloud.switch.run(cloud.b.ofports[port.id],
                            **ipv4(port, cloud.far.mac_address, ip_of(cloud.far),
                                   vlan_vid=TAGGED)) == []


def test_a_frame_to_a_remote_port_leaves_tagged_through_the_patch_port(cloud):
    delivery = only(cloud.switch.run(1, **ipv4(cloud.a, cloud.far.mac_address,
                                               ip_of(cloud.far))))
    assert delivery.port == PATCH_OFPORT and delivery.packet['vlan_vid'] == TAGGED
    assert (delivery.packet['eth_src'], delivery.packet['eth_dst']) == (
        cloud.a.mac_address, cloud.far.mac_address)


def test_unknown_unicast_goes_to_the_physical_network(cloud):
    delivery = only(cloud.switch.run(3, **ipv4(cloud.f, UPSTREAM_MAC, '172.24.4.1')))
    assert delivery.port == PATCH_OFPORT and 'vlan_vid' not in delivery.packet  # flat
    delivery = only(cloud.switch.run(1, **ipv4(cloud.a, UPSTREAM_MAC, '10.0.5.99')))
    assert delivery.packet['vlan_vid'] == TAGGED


def test_a_broadcast_from_a_local_port_goes_out_once_and_never_into_a_tunnel(cloud):
    deliveries = cloud.switch.run(1, **arp_request(cloud.a, '10.0.5.99'))
    assert sorted(d.port for d in deliveries) == [2, PATCH_OFPORT]
    out = next(d for d in deliveries if d.port == PATCH_OFPORT)
    assert out.packet['vlan_vid'] == TAGGED and TUNNEL_OFPORT not in [d.port for d in deliveries]


def test_the_tunnel_network_still_crosses_in_its_tunnel(cloud):
    delivery = only(cloud.switch.run(4, **ipv4(cloud.t1, cloud.t2.mac_address, ip_of(cloud.t2))))
    assert delivery.port == TUNNEL_OFPORT and delivery.packet['tunnel_id'] == cloud.t.key


def test_a_routed_frame_leaves_with_the_chassis_router_mac(cloud):
    """Routed here from the tunnel network to a remote port of the VLAN network: the
    physical network sees this chassis' router MAC, never the router interface's."""
    delivery = only(cloud.switch.run(4, **ipv4(cloud.t1, cloud.interface_mac(cloud.t_subnet),
                                               ip_of(cloud.far))))
    assert delivery.port == PATCH_OFPORT and delivery.packet['vlan_vid'] == TAGGED
    assert delivery.packet['eth_src'] == ROUTER_MAC
    assert delivery.packet['eth_dst'] == cloud.far.mac_address
    assert delivery.packet['ip_ttl'] == 63


def test_a_router_reaches_a_vlan_network_with_no_port_on_this_chassis():
    """This chassis serves the VLAN network only through the router (a port of the tunnel
    network is here, none of the VLAN network's): routed frames still leave tagged through
    the patch port, not dropped in egress_dispatch."""
    b = TopologyBuilder()
    b.remote_chassis('chassis-2', '172.31.0.12')
    vlan = b.provider_network('vlan', VID)
    vlan_subnet = b.subnet(vlan, '10.0.5.0/24')
    far = b.port(vlan_subnet, '10.0.5.7', **REMOTE_HOST)
    t = b.network('t')
    t_subnet = b.subnet(t, '10.0.6.0/24')
    t1 = b.port(t_subnet, '10.0.6.5', ofport=4)
    router = b.router('r', vlan_subnet, t_subnet)
    switch = FlowTableSimulator()
    install(b.build(), Reconciler(switch))
    interface = next(i for i in router.interfaces if i.subnet_id == t_subnet.id)
    delivery = only(switch.run(4, **ipv4(t1, b.ports[interface.port_id].mac_address,
                                         ip_of(far))))
    assert delivery.port == PATCH_OFPORT and delivery.packet['vlan_vid'] == TAGGED
    assert delivery.packet['eth_src'] == ROUTER_MAC
    assert delivery.packet['eth_dst'] == far.mac_address


def test_a_frame_routed_to_a_local_port_of_the_vlan_network_stays_here(cloud):
    delivery = only(cloud.switch.run(4, **ipv4(cloud.t1, cloud.interface_mac(cloud.t_subnet),
                                               ip_of(cloud.a))))
    assert delivery.port == 1
    assert delivery.packet['eth_src'] == cloud.interface_mac(cloud.vlan_subnet)


def test_a_frame_from_a_vlan_port_to_a_tunnel_port_is_routed_here(cloud):
    delivery = only(cloud.switch.run(1, **ipv4(cloud.a, cloud.interface_mac(cloud.vlan_subnet),
                                               ip_of(cloud.t2))))
    assert delivery.port == TUNNEL_OFPORT and delivery.packet['tunnel_id'] == cloud.t.key


def test_frames_from_the_physical_network_to_a_router_interface_are_not_routed(cloud):
    """Every chassis with the network would route them: a documented limit."""
    packet = ipv4(cloud.far, cloud.interface_mac(cloud.vlan_subnet), ip_of(cloud.t1))
    assert cloud.from_physical(packet) == []


def test_an_unmapped_physnet_keeps_its_local_ports_to_themselves():
    cloud = Cloud(mapped=False)
    assert cloud.switch.outputs(1, **ipv4(cloud.a, cloud.b_.mac_address, ip_of(cloud.b_))) == [2]
    assert cloud.switch.outputs(1, **ipv4(cloud.a, cloud.far.mac_address,
                                          ip_of(cloud.far))) == []
    assert cloud.switch.outputs(1, **arp_request(cloud.a, '10.0.5.99')) == [2]
    assert not any(f.table == p.PROVIDER_EGRESS.number for f in cloud.switch.flows.values())


def test_dhcp_arp_responder_and_port_security_work_on_a_vlan_network(cloud):
    dhcp = frame(cloud.a, BROADCAST, ipv4_src='0.0.0.0', ipv4_dst='255.255.255.255',
                 ip_proto=17, udp_src=68, udp_dst=67)
    assert cloud.switch.outputs(1, **dhcp) == [CONTROLLER]
    gateway = cloud.vlan_subnet.gateway_ip
    answer = only(cloud.switch.run(1, **arp_request(cloud.a, gateway)))
    assert answer.port == 1 and answer.packet['arp_sha'] == cloud.interface_mac(cloud.vlan_subnet)
    spoofed = ipv4(cloud.a, cloud.far.mac_address, ip_of(cloud.far), eth_src=UPSTREAM_MAC)
    assert cloud.switch.run(1, **spoofed) == []


def test_security_groups_filter_what_comes_from_the_physical_network():
    cloud = Cloud()
    ssh = cloud.b.security_group('ssh', ('egress', {}), ('ingress', dict(
        protocol='tcp', port_range_min=22, port_range_max=22)))
    cloud.b.ports[cloud.a.id].security_groups = [ssh.id]
    cloud.sync()
    tcp = dict(ipv4(cloud.far, cloud.a.mac_address, ip_of(cloud.a)), ip_proto=6, tcp_src=40000)
    assert only(cloud.from_physical(dict(tcp, tcp_dst=22))).port == 1
    assert cloud.from_physical(dict(tcp, tcp_dst=23)) == []
    assert cloud.from_physical(ipv4(cloud.far, cloud.a.mac_address, ip_of(cloud.a),
                                    icmpv4_type=8, icmpv4_code=0)) == []


def test_flows_read_back_as_they_were_made_and_a_resync_changes_nothing(cloud):
    flows = apps.desired_flows(cloud.b.build())
    provider = [f for f in flows if apps.app_name(f.cookie) == 'provider']
    assert provider and all(read_back(f) == f for f in provider)
    cloud.reconciler.resync()
    assert cloud.reconciler.reconcile(apps.desired_flows(cloud.b.build())).adds == []


def test_a_port_moving_away_is_reached_through_the_physical_network(cloud):
    cloud.b.ofports.pop(cloud.b_.id)
    cloud.b.ports[cloud.b_.id] = cloud.b_.model_copy(update={'binding_host_id': 'chassis-2'})
    cloud.sync()
    delivery = only(cloud.switch.run(1, **ipv4(cloud.a, cloud.b_.mac_address, ip_of(cloud.b_))))
    assert delivery.port == PATCH_OFPORT and delivery.packet['vlan_vid'] == TAGGED
