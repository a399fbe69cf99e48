"""SNAT through the simulator, one switch per chassis: a VM without a floating IP goes out
through its router's first live gateway chassis (bundle over BFD ports, so a dead one is
skipped in the datapath) and comes back un-NATed wherever it is; only the active gateway
answers for the gateway address; floating IPs and east-west traffic are untouched;
enable_snat=false is routed both ways; distributed mode NATs on each chassis to its own
address; a frame too big for the external network goes to the controller. A VM on a VLAN
network behind the router sends over that network to the gateway MAC, never into a tunnel,
and the physical network (a learning switch here) takes it to the chassis whose gratuitous
ARPs it learnt the MAC from last: the active gateway, also after a failover."""
import struct

import pytest

from dragonflow.controller import apps
from dragonflow.controller import pipeline as p
from dragonflow.controller.apps import snat
from dragonflow.controller.flows import CONTROLLER, COOKIE_OBJECT_MASK
from dragonflow.controller.neighbours import GARP_SPACING, Neighbours
from dragonflow.controller.reconciler import Reconciler
from tests.flowsim import FlowTableSimulator
from tests.unit.builders import (
    PATCH_OFPORT,
    TUNNEL_OFPORT,
    TopologyBuilder,
    install,
    ip_of,
    only,
    read_back,
)
from tests.unit.clock import Clock

A, G1, G2 = 'chassis-a', 'chassis-g1', 'chassis-g2'
TUNNEL_IPS = {A: '172.31.0.1', G1: '172.31.0.2', G2: '172.31.0.3'}
GW_IP, FIP, A_ADDRESS = '172.24.4.10', '172.24.4.100', '172.24.4.50'
UPSTREAM_IP, UPSTREAM_MAC = '172.24.4.1', 'fa:16:3e:ee:ee:01'
INTERNET = '203.0.113.10'
MTU = 1500
TCP = dict(ip_proto=6, tcp_src=40000, tcp_dst=443)
REPLY = dict(ip_proto=6, tcp_src=443, tcp_dst=40000)
VLAN = 150  # the tenant VLAN network behind the router
TAGGED = 0x1000 | VLAN
ROUTER_MACS = {A: 'fa:16:3f:00:00:0a', G1: 'fa:16:3f:00:00:01', G2: 'fa:16:3f:00:00:02'}


class Chassis:
    """One chassis' view of the cloud (its own builder: the same objects, its own ports
    plugged, its BFD ports to the others) and its br-int.

    Router r joins private (10.0.0.0/24: vm on A at ofport 1, fip_vm on A at 4 with the
    floating IP FIP, local_vm on G1 at 2), other (10.0.1.0/24: peer on A at 3) and the
    VLAN network tenant-vlan (VLAN 150 on physnet1, 10.0.2.0/24: vlan_vm on A at 5) to the
    flat external network public (172.24.4.0/24, MTU 1500, the upstream gateway's MAC
    learnt); its gateway 172.24.4.10 on G1 then G2. Each chassis has its own router MAC
    and neighbours (gratuitous ARPs)."""

    def __init__(self, me, enable_snat=True, distributed=False, network_type='flat',
                 segmentation_id=None):
        self.me = me
        self.b = b = TopologyBuilder(me)
        for name, ip in TUNNEL_IPS.items():
            b.remote_chassis(name, ip, gateway=name in (G1, G2))
            if name != me:
                b.liveness(name)
        b.is_gateway = me in (G1, G2)
        b.router_mac = ROUTER_MACS[me]
        self.private = b.subnet(b.network('private'), '10.0.0.0/24')
        self.other = b.subnet(b.network('other'), '10.0.1.0/24')
        self.vlan = b.subnet(b.provider_network('tenant-vlan', VLAN), '10.0.2.0/24')

        def vm(subnet, ip, host, ofport):
            return b.port(subnet, ip, ofport=ofport if host == me else None,
                          **{'binding:host_id': host})
        self.vm = vm(self.private, '10.0.0.5', A, 1)
        self.local_vm = vm(self.private, '10.0.0.6', G1, 2)
        self.peer = vm(self.other, '10.0.1.5', A, 3)
        self.fip_vm = vm(self.private, '10.0.0.7', A, 4)
        self.vlan_vm = vm(self.vlan, '10.0.2.5', A, 5)
        self.external_network, self.external = b.external_network(
            'public', '172.24.4.0/24', network_type=network_type,
            segmentation_id=segmentation_id, mtu=MTU)
        self.router = b.router('r', self.private, self.other, self.vlan)
        self.gateway_port = b.router_gateway(self.router, self.external, GW_IP,
                                             enable_snat=enable_snat)
        b.gateway_chassis(self.router, G1, G2)
        b.floating_ip(self.external, FIP, self.fip_vm, self.router)
        if distributed:
            for host, ip in ((A, A_ADDRESS), (G2, '172.24.4.52')):
                b.chassis_snat(self.router, self.external, ip, host)
        b.gateway_macs[self.external_network.id, UPSTREAM_IP] = UPSTREAM_MAC
        self.reconciler = Reconciler(FlowTableSimulator())
        self.clock, self.packet_outs = Clock(), PacketOuts()
        self.neighbours = Neighbours(self.packet_outs, 30.0, None, wake_loop=lambda: None,
                                     clock=self.clock)
        self.sync()

    def sync(self):
        """As the flow loop sends a pass: new NAT zones flushed, then the flows; once they
        are in, the neighbours hear of it (they send nothing yet: ``announced``)."""
        topology = self.b.build()
        self.b.flush_new_nat_zones(self.switch)
        install(topology, self.reconciler)
        self.neighbours.confirmed(topology)
        return topology

    def announced(self) -> list[dict]:
        """The frames the neighbours send out of the patch port, their gratuitous ARPs all
        spaced out."""
        for _ in range(3):
            self.neighbours.send_due()
            self.clock.now += GARP_SPACING
        return [_frame(data) for _, data in self.packet_outs.take()]

    @property
    def switch(self) -> FlowTableSimulator:
        return self.reconciler.switch

    # Liveness: what BFD says in the datapath, and what the controller has read of it.
    def bfd_down(self, *peers):
        """Their sessions stop forwarding: br-int's bundles skip them at once."""
        live = self.switch.live_ports
        live = set(self.b.liveness_ofports.values()) if live is None else live
        self.switch.live_ports = live - {self.b.liveness_ofports[c] for c in peers}

    def sees_down(self, *peers):
        """The controller has read the sessions' state (live_peers) and sent a pass."""
        self.bfd_down(*peers)
        self.b.live_peers -= set(peers)
        self.sync()

    # Packets.
    def router_mac(self, subnet):
        interface = next(i for i in self.router.interfaces if i.subnet_id == subnet.id)
        return self.b.ports[interface.port_id].mac_address

    def from_vm(self, port, ofport, ipv4_dst=INTERNET, **fields):
        """An IPv4 packet the port sends through its router, ICMP echo unless said."""
        subnet = next(s for s in (self.private, self.other, self.vlan)
                      if s.network_id == port.network_id)
        packet = dict(eth_src=port.mac_address, eth_dst=self.router_mac(subnet),
                      eth_type=p.ETH_TYPE_IPV4, ipv4_src=ip_of(port), ipv4_dst=ipv4_dst,
                      **_transport(fields))
        return self.switch.run(ofport, **packet)

    def from_tunnel(self, delivery):
        """What another chassis sent through its tunnel port, arriving in ours."""
        assert delivery.port == TUNNEL_OFPORT, delivery
        assert delivery.packet['tun_ipv4_dst'] == TUNNEL_IPS[self.me], delivery
        return self.switch.run(TUNNEL_OFPORT, **_hop(delivery))

    def tagged(self, packet):
        vlan = self.external_network.segmentation_id
        return dict(packet, vlan_vid=0x1000 | vlan) if vlan else packet

    def from_outside(self, ipv4_dst=GW_IP, eth_dst=None, ipv4_src=INTERNET, **fields):
        """An IPv4 packet from the upstream gateway, to the gateway MAC unless said."""
        packet = dict(eth_src=UPSTREAM_MAC, eth_dst=eth_dst or self.gateway_port.mac_address,
                      eth_type=p.ETH_TYPE_IPV4, ipv4_src=ipv4_src, ipv4_dst=ipv4_dst,
                      **_transport(fields))
        return self.switch.run(PATCH_OFPORT, **self.tagged(packet))

    def arp_for(self, address, op=p.ARP_REQUEST, eth_dst='ff:ff:ff:ff:ff:ff'):
        return self.switch.run(PATCH_OFPORT, **self.tagged(dict(
            eth_src=UPSTREAM_MAC, eth_dst=eth_dst, eth_type=p.ETH_TYPE_ARP, arp_op=op,
            arp_sha=UPSTREAM_MAC, arp_spa=UPSTREAM_IP, arp_tha='00:00:00:00:00:00',
            arp_tpa=address)))


def _transport(fields: dict) -> dict:
    """An ICMP echo request unless the fields say another protocol."""
    if 'ip_proto' in fields:
        return fields
    return {'ip_proto': 1, 'icmpv4_type': 8, 'icmpv4_code': 0, **fields}


def _hop(delivery) -> dict:
    """The packet as the next switch gets it: its headers, TTL included."""
    return {k: v for k, v in delivery.packet.items() if k != 'in_port'}


class PacketOuts:
    """br-int as the neighbours see it: it takes their packet-outs."""

    def __init__(self):
        self.sent = []

    def send_packets(self, packets):
        self.sent.extend(packets)

    def take(self) -> list:
        sent, self.sent = self.sent, []
        return sent


def _frame(data: bytes) -> dict:
    """An ARP frame the neighbours send, as the simulator's packets are written."""
    def mac(raw):
        return ':'.join(f'{b:02x}' for b in raw)

    def ip(raw):
        return '.'.join(str(b) for b in raw)
    frame = dict(eth_dst=mac(data[:6]), eth_src=mac(data[6:12]))
    offset = 12
    if data[12:14] == b'\x81\x00':
        frame['vlan_vid'] = 0x1000 | struct.unpack('!H', data[14:16])[0] & 0xfff
        offset = 16
    assert struct.unpack('!H', data[offset:offset + 2])[0] == p.ETH_TYPE_ARP, data
    arp = data[offset + 2:]
    return dict(frame, eth_type=p.ETH_TYPE_ARP, arp_op=struct.unpack('!H', arp[6:8])[0],
                arp_sha=mac(arp[8:14]), arp_spa=ip(arp[14:18]), arp_tha=mac(arp[18:24]),
                arp_tpa=ip(arp[24:28]))


class Cloud(dict):
    """The three chassis, by id, and physnet1 between their patch ports."""

    def __init__(self, **options):
        super().__init__({me: Chassis(me, **options) for me in TUNNEL_IPS})
        self.physical = PhysicalSwitch(self)


class PhysicalSwitch:
    """physnet1: a learning switch with a port to each chassis' patch port. It learns each
    frame's source MAC on the port it came in by, per VLAN (as an 802.1Q switch does: where
    a MAC is on one VLAN says nothing of where it is on another), sends a frame to the port
    its destination MAC was learnt on (never back out of the one it came in by), and floods
    a broadcast, or an unknown destination, to every other port. A chassis unplugged
    (``down``) gets nothing. The upstream router is not on it here: what leaves for it is
    looked at where it leaves."""

    def __init__(self, cloud):
        self.cloud = cloud
        self.learnt: dict[tuple, str] = {}  # (VLAN id or 0, MAC) -> chassis id
        self.down: set = set()

    def send(self, sender: str, packet: dict) -> dict:
        """A frame out of the sender's patch port: what each chassis it reaches does with
        it (their deliveries, by chassis id)."""
        packet = {k: v for k, v in packet.items() if k != 'in_port'}
        vlan = packet.get('vlan_vid', 0)
        self.learnt[vlan, packet['eth_src']] = sender
        to = self.learnt.get((vlan, packet['eth_dst']))
        if to is None or packet['eth_dst'] == 'ff:ff:ff:ff:ff:ff':
            reached = [c for c in self.cloud if c != sender]
        else:
            reached = [to] if to != sender else []
        return {c: self.cloud[c].switch.run(PATCH_OFPORT, **packet)
                for c in reached if c not in self.down}

    def announce(self, sender: str) -> dict:
        """The sender's neighbours send what is due (its gratuitous ARPs): what the
        others do with it, by chassis id (every delivery of every frame)."""
        reached: dict = {}
        for frame in self.cloud[sender].announced():
            for chassis, deliveries in self.send(sender, frame).items():
                reached.setdefault(chassis, []).extend(deliveries)
        return reached


@pytest.fixture
def cloud():
    return Cloud()


def test_a_vm_without_a_fip_goes_to_the_first_gateway_chassis_through_the_tunnel(cloud):
    a = cloud[A]
    sent = only(a.from_vm(a.vm, 1))
    assert sent.port == TUNNEL_OFPORT
    assert sent.packet['tun_ipv4_dst'] == TUNNEL_IPS[G1]
    assert sent.packet['tunnel_id'] == a.b.networks[a.vm.network_id].tunnel_key
    assert sent.packet['eth_dst'] == a.gateway_port.mac_address
    assert (sent.packet['ipv4_src'], sent.packet['ip_ttl']) == (ip_of(a.vm), 64)  # not routed


def test_the_gateway_snats_to_its_address_and_routes_the_reply_back_to_the_vm(cloud):
    a, g1 = cloud[A], cloud[G1]
    out = only(g1.from_tunnel(only(a.from_vm(a.vm, 1, **TCP))))
    assert out.port == PATCH_OFPORT
    assert (out.packet['ipv4_src'], out.packet['ipv4_dst']) == (GW_IP, INTERNET)
    assert (out.packet['eth_src'], out.packet['eth_dst']) == \
        (g1.gateway_port.mac_address, UPSTREAM_MAC)
    assert out.packet['ip_ttl'] == 63
    back = only(g1.from_outside(**REPLY))
    assert back.port == TUNNEL_OFPORT and back.packet['tun_ipv4_dst'] == TUNNEL_IPS[A]
    assert (back.packet['ipv4_src'], back.packet['ipv4_dst']) == (INTERNET, ip_of(a.vm))
    assert (back.packet['eth_src'], back.packet['eth_dst']) == \
        (g1.router_mac(g1.private), a.vm.mac_address)
    arrived = only(a.from_tunnel(back))
    assert (arrived.port, arrived.packet['ipv4_dst']) == (1, ip_of(a.vm))


def test_a_vm_on_the_gateway_chassis_is_snatted_there_and_gets_its_reply(cloud):
    g1 = cloud[G1]
    out = only(g1.from_vm(g1.local_vm, 2, **TCP))
    assert (out.port, out.packet['ipv4_src']) == (PATCH_OFPORT, GW_IP)
    back = only(g1.from_outside(**REPLY))
    assert (back.port, back.packet['ipv4_dst']) == (2, ip_of(g1.local_vm))


def test_a_network_with_no_port_on_the_gateway_still_gets_out_through_it(cloud):
    """G1 has no port on other: the tunnels app keeps its ingress there all the same."""
    a, g1 = cloud[A], cloud[G1]
    assert not [port for port, _ in g1.b.build().local_ports()
                if port.network_id == g1.other.network_id]
    out = only(g1.from_tunnel(only(a.from_vm(a.peer, 3, **TCP))))
    assert (out.port, out.packet['ipv4_src']) == (PATCH_OFPORT, GW_IP)
    back = only(g1.from_outside(**REPLY))
    assert back.packet['ipv4_dst'] == ip_of(a.peer)
    assert only(a.from_tunnel(back)).port == 3


def test_a_dead_gateway_is_skipped_in_the_datapath_before_the_controller_knows(cloud):
    a, g2 = cloud[A], cloud[G2]
    a.bfd_down(G1)
    sent = only(a.from_vm(a.vm, 1, **TCP))
    assert sent.packet['tun_ipv4_dst'] == TUNNEL_IPS[G2]
    # G2's controller has not seen G1 go yet (live_peers says alive): standing by, it
    # SNATs all the same, and un-NATs the reply, with no pass of its own.
    assert G1 in g2.b.build().live_peers
    out = only(g2.from_tunnel(sent))
    assert (out.port, out.packet['ipv4_src'], out.packet['eth_src'], out.packet['eth_dst']) \
        == (PATCH_OFPORT, GW_IP, g2.gateway_port.mac_address, UPSTREAM_MAC)
    back = only(g2.from_outside(**REPLY))
    assert (back.packet['tun_ipv4_dst'], back.packet['ipv4_dst']) == \
        (TUNNEL_IPS[A], ip_of(a.vm))
    assert only(a.from_tunnel(back)).port == 1
    g2.sees_down(G1)  # taking over keeps the connection: its zone is the same
    assert only(g2.from_outside(**REPLY)).packet['ipv4_dst'] == ip_of(a.vm)
    out = only(g2.from_tunnel(only(a.from_vm(a.vm, 1, **TCP))))
    assert (out.port, out.packet['ipv4_src']) == (PATCH_OFPORT, GW_IP)
    back = only(g2.from_outside(**REPLY))
    assert only(a.from_tunnel(back)).port == 1
    a.sees_down(G1)  # and once A's controller knows, the same
    assert only(a.from_vm(a.vm, 1)).packet['tun_ipv4_dst'] == TUNNEL_IPS[G2]


def test_a_standby_answers_nothing_for_the_gateway_address_and_announces_nothing(cloud):
    """G2 stands by: no ARP or ping answer for the address, no gratuitous ARP, no ARP from
    it; only its probe for the upstream gateway, from its router MAC, claiming no address."""
    g2 = cloud[G2]
    assert g2.arp_for(GW_IP) == []
    assert g2.from_outside(ipv4_src=UPSTREAM_IP) == []  # a ping to the address
    sent = g2.announced()
    assert sent and all(f['eth_src'] == ROUTER_MACS[G2] and f['arp_sha'] == ROUTER_MACS[G2]
                        and f['arp_spa'] == '0.0.0.0' and f['arp_tpa'] == UPSTREAM_IP
                        for f in sent)


def test_the_upstream_answer_to_a_standbys_probe_is_learnt(cloud):
    g2 = cloud[G2]
    del g2.b.gateway_macs[g2.external_network.id, UPSTREAM_IP]
    g2.sync()
    # what a Linux router answers to a probe: to the sender MAC, from the gateway IP
    reply = dict(eth_src=UPSTREAM_MAC, eth_dst=ROUTER_MACS[G2], eth_type=p.ETH_TYPE_ARP,
                 arp_op=p.ARP_REPLY, arp_sha=UPSTREAM_MAC, arp_spa=UPSTREAM_IP,
                 arp_tha=ROUTER_MACS[G2], arp_tpa='0.0.0.0')
    assert [d.port for d in g2.switch.run(PATCH_OFPORT, **reply)] == [CONTROLLER]
    g2.neighbours.learn(_arp_bytes(reply))
    assert g2.neighbours.macs() == {(g2.external_network.id, UPSTREAM_IP): UPSTREAM_MAC}
    g2.b.gateway_macs.update(g2.neighbours.macs())
    g2.sync()
    a = cloud[A]
    a.bfd_down(G1)
    out = only(g2.from_tunnel(only(a.from_vm(a.vm, 1, **TCP))))
    assert (out.port, out.packet['eth_dst']) == (PATCH_OFPORT, UPSTREAM_MAC)


def _arp_bytes(frame: dict) -> bytes:
    def mac(text):
        return bytes.fromhex(text.replace(':', ''))

    def ip(text):
        return bytes(int(b) for b in text.split('.'))
    return (mac(frame['eth_dst']) + mac(frame['eth_src']) + struct.pack('!H', p.ETH_TYPE_ARP)
            + struct.pack('!HHBBH', 1, 0x0800, 6, 4, frame['arp_op'])
            + mac(frame['arp_sha']) + ip(frame['arp_spa']) + mac(frame['arp_tha'])
            + ip(frame['arp_tpa']))


def test_with_no_gateway_alive_nothing_leaves(cloud):
    a = cloud[A]
    a.bfd_down(G1, G2)
    assert a.from_vm(a.vm, 1) == []
    a.sees_down(G1, G2)
    assert a.from_vm(a.vm, 1) == []


def test_only_the_active_gateway_answers_arp_and_ping_for_the_gateway_address(cloud):
    g1 = cloud[G1]
    answer = only(g1.arp_for(GW_IP))
    mac = g1.gateway_port.mac_address
    assert answer.port == PATCH_OFPORT and answer.packet['in_port'] == PATCH_OFPORT
    assert {k: answer.packet[k] for k in ('eth_src', 'eth_dst', 'arp_op', 'arp_sha',
                                         'arp_spa', 'arp_tha', 'arp_tpa')} == \
        dict(eth_src=mac, eth_dst=UPSTREAM_MAC, arp_op=p.ARP_REPLY, arp_sha=mac, arp_spa=GW_IP,
             arp_tha=UPSTREAM_MAC, arp_tpa=UPSTREAM_IP)
    pong = only(g1.from_outside())
    assert pong.port == PATCH_OFPORT and pong.packet['in_port'] == PATCH_OFPORT
    assert {k: pong.packet[k] for k in ('eth_src', 'eth_dst', 'ipv4_src', 'ipv4_dst',
                                       'icmpv4_type')} == \
        dict(eth_src=mac, eth_dst=UPSTREAM_MAC, ipv4_src=GW_IP, ipv4_dst=INTERNET,
             icmpv4_type=0)
    for other in (cloud[A], cloud[G2]):
        assert other.arp_for(GW_IP) == []
        assert other.from_outside() == []


def test_the_next_gateway_answers_once_it_has_seen_the_first_go(cloud):
    g2 = cloud[G2]
    g2.sees_down(G1)
    assert only(g2.arp_for(GW_IP)).packet['arp_spa'] == GW_IP
    assert only(g2.from_outside()).packet['icmpv4_type'] == 0


def test_a_gateway_chassis_sends_only_to_those_ahead_of_it(cloud):
    """G2 holds nothing while G1 lives: its VMs go to G1; when G1's BFD goes, to no one
    behind G2 (A, last here) until G2's controller takes the gateway."""
    g2 = cloud[G2]
    port = g2.b.port(g2.private, '10.0.0.9', ofport=9, **{'binding:host_id': G2})
    g2.b.gateway_chassis(g2.router, G1, G2, A)
    g2.sync()
    assert only(g2.from_vm(port, 9)).packet['tun_ipv4_dst'] == TUNNEL_IPS[G1]
    g2.bfd_down(G1)
    assert g2.from_vm(port, 9) == []
    g2.sees_down(G1)
    out = only(g2.from_vm(port, 9))
    assert (out.port, out.packet['ipv4_src']) == (PATCH_OFPORT, GW_IP)


def test_a_gateway_that_lost_its_uplink_sends_its_vms_to_the_next(cloud):
    g1 = cloud[G1]
    g1.b.uplinks_down.add('physnet1')
    g1.sync()
    assert g1.arp_for(GW_IP) == []
    assert only(g1.from_vm(g1.local_vm, 2)).packet['tun_ipv4_dst'] == TUNNEL_IPS[G2]


def test_a_floating_ip_wins_over_snat_and_never_touches_a_gateway(cloud):
    a = cloud[A]
    out = only(a.from_vm(a.fip_vm, 4))
    assert (out.port, out.packet['ipv4_src']) == (PATCH_OFPORT, FIP)


def test_east_west_traffic_is_not_touched(cloud):
    a = cloud[A]
    routed = only(a.from_vm(a.vm, 1, ipv4_dst=ip_of(a.peer)))
    assert (routed.port, routed.packet['ipv4_src']) == (3, ip_of(a.vm))
    remote = only(a.from_vm(a.vm, 1, ipv4_dst=ip_of(a.local_vm)))
    assert remote.port == TUNNEL_OFPORT and remote.packet['eth_dst'] == a.local_vm.mac_address
    assert remote.packet['ipv4_src'] == ip_of(a.vm)


def test_the_routers_own_subnets_never_leave(cloud):
    for chassis, port, ofport in ((cloud[A], cloud[A].vm, 1), (cloud[G1], cloud[G1].local_vm, 2)):
        assert chassis.from_vm(port, ofport, ipv4_dst='10.0.0.1') == []   # the router's
        assert chassis.from_vm(port, ofport, ipv4_dst='10.0.1.77') == []  # nobody's


def test_what_outside_sends_to_the_gateway_address_unasked_goes_nowhere(cloud):
    assert cloud[G1].from_outside(**REPLY) == []


def test_an_icmp_error_about_what_a_vm_sent_comes_back_to_it(cloud):
    a, g1 = cloud[A], cloud[G1]
    udp = dict(ip_proto=17, udp_src=5000, udp_dst=33434)
    sent = only(g1.from_tunnel(only(a.from_vm(a.vm, 1, **udp)))).packet
    quoted = {k: sent[k] for k in ('eth_type', 'ipv4_src', 'ipv4_dst', 'ip_proto', 'udp_src',
                                   'udp_dst')}
    error = only(g1.from_outside(ipv4_src=UPSTREAM_IP, icmpv4_type=11, quoted=quoted))
    assert error.packet['ipv4_dst'] == ip_of(a.vm)
    assert error.packet['quoted']['ipv4_src'] == ip_of(a.vm)
    assert only(a.from_tunnel(error)).port == 1


def test_nothing_goes_out_before_the_upstream_mac_is_learnt_and_its_reply_goes_up(cloud):
    g1 = cloud[G1]
    g1.b.gateway_macs.clear()
    g1.sync()
    assert g1.from_vm(g1.local_vm, 2) == []
    reply = g1.arp_for(GW_IP, op=p.ARP_REPLY, eth_dst=g1.gateway_port.mac_address)
    assert [d.port for d in reply] == [CONTROLLER]
    g1.b.gateway_macs[g1.external_network.id, UPSTREAM_IP] = UPSTREAM_MAC
    g1.sync()
    assert only(g1.from_vm(g1.local_vm, 2)).port == PATCH_OFPORT


def test_on_a_vlan_external_network_the_answers_and_the_traffic_are_tagged():
    cloud = Cloud(network_type='vlan', segmentation_id=300)
    g1 = cloud[G1]
    assert only(g1.arp_for(GW_IP)).packet['vlan_vid'] == 0x1000 | 300
    assert only(g1.from_outside()).packet['vlan_vid'] == 0x1000 | 300
    out = only(g1.from_vm(g1.local_vm, 2, **TCP))
    assert (out.port, out.packet['vlan_vid'], out.packet['ipv4_src']) == \
        (PATCH_OFPORT, 0x1000 | 300, GW_IP)
    assert only(g1.from_outside(**REPLY)).port == 2


def test_without_snat_the_router_routes_out_and_in_through_its_gateway():
    cloud = Cloud(enable_snat=False)
    a, g1 = cloud[A], cloud[G1]
    out = only(g1.from_tunnel(only(a.from_vm(a.vm, 1, **TCP))))
    assert (out.port, out.packet['ipv4_src'], out.packet['eth_dst']) == \
        (PATCH_OFPORT, ip_of(a.vm), UPSTREAM_MAC)
    assert out.packet['ip_ttl'] == 63
    back = only(g1.from_outside(ipv4_dst=ip_of(a.vm), **REPLY))  # the upstream's route back
    assert (back.port, back.packet['ipv4_dst']) == (TUNNEL_OFPORT, ip_of(a.vm))
    assert only(a.from_tunnel(back)).port == 1
    local = only(g1.from_vm(g1.local_vm, 2))
    assert (local.port, local.packet['ipv4_src']) == (PATCH_OFPORT, ip_of(g1.local_vm))
    assert only(g1.from_outside(ipv4_dst=ip_of(g1.local_vm), icmpv4_type=0)).port == 2
    assert only(g1.arp_for(GW_IP)).packet['arp_spa'] == GW_IP
    assert g1.from_outside(ipv4_dst='10.0.0.77') == []  # nobody's, on the router's subnet
    assert cloud[G2].arp_for(GW_IP) == []  # only the active gateway answers for it


def test_distributed_each_chassis_snats_its_own_vms_to_its_own_address():
    cloud = Cloud(distributed=True)
    a = cloud[A]
    out = only(a.from_vm(a.vm, 1, **TCP))
    assert (out.port, out.packet['ipv4_src']) == (PATCH_OFPORT, A_ADDRESS)
    own_mac = a.b.ports[f'port-r-snat-{A}'].mac_address
    assert out.packet['eth_src'] == own_mac
    assert only(a.from_outside(A_ADDRESS, eth_dst=own_mac, **REPLY)).port == 1
    assert only(a.arp_for(A_ADDRESS)).packet['arp_sha'] == own_mac
    assert only(a.from_outside(A_ADDRESS, eth_dst=own_mac)).packet['icmpv4_type'] == 0
    assert not a.switch.table(p.SNAT_REDIRECT.number)  # nothing through a tunnel
    for other in (cloud[G1], cloud[G2]):  # the address is A's alone
        assert other.arp_for(A_ADDRESS) == []
    assert only(a.from_vm(a.fip_vm, 4)).packet['ipv4_src'] == FIP  # a FIP still wins


def test_distributed_the_gateway_holder_serves_as_the_gateway():
    """G1 holds the gateway (it has no address of its own here): the others' traffic that
    comes to it, and its own, leave as the gateway address."""
    cloud = Cloud(distributed=True)
    g1 = cloud[G1]
    assert only(g1.from_vm(g1.local_vm, 2)).packet['ipv4_src'] == GW_IP


def punted(deliveries) -> tuple:
    """(table, router key) of the one packet-in a too-big frame makes (frag_needed.py
    finds the router by the cookie, or reg5)."""
    sent = only(deliveries)
    assert sent.port == CONTROLLER, sent
    return sent.table, sent.cookie & COOKIE_OBJECT_MASK


def test_too_big_for_the_external_network_goes_to_the_controller_on_every_way_out(cloud):
    a, g1 = cloud[A], cloud[G1]
    largest, key = MTU + snat.ETHERNET_HEADER, a.router.key
    assert only(a.from_vm(a.vm, 1, frame_len=largest)).port == TUNNEL_OFPORT
    assert punted(a.from_vm(a.vm, 1, frame_len=largest + 1)) == (p.SNAT_REDIRECT.number, key)
    assert only(g1.from_vm(g1.local_vm, 2, frame_len=largest)).port == PATCH_OFPORT
    assert punted(g1.from_vm(g1.local_vm, 2, frame_len=largest + 1)) == (p.SNAT.number, key)
    assert punted(a.from_vm(a.fip_vm, 4, frame_len=largest + 1)) == (p.FIP_SNAT.number, key)
    unnatted = Cloud(enable_snat=False)[G1]
    assert punted(unnatted.from_vm(unnatted.local_vm, 2, frame_len=largest + 1)) == \
        (p.SNAT_TO_EXTERNAL.number, key)


def test_the_punts_of_too_big_frames_are_in_the_tables_frag_needed_knows(cloud):
    tables = {f.table for chassis in cloud.values() for f in chassis.switch.flows.values()
              if f.match.get('reg0') == p.TOO_BIG}
    assert tables == {t.number for t in p.TOO_BIG_TABLES}


def test_the_flows_read_back_as_they_were_made(cloud):
    for chassis in cloud.values():
        flows = [f for f in chassis.switch.flows.values() if apps.app_name(f.cookie) == 'snat']
        assert flows
        for flow in flows:
            assert read_back(flow) == flow, flow
        restarted = Reconciler(chassis.switch)
        restarted.resync()
        change = restarted.reconcile(apps.desired_flows(chassis.b.build()))
        assert (change.deletes, change.adds) == ([], [])


def test_a_gateway_withdrawn_from_its_peers_holds_nothing_even_first_in_the_list(cloud):
    """Come back first of the list (before its failback has moved it to the end), its
    peers see it dead and go on through G2: answering for the address here too would take
    the replies of their connections."""
    g1 = cloud[G1]
    g1.b.withdrawn_from |= {A, G2}
    g1.sync()
    assert g1.arp_for(GW_IP) == []
    assert g1.from_outside() == []
    assert only(g1.from_vm(g1.local_vm, 2)).packet['tun_ipv4_dst'] == TUNNEL_IPS[G2]
    assert g1.b.build().held_gateways() == []
    g1.b.withdrawn_from.clear()
    g1.sync()
    assert only(g1.arp_for(GW_IP)).packet['arp_spa'] == GW_IP


# A VM on a physical network behind the router (tenant-vlan, VLAN 150): over that network to
# the gateway MAC, never into a tunnel; the physical network finds the active gateway.
def test_a_vm_on_a_vlan_network_sends_out_over_it_to_the_gateway_mac(cloud):
    a = cloud[A]
    sent = only(a.from_vm(a.vlan_vm, 5, **TCP))
    assert (sent.port, sent.packet['vlan_vid']) == (PATCH_OFPORT, TAGGED)
    assert (sent.packet['eth_src'], sent.packet['eth_dst']) == \
        (a.vlan_vm.mac_address, a.gateway_port.mac_address)  # its own MAC: not routed here
    assert (sent.packet['ipv4_src'], sent.packet['ip_ttl']) == (ip_of(a.vlan_vm), 64)
    assert not [f for f in a.switch.table(p.SNAT_TUNNEL.number)
                if f.match.get('metadata') == a.b.networks[a.vlan.network_id].key]


def test_the_active_gateway_snats_what_comes_over_the_vlan_and_routes_the_reply_back(cloud):
    a, g1 = cloud[A], cloud[G1]
    cloud.physical.announce(G1)
    reached = cloud.physical.send(A, only(a.from_vm(a.vlan_vm, 5, **TCP)).packet)
    assert list(reached) == [G1]  # the switch learnt the gateway MAC there, on VLAN 150
    out = only(reached[G1])
    assert (out.port, out.packet['ipv4_src'], out.packet['ipv4_dst']) == \
        (PATCH_OFPORT, GW_IP, INTERNET)
    assert (out.packet['eth_src'], out.packet['eth_dst']) == \
        (g1.gateway_port.mac_address, UPSTREAM_MAC)
    assert 'vlan_vid' not in out.packet and out.packet['ip_ttl'] == 63  # on flat public
    back = only(g1.from_outside(**REPLY))
    assert (back.port, back.packet['vlan_vid']) == (PATCH_OFPORT, TAGGED)  # never a tunnel
    assert (back.packet['eth_src'], back.packet['eth_dst']) == \
        (ROUTER_MACS[G1], a.vlan_vm.mac_address)
    arrived = cloud.physical.send(G1, back.packet)
    assert list(arrived) == [A]
    assert (only(arrived[A]).port, only(arrived[A]).packet['ipv4_dst']) == (5, ip_of(a.vlan_vm))


def test_unknown_to_the_switch_it_is_flooded_and_only_the_active_gateway_takes_it(cloud):
    a = cloud[A]
    reached = cloud.physical.send(A, only(a.from_vm(a.vlan_vm, 5, **TCP)).packet)
    assert reached[G2] == []
    assert only(reached[G1]).packet['ipv4_src'] == GW_IP


def test_the_gateways_announcements_on_the_vlan_reach_no_vm_there(cloud):
    """G1 announces the gateway address on the VLAN network too (tagged), from the gateway
    MAC: every chassis drops it there, A with a VM on it included."""
    frames = cloud[G1].announced()
    on_vlan = [f for f in frames if f.get('vlan_vid') == TAGGED]
    assert len(on_vlan) == 3
    assert all((f['eth_src'], f['arp_spa'], f['arp_tpa']) ==
               (cloud[G1].gateway_port.mac_address, GW_IP, GW_IP) for f in on_vlan)
    for chassis in (A, G2):
        assert cloud[chassis].switch.run(PATCH_OFPORT, **on_vlan[0]) == []
    # a broadcast of anyone else's there does reach A's VM: only the gateway's is dropped
    other = dict(on_vlan[0], eth_src='fa:16:3e:77:77:77', arp_sha='fa:16:3e:77:77:77')
    assert [d.port for d in cloud[A].switch.run(PATCH_OFPORT, **other)] == [5]


def test_after_a_failover_the_new_gateways_announcements_take_the_vlan_to_it(cloud):
    """G1 dies (its link to the physical network with it); G2 takes the gateway when its
    controller sees G1's session go down, and its gratuitous ARPs on VLAN 150 move the
    gateway MAC there in the switch. A's VLAN VM never changes what it sends."""
    a, g2 = cloud[A], cloud[G2]
    cloud.physical.announce(G1)
    assert list(cloud.physical.send(A, only(a.from_vm(a.vlan_vm, 5, **TCP)).packet)) == [G1]
    cloud.physical.down.add(G1)
    assert cloud.physical.send(A, only(a.from_vm(a.vlan_vm, 5, **TCP)).packet) == {}  # lost
    g2.sees_down(G1)
    cloud.physical.announce(G2)
    reached = cloud.physical.send(A, only(a.from_vm(a.vlan_vm, 5, **TCP)).packet)
    assert list(reached) == [G2]
    out = only(reached[G2])
    assert (out.port, out.packet['ipv4_src'], out.packet['eth_src']) == \
        (PATCH_OFPORT, GW_IP, g2.gateway_port.mac_address)
    back = only(g2.from_outside(**REPLY))
    assert back.packet['eth_src'] == ROUTER_MACS[G2]
    assert only(cloud.physical.send(G2, back.packet)[A]).port == 5
    a.sees_down(G1)  # A's controller knowing changes nothing for it
    assert list(cloud.physical.send(A, only(a.from_vm(a.vlan_vm, 5)).packet)) == [G2]


def test_without_snat_a_vlan_vm_is_routed_out_and_in_over_its_network():
    cloud = Cloud(enable_snat=False)
    a, g1 = cloud[A], cloud[G1]
    cloud.physical.announce(G1)
    out = only(cloud.physical.send(A, only(a.from_vm(a.vlan_vm, 5, **TCP)).packet)[G1])
    assert (out.port, out.packet['ipv4_src'], out.packet['eth_dst']) == \
        (PATCH_OFPORT, ip_of(a.vlan_vm), UPSTREAM_MAC)
    back = only(g1.from_outside(ipv4_dst=ip_of(a.vlan_vm), **REPLY))
    assert (back.port, back.packet['vlan_vid']) == (PATCH_OFPORT, TAGGED)
    assert only(cloud.physical.send(G1, back.packet)[A]).port == 5


def test_a_vlan_vm_on_the_gateway_chassis_is_snatted_there():
    cloud = Cloud()
    g1 = cloud[G1]
    port = g1.b.port(g1.vlan, '10.0.2.9', ofport=9, **{'binding:host_id': G1})
    g1.sync()
    out = only(g1.from_vm(port, 9, **TCP))
    assert (out.port, out.packet['ipv4_src']) == (PATCH_OFPORT, GW_IP)
    back = only(g1.from_outside(**REPLY))
    assert (back.port, back.packet['ipv4_dst']) == (9, '10.0.2.9')


def test_a_too_big_frame_from_a_vlan_vm_goes_to_the_controller(cloud):
    a = cloud[A]
    largest = MTU + snat.ETHERNET_HEADER
    assert only(a.from_vm(a.vlan_vm, 5, frame_len=largest)).port == PATCH_OFPORT
    assert punted(a.from_vm(a.vlan_vm, 5, frame_len=largest + 1)) == \
        (p.SNAT_REDIRECT.number, a.router.key)


def test_a_vlan_vm_gets_out_with_no_bfd_port_to_any_gateway_yet():
    """The physical network needs no liveness port to find the gateway: a chassis that has
    none yet (just started) still sends its VLAN VMs' traffic out, its tunnel networks'
    not."""
    cloud = Cloud()
    a = cloud[A]
    a.b.liveness_ofports.clear()
    a.sync()
    assert a.from_vm(a.vm, 1) == []
    assert only(a.from_vm(a.vlan_vm, 5)).packet['vlan_vid'] == TAGGED
