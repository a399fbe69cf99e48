"""Distributed floating IPs through the simulator: DNAT in and SNAT out on the chassis where
the port is plugged, ARP for the floating IP answered only there, east-west traffic untouched,
ICMP errors translated, security groups on the fixed IP, nothing out before the gateway's MAC
is known."""
import pytest

from dragonflow.controller import apps
from dragonflow.controller import pipeline as p
from dragonflow.controller.flows import CONTROLLER
from dragonflow.controller.reconciler import Reconciler
from tests.flowsim import FlowTableSimulator
from tests.unit.builders import PATCH_OFPORT, TopologyBuilder, install, ip_of, only, read_back

GATEWAY_IP, GATEWAY_MAC = '172.24.4.1', 'fa:16:3e:ee:ee:01'
INTERNET = '203.0.113.10'
FIP, FIP2, FIP3 = '172.24.4.100', '172.24.4.101', '172.24.4.102'


class Cloud:
    """Router r joins private (10.0.0.0/24: vm with floating IP FIP at ofport 1, plain at 2)
    and other (10.0.1.0/24: peer at 3, with FIP2) to the flat external network public
    (172.24.4.0/24 on physnet1, gateway 172.24.4.1 and its MAC learnt)."""

    def __init__(self, network_type='flat', segmentation_id=None, ingress=None):
        self.b = b = TopologyBuilder()
        groups = {}
        if ingress is not None:
            group = b.security_group('fip', ('egress', {}), *(('ingress', r) for r in ingress))
            groups['security_groups'] = [group.id]
        self.private = b.subnet(b.network('private'), '10.0.0.0/24')
        self.other = b.subnet(b.network('other'), '10.0.1.0/24')
        self.vm = b.port(self.private, '10.0.0.5', ofport=1, **groups)
        self.plain = b.port(self.private, '10.0.0.6', ofport=2)
        self.peer = b.port(self.other, '10.0.1.5', ofport=3)
        self.external_network, self.external = b.external_network(
            'public', '172.24.4.0/24', network_type=network_type,
            segmentation_id=segmentation_id)
        self.router = b.router('r', self.private, self.other)
        b.router_gateway(self.router, self.external, '172.24.4.10')
        self.fip = b.floating_ip(self.external, FIP, self.vm, self.router)
        self.fip2 = b.floating_ip(self.external, FIP2, self.peer, self.router)
        self.gateway = (self.external_network.id, GATEWAY_IP)
        b.gateway_macs[self.gateway] = GATEWAY_MAC
        self.reconciler = Reconciler(FlowTableSimulator())
        self.sync()

    def sync(self):
        """As the flow loop sends a pass: new NAT zones flushed, then the flows."""
        topology = self.b.build()
        self.b.flush_new_nat_zones(self.switch)
        return install(topology, self.reconciler)

    @property
    def switch(self):
        return self.reconciler.switch

    def mac_of(self, fip):
        return self.b.ports[fip.floating_port_id].mac_address

    def mac_of_address(self, address):
        return self.mac_of(next(f for f in self.b.floating_ips.values()
                                if f.floating_ip_address == address))

    def router_mac(self, subnet, router=None):
        interface = next(i for i in (router or self.router).interfaces
                         if i.subnet_id == subnet.id)
        return self.b.ports[interface.port_id].mac_address

    def tagged(self, packet):
        vlan = self.external_network.segmentation_id
        return dict(packet, vlan_vid=0x1000 | vlan) if vlan else packet

    def from_outside(self, ipv4_dst=FIP, ipv4_src=INTERNET, eth_dst=None, **fields):
        """An IPv4 packet from the gateway on the external network, ICMP echo unless said."""
        packet = dict(eth_src=GATEWAY_MAC, eth_dst=eth_dst or self.mac_of(self.fip),
                      eth_type=p.ETH_TYPE_IPV4, ipv4_src=ipv4_src, ipv4_dst=ipv4_dst,
                      **_transport(fields))
        return self.switch.run(PATCH_OFPORT, **self.tagged(packet))

    def from_vm(self, port, ofport, ipv4_dst=INTERNET, **fields):
        """An IPv4 packet the port sends through its router, ICMP echo unless said."""
        subnet = self.private if port.network_id == self.private.network_id else self.other
        packet = dict(eth_src=port.mac_address, eth_dst=self.router_mac(subnet),
                      eth_type=p.ETH_TYPE_IPV4, ipv4_src=ip_of(port), ipv4_dst=ipv4_dst,
                      **_transport(fields))
        return self.switch.run(ofport, **packet)

    def arp_for(self, address, sender_ip=GATEWAY_IP, sender_mac=GATEWAY_MAC):
        return self.switch.run(PATCH_OFPORT, **self.tagged(dict(
            eth_src=sender_mac, eth_dst='ff:ff:ff:ff:ff:ff', eth_type=p.ETH_TYPE_ARP,
            arp_op=p.ARP_REQUEST, arp_sha=sender_mac, arp_spa=sender_ip,
            arp_tha='00:00:00:00:00:00', arp_tpa=address)))


def _transport(fields: dict) -> dict:
    """An ICMP echo request unless the fields say another protocol."""
    if 'ip_proto' in fields:
        return fields
    return {'ip_proto': 1, 'icmpv4_type': 8, 'icmpv4_code': 0, **fields}


TCP = dict(ip_proto=6, tcp_src=40000)


@pytest.fixture
def cloud():
    return Cloud()


def test_a_ping_from_outside_reaches_the_vm_and_its_reply_leaves_as_the_fip(cloud):
    inbound = only(cloud.from_outside())
    assert inbound.port == 1
    assert inbound.packet['ipv4_dst'] == ip_of(cloud.vm)
    assert inbound.packet['ipv4_src'] == INTERNET
    assert inbound.packet['eth_dst'] == cloud.vm.mac_address
    assert inbound.packet['eth_src'] == cloud.router_mac(cloud.private)
    assert inbound.packet['ip_ttl'] == 63
    outbound = only(cloud.from_vm(cloud.vm, 1, icmpv4_type=0))
    assert outbound.port == PATCH_OFPORT
    assert outbound.packet['ipv4_src'] == FIP
    assert outbound.packet['ipv4_dst'] == INTERNET
    assert outbound.packet['eth_src'] == cloud.mac_of(cloud.fip)
    assert outbound.packet['eth_dst'] == GATEWAY_MAC
    assert outbound.packet['ip_ttl'] == 63


def test_a_connection_the_vm_opens_goes_out_as_the_fip_and_its_replies_come_back(cloud):
    out = only(cloud.from_vm(cloud.vm, 1, **TCP, tcp_dst=443))
    assert (out.port, out.packet['ipv4_src'], out.packet['tcp_src']) == (PATCH_OFPORT, FIP, 40000)
    back = only(cloud.from_outside(ip_proto=6, tcp_src=443, tcp_dst=40000))
    assert (back.port, back.packet['ipv4_dst']) == (1, ip_of(cloud.vm))


def test_arp_for_the_fip_is_answered_in_place_with_its_ports_mac(cloud):
    answer = only(cloud.arp_for(FIP))
    assert answer.port == PATCH_OFPORT and answer.packet['in_port'] == PATCH_OFPORT
    mac = cloud.mac_of(cloud.fip)
    assert {k: answer.packet[k] for k in ('eth_src', 'eth_dst', 'arp_op', 'arp_sha', 'arp_spa',
                                         'arp_tha', 'arp_tpa')} == \
        dict(eth_src=mac, eth_dst=GATEWAY_MAC, arp_op=p.ARP_REPLY, arp_sha=mac, arp_spa=FIP,
             arp_tha=GATEWAY_MAC, arp_tpa=GATEWAY_IP)


def test_on_a_vlan_external_network_the_arp_answer_is_tagged():
    cloud = Cloud(network_type='vlan', segmentation_id=300)
    assert only(cloud.arp_for(FIP)).packet['vlan_vid'] == 0x1000 | 300
    out = only(cloud.from_vm(cloud.vm, 1))
    assert (out.port, out.packet['ipv4_src']) == (PATCH_OFPORT, FIP)
    assert only(cloud.from_outside(icmpv4_type=0)).port == 1


def test_our_own_frames_coming_back_are_dropped_not_answered(cloud):
    mac = cloud.mac_of(cloud.fip)
    assert cloud.arp_for(FIP, sender_ip=FIP, sender_mac=mac) == []  # our gratuitous ARP


def test_only_the_chassis_where_the_port_is_plugged_answers_or_nats(cloud):
    cloud.b.remove_port(cloud.vm)  # unplugged here: now bound to chassis-2
    cloud.b.port(cloud.private, '10.0.0.5', name='vm-moved', mac=cloud.vm.mac_address,
                 **{'binding:host_id': 'chassis-2'})
    cloud.b.associate(cloud.fip, cloud.b.ports['port-vm-moved'], cloud.router)
    cloud.sync()
    assert cloud.arp_for(FIP) == []
    assert cloud.from_outside() == []
    mac = cloud.mac_of(cloud.fip)
    assert not [f for f in cloud.switch.flows.values() if f.table in FIP_TABLES | {p.L3.number}
                and (FIP in repr(f) or mac in repr(f))], 'a flow is left for the floating IP'
    assert only(cloud.arp_for(FIP2)).port == PATCH_OFPORT  # the other one is still here


def test_a_disassociated_fip_stops_answering(cloud):
    cloud.b.associate(cloud.fip)
    cloud.sync()
    assert cloud.arp_for(FIP) == []
    assert cloud.from_outside() == []
    assert cloud.from_vm(cloud.vm, 1) == []  # and the VM has no way out any more


def test_east_west_traffic_is_not_natted(cloud):
    routed = only(cloud.from_vm(cloud.vm, 1, ipv4_dst=ip_of(cloud.peer)))
    assert (routed.port, routed.packet['ipv4_src']) == (3, ip_of(cloud.vm))
    back = only(cloud.from_vm(cloud.peer, 3, ipv4_dst=ip_of(cloud.vm), icmpv4_type=0))
    assert (back.port, back.packet['ipv4_src']) == (1, ip_of(cloud.peer))


def test_the_routers_own_subnets_never_leave_through_the_fip(cloud):
    assert cloud.from_vm(cloud.vm, 1, ipv4_dst='10.0.0.1') == []    # the router's address
    assert cloud.from_vm(cloud.vm, 1, ipv4_dst='10.0.1.77') == []   # nobody's address


def test_a_vm_without_a_fip_is_not_natted(cloud):
    assert cloud.from_vm(cloud.plain, 2) == []


def test_nothing_goes_out_before_the_gateway_mac_is_learnt_and_its_reply_goes_up(cloud):
    cloud.b.gateway_macs.clear()
    cloud.sync()
    assert cloud.from_vm(cloud.vm, 1) == []
    assert not cloud.switch.table(p.FIP_TO_EXTERNAL.number)
    reply = dict(eth_src=GATEWAY_MAC, eth_dst=cloud.mac_of(cloud.fip), eth_type=p.ETH_TYPE_ARP,
                 arp_op=p.ARP_REPLY, arp_sha=GATEWAY_MAC, arp_spa=GATEWAY_IP,
                 arp_tha=cloud.mac_of(cloud.fip), arp_tpa=FIP)
    assert [d.port for d in cloud.switch.run(PATCH_OFPORT, **reply)] == [CONTROLLER]
    impostor = dict(reply, arp_spa='172.24.4.66')
    assert cloud.switch.run(PATCH_OFPORT, **impostor) == []
    cloud.b.gateway_macs[cloud.gateway] = GATEWAY_MAC
    cloud.sync()
    assert only(cloud.from_vm(cloud.vm, 1)).port == PATCH_OFPORT


def test_an_icmp_error_about_what_the_vm_sent_comes_back_translated(cloud):
    udp = dict(ip_proto=17, udp_src=5000, udp_dst=33434)
    sent = only(cloud.from_vm(cloud.vm, 1, **udp)).packet
    quoted = {k: sent[k] for k in ('eth_type', 'ipv4_src', 'ipv4_dst', 'ip_proto', 'udp_src',
                                   'udp_dst')}
    for source, kind in ((INTERNET, 3), (GATEWAY_IP, 11)):  # port unreachable, TTL exceeded
        error = only(cloud.from_outside(ipv4_src=source, icmpv4_type=kind, quoted=quoted))
        assert error.port == 1
        assert (error.packet['ipv4_src'], error.packet['ipv4_dst']) == (source, ip_of(cloud.vm))
        assert error.packet['quoted']['ipv4_src'] == ip_of(cloud.vm)
        assert error.packet['quoted']['ipv4_dst'] == INTERNET


def test_an_icmp_error_the_vm_sends_about_what_came_in_leaves_translated(cloud):
    udp = dict(ip_proto=17, udp_src=5000, udp_dst=53)
    arrived = only(cloud.from_outside(**udp)).packet
    quoted = {k: arrived[k] for k in ('eth_type', 'ipv4_src', 'ipv4_dst', 'ip_proto',
                                      'udp_src', 'udp_dst')}
    error = only(cloud.from_vm(cloud.vm, 1, icmpv4_type=3, icmpv4_code=3, quoted=quoted))
    assert error.port == PATCH_OFPORT
    assert error.packet['ipv4_src'] == FIP
    assert error.packet['quoted']['ipv4_dst'] == FIP


def test_an_unrelated_icmp_error_goes_nowhere(cloud):
    quoted = dict(eth_type=p.ETH_TYPE_IPV4, ipv4_src=FIP, ipv4_dst=INTERNET, ip_proto=17,
                  udp_src=1, udp_dst=2)
    assert cloud.from_outside(icmpv4_type=3, quoted=quoted) == []


def test_fip_to_fip_goes_through_the_gateway_and_comes_back_natted_both_ways(cloud):
    out = only(cloud.from_vm(cloud.vm, 1, ipv4_dst=FIP2)).packet
    assert (out['ipv4_src'], out['ipv4_dst'], out['eth_dst']) == (FIP, FIP2, GATEWAY_MAC)
    # The gateway turns it around to FIP2's MAC (it asked who has FIP2: this chassis).
    arrived = only(cloud.from_outside(ipv4_src=FIP, ipv4_dst=FIP2,
                                      eth_dst=cloud.mac_of(cloud.fip2)))
    assert (arrived.port, arrived.packet['ipv4_src'], arrived.packet['ipv4_dst']) == \
        (3, FIP, ip_of(cloud.peer))
    answer = only(cloud.from_vm(cloud.peer, 3, ipv4_dst=FIP, icmpv4_type=0)).packet
    assert (answer['ipv4_src'], answer['ipv4_dst']) == (FIP2, FIP)
    back = only(cloud.from_outside(ipv4_src=FIP2, ipv4_dst=FIP, icmpv4_type=0))
    assert (back.port, back.packet['ipv4_src']) == (1, FIP2)


def test_security_group_ingress_rules_see_the_fixed_ip():
    cloud = Cloud(ingress=[dict(protocol='tcp', port_range_min=22, port_range_max=22,
                                remote_ip_prefix='203.0.113.0/24')])
    assert cloud.from_outside() == []  # no ICMP rule: the ping is dropped
    assert only(cloud.from_outside(**TCP, tcp_dst=22)).port == 1
    assert cloud.from_outside(**TCP, tcp_dst=23) == []
    assert cloud.from_outside(**TCP, tcp_dst=22, ipv4_src='198.51.100.7') == []


def test_a_fip_moved_to_another_local_port_follows_at_once(cloud):
    cloud.b.associate(cloud.fip, cloud.plain, cloud.router)
    cloud.sync()
    assert only(cloud.from_outside(**TCP, tcp_dst=22)).port == 2
    assert cloud.from_vm(cloud.vm, 1) == []


def test_the_flows_read_back_as_they_were_made(cloud):
    flows = [f for f in cloud.switch.flows.values() if f.table in FIP_TABLES]
    assert flows
    for flow in flows:
        assert read_back(flow) == flow, flow
    restarted = Reconciler(cloud.switch)
    restarted.resync()
    change = restarted.reconcile(apps.desired_flows(cloud.b.build()))
    assert (change.deletes, change.adds) == ([], [])


FIP_TABLES = {t.number for t in (p.PROVIDER_INGRESS, p.FIP_DNAT, p.FIP_DNAT_COMMIT,
                                 p.FIP_TO_PORT, p.FIP_SNAT, p.FIP_SNAT_COMMIT,
                                 p.FIP_TO_EXTERNAL)}


def test_two_projects_with_one_fixed_ip_and_routers_0x8000_apart_both_get_out_and_back(cloud):
    """Each floating IP has a NAT zone of its own: the same connection from the same fixed
    IP of two projects is two connections, whatever the routers' keys."""
    b = cloud.b
    theirs = b.subnet(b.network('theirs', project='p2'), '10.0.0.0/24')
    twin = b.port(theirs, ip_of(cloud.vm), ofport=4)
    router = b.router('r2', theirs, key=cloud.router.key + 0x8000)
    b.router_gateway(router, cloud.external, '172.24.4.11')
    b.floating_ip(cloud.external, FIP3, twin, router)
    cloud.sync()
    connection = dict(**TCP, tcp_dst=443)
    mine = only(cloud.from_vm(cloud.vm, 1, **connection))
    twins = only(cloud.switch.run(4, **dict(
        eth_src=twin.mac_address, eth_dst=cloud.router_mac(theirs, router),
        eth_type=p.ETH_TYPE_IPV4, ipv4_src=ip_of(twin), ipv4_dst=INTERNET,
        ip_ttl=64, **connection)))
    assert (mine.port, mine.packet['ipv4_src']) == (PATCH_OFPORT, FIP)
    assert (twins.port, twins.packet['ipv4_src']) == (PATCH_OFPORT, FIP3)
    reply = dict(ip_proto=6, tcp_src=443, tcp_dst=40000)
    assert only(cloud.from_outside(**reply)).port == 1
    assert only(cloud.from_outside(FIP3, eth_dst=cloud.mac_of_address(FIP3), **reply)).port == 4


def test_a_connection_open_when_its_fip_moves_goes_to_the_new_port(cloud):
    inbound = dict(**TCP, tcp_dst=22)
    assert only(cloud.from_outside(**inbound)).port == 1
    cloud.b.associate(cloud.fip, cloud.plain, cloud.router)
    cloud.sync()
    assert only(cloud.from_outside(**inbound)).port == 2


def test_swapped_fips_take_their_open_connections_to_their_new_ports(cloud):
    """A move is a new association: the connections of the old one stay in its zone."""
    cloud.b.associate(cloud.fip2)
    third = cloud.b.floating_ip(cloud.external, FIP3, cloud.plain, cloud.router)
    cloud.sync()
    inbound = dict(**TCP, tcp_dst=22)
    assert only(cloud.from_outside(**inbound)).port == 1
    assert only(cloud.from_outside(FIP3, eth_dst=cloud.mac_of(third), **inbound)).port == 2
    cloud.b.associate(cloud.fip, cloud.plain, cloud.router)
    cloud.b.associate(third, cloud.vm, cloud.router)
    cloud.sync()
    assert only(cloud.from_outside(**inbound)).port == 2
    assert only(cloud.from_outside(FIP3, eth_dst=cloud.mac_of(third), **inbound)).port == 1


def test_a_nat_zone_taken_again_keeps_nothing_of_its_last_holder(cloud):
    """The vm's zone, freed when its floating IP moved, goes to its next floating IP: the
    vm's answer on a connection of the old one must not leave as the old address."""
    inbound = dict(**TCP, tcp_dst=22)
    assert only(cloud.from_outside(**inbound)).port == 1
    assert only(cloud.from_vm(cloud.vm, 1, ip_proto=6, tcp_src=22, tcp_dst=40000)).packet[
        'ipv4_src'] == FIP  # established
    zone = cloud.b.build().nat_zones[cloud.fip.id]
    cloud.b.associate(cloud.fip, cloud.plain, cloud.router)
    cloud.sync()
    cloud.b.floating_ip(cloud.external, FIP3, cloud.vm, cloud.router)
    cloud.sync()
    assert cloud.b.build().nat_zones['fip-' + FIP3] == zone
    answer = only(cloud.from_vm(cloud.vm, 1, ip_proto=6, tcp_src=22, tcp_dst=40000))
    assert answer.packet['ipv4_src'] == FIP3


def test_a_port_plugged_here_but_bound_elsewhere_has_its_fip_there(cloud):
    """Live migration: Nova plugs the destination before the switchover; until the binding
    moves, only the source chassis answers for the floating IP."""
    cloud.b.ports[cloud.vm.id] = cloud.vm.model_copy(update={'binding_host_id': 'chassis-2'})
    cloud.sync()
    assert cloud.arp_for(FIP) == []
    assert cloud.from_outside() == []
    cloud.b.ports[cloud.vm.id] = cloud.vm.model_copy(update={'binding_host_id': 'chassis-1'})
    cloud.sync()
    assert only(cloud.arp_for(FIP)).port == PATCH_OFPORT
    assert only(cloud.from_outside()).port == 1


def test_a_vm_on_the_external_network_reaches_a_fip_of_its_own_chassis(cloud):
    host = cloud.b.port(cloud.external, '172.24.4.50', ofport=5)
    cloud.sync()
    arrived = only(cloud.switch.run(5, eth_src=host.mac_address, eth_dst=cloud.mac_of(cloud.fip),
                                    eth_type=p.ETH_TYPE_IPV4, ipv4_src='172.24.4.50',
                                    ipv4_dst=FIP, ip_ttl=64, **TCP, tcp_dst=22))
    assert (arrived.port, arrived.packet['ipv4_dst']) == (1, ip_of(cloud.vm))
    assert arrived.packet['ipv4_src'] == '172.24.4.50'
    back = only(cloud.from_vm(cloud.vm, 1, ipv4_dst='172.24.4.50', ip_proto=6, tcp_src=22,
                              tcp_dst=40000))
    # Through the gateway, as the reply of any host behind it.
    assert (back.port, back.packet['ipv4_src'], back.packet['eth_dst']) == \
        (PATCH_OFPORT, FIP, GATEWAY_MAC)
