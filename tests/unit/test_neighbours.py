"""The external gateways' MACs learnt by ARP, and the gratuitous ARPs of floating IPs and
routers' addresses (a gateway taken over, a distributed address) that become local: what
goes out of br-int's patch port, and when."""
import struct
import threading

import pytest

from dragonflow.controller import flows as of
from dragonflow.controller import pipeline as p
from dragonflow.controller.apps import dhcp
from dragonflow.controller.cache import Cache
from dragonflow.controller.neighbours import (
    GARP_SPACING,
    PROBE_SENDER_IP,
    UNANSWERED_RETRY,
    Neighbours,
    parse_arp,
)
from dragonflow.controller.openflow import PacketIn, SwitchError
from dragonflow.controller.packet_ins import PacketIns
from dragonflow.controller.reconciler import Reconciler
from tests.flowsim import FlowTableSimulator
from tests.unit.builders import PATCH_OFPORT, TopologyBuilder, install
from tests.unit.clock import Clock

REFRESH = 30.0
GATEWAY_IP, GATEWAY_MAC, OTHER_MAC = '172.24.4.1', 'fa:16:3e:ee:ee:01', 'fa:16:3e:ee:ee:02'
GATEWAY = ('net-public', GATEWAY_IP)  # as Topology.gateway_macs names it
FIP, FIP2 = '172.24.4.100', '172.24.4.101'
# A gratuitous ARP, and who has the gateway? (op, sender IP, target IP, out of the patch port)
ANNOUNCE_AND_ASK = sorted([(1, FIP, FIP, PATCH_OFPORT), (1, FIP, GATEWAY_IP, PATCH_OFPORT)])


class Switch:
    """Records the packet-outs; refuses them while ``connected`` is False."""

    def __init__(self):
        self.sent, self.connected = [], True

    def send_packets(self, packets):
        if not self.connected:
            raise SwitchError('br-int is not connected')
        self.sent.extend(packets)

    def take(self) -> list:
        """(op, sender IP, target IP, ofport) of each ARP sent since the last take."""
        sent, self.sent = self.sent, []
        return [_described(actions, data) for actions, data in sent]


def _described(actions, data: bytes) -> tuple:
    op, _, sender_ip = parse_arp(data)
    offset = 16 if data[12:14] == b'\x81\x00' else 12
    target_ip = '.'.join(str(b) for b in data[offset + 26:offset + 30])
    return op, sender_ip, target_ip, actions[0].port


def arp_reply(sender_ip, sender_mac, to_mac='fa:16:3e:00:00:99', to_ip=FIP) -> bytes:
    def mac(text):
        return bytes.fromhex(text.replace(':', ''))

    def ip(text):
        return bytes(int(b) for b in text.split('.'))
    return (mac(to_mac) + mac(sender_mac) + b'\x08\x06' + b'\x00\x01\x08\x00\x06\x04\x00\x02'
            + mac(sender_mac) + ip(sender_ip) + mac(to_mac) + ip(to_ip))


class World:
    def __init__(self, network_type='flat', segmentation_id=None):
        self.clock, self.switch, self.wakes = Clock(), Switch(), []
        self.b = b = TopologyBuilder()
        net = b.network('private')
        subnet = b.subnet(net, '10.0.0.0/24')
        self.vm = b.port(subnet, '10.0.0.5', ofport=1)
        self.vm2 = b.port(subnet, '10.0.0.6', ofport=2)
        _, self.external = b.external_network('public', '172.24.4.0/24',
                                              network_type=network_type,
                                              segmentation_id=segmentation_id)
        self.router = b.router('r', subnet)
        b.router_gateway(self.router, self.external, '172.24.4.10')
        self.fip = b.floating_ip(self.external, FIP, self.vm, self.router)
        self.fip_mac = b.ports[self.fip.floating_port_id].mac_address  # what replies go to
        self.neighbours = self.make()

    def make(self, **kwargs) -> Neighbours:
        return Neighbours(self.switch, REFRESH, threading.Event(),
                          wake_loop=lambda: self.wakes.append(1), clock=self.clock, **kwargs)

    def confirm(self):
        self.b.gateway_macs = self.neighbours.macs()
        self.neighbours.confirmed(self.b.build())

    def at(self, seconds):
        """Move the clock on and send what is due."""
        self.clock.now += seconds
        self.neighbours.send_due()
        return self.switch.take()


@pytest.fixture
def world():
    return World()


def test_a_new_floating_ip_asks_for_its_gateway_and_announces_itself(world):
    world.confirm()
    assert sorted(world.at(0)) == ANNOUNCE_AND_ASK
    assert world.at(GARP_SPACING) == [(1, FIP, FIP, PATCH_OFPORT)]
    assert world.at(GARP_SPACING) == [(1, FIP, FIP, PATCH_OFPORT)]
    world.confirm()  # the same floating IP, still local: no more announcements
    assert world.at(GARP_SPACING) == []


def test_the_gateways_reply_is_learnt_and_wakes_the_loop_once(world):
    world.confirm()
    world.at(0)
    world.neighbours.learn(arp_reply(GATEWAY_IP, GATEWAY_MAC, world.fip_mac))
    assert world.neighbours.macs() == {GATEWAY: GATEWAY_MAC}
    assert world.wakes == [1]
    world.neighbours.learn(arp_reply(GATEWAY_IP, GATEWAY_MAC, world.fip_mac))
    assert world.wakes == [1]
    world.neighbours.learn(arp_reply(GATEWAY_IP, OTHER_MAC, world.fip_mac))  # failed over
    assert world.neighbours.macs() == {GATEWAY: OTHER_MAC}
    assert world.wakes == [1, 1]


def test_replies_from_others_and_other_frames_are_ignored(world):
    world.confirm()
    world.neighbours.learn(arp_reply('172.24.4.77', OTHER_MAC, world.fip_mac))
    world.neighbours.learn(b'\x00' * 60)
    world.neighbours.learn(b'')
    assert world.neighbours.macs() == {}
    assert world.wakes == []


def test_nothing_is_learnt_for_a_gateway_no_floating_ip_here_uses(world):
    world.neighbours.learn(arp_reply(GATEWAY_IP, GATEWAY_MAC, world.fip_mac))
    assert world.neighbours.macs() == {}


def test_the_gateway_is_asked_again_sooner_while_unanswered_then_every_refresh(world):
    world.confirm()
    world.at(2 * GARP_SPACING)
    asks = [s for s in world.at(UNANSWERED_RETRY) if s[2] == GATEWAY_IP]
    assert asks == [(1, FIP, GATEWAY_IP, PATCH_OFPORT)]
    world.neighbours.learn(arp_reply(GATEWAY_IP, GATEWAY_MAC, world.fip_mac))
    assert world.at(REFRESH - 0.1) == []
    assert world.at(0.1) == [(1, FIP, GATEWAY_IP, PATCH_OFPORT)]
    assert world.neighbours.macs() == {GATEWAY: GATEWAY_MAC}  # kept while unanswered


def test_a_gateway_no_longer_needed_is_kept_a_refresh_period_and_asked_again_when_needed(
        world):
    world.confirm()
    world.at(1)
    world.neighbours.learn(arp_reply(GATEWAY_IP, GATEWAY_MAC, world.fip_mac))
    world.b.associate(world.fip)  # disassociated
    world.confirm()
    assert world.at(REFRESH) == []  # not asked while unneeded
    world.b.associate(world.fip, world.vm2, world.router)  # back within the period
    world.confirm()
    assert world.neighbours.macs() == {GATEWAY: GATEWAY_MAC}  # its way out at once
    assert sorted(world.at(0)) == ANNOUNCE_AND_ASK  # and asked again meanwhile


def test_a_gateway_unneeded_for_a_refresh_period_is_forgotten(world):
    world.confirm()
    world.at(1)
    world.neighbours.learn(arp_reply(GATEWAY_IP, GATEWAY_MAC, world.fip_mac))
    world.b.associate(world.fip)  # disassociated
    world.confirm()
    world.at(REFRESH)
    world.confirm()
    assert world.neighbours.macs() == {}
    world.b.associate(world.fip, world.vm2, world.router)
    world.confirm()
    assert sorted(world.at(0)) == ANNOUNCE_AND_ASK


def test_a_floating_ip_moved_to_another_local_port_is_announced_again(world):
    world.confirm()
    world.at(1)
    world.b.associate(world.fip, world.vm2, world.router)
    world.confirm()
    assert world.at(0) == [(1, FIP, FIP, PATCH_OFPORT)]


def test_a_floating_ip_not_plugged_here_is_neither_announced_nor_asked_from(world):
    world.b.remove_port(world.vm)
    world.confirm()
    assert world.at(0) == []


def test_on_a_vlan_external_network_the_frames_are_tagged():
    world = World(network_type='vlan', segmentation_id=300)
    world.confirm()
    world.neighbours.send_due()
    frames = [data for _, data in world.switch.sent]
    assert frames and all(f[12:16] == b'\x81\x00\x01\x2c' for f in frames)
    assert sorted(world.switch.take()) == ANNOUNCE_AND_ASK


def test_what_the_switch_did_not_take_is_sent_again(world):
    world.confirm()
    world.switch.connected = False
    with pytest.raises(SwitchError):
        world.neighbours.send_due()
    world.switch.connected = True
    assert sorted(world.at(0)) == ANNOUNCE_AND_ASK


def test_a_restarted_controller_keeps_the_mac_br_int_has_until_learnt_again(world):
    world.b.gateway_macs[GATEWAY] = GATEWAY_MAC
    topology = world.b.build()
    reconciler = Reconciler(FlowTableSimulator())
    install(topology, reconciler)
    cache = Cache('chassis-1')
    cache.objects['ports'], cache.objects['subnets'] = topology.ports, topology.subnets
    restarted = world.make(installed=lambda: reconciler.installed, cache=cache)
    assert restarted.macs() == {GATEWAY: GATEWAY_MAC}
    restarted.confirmed(topology)
    restarted.learn(arp_reply(GATEWAY_IP, OTHER_MAC, world.fip_mac))
    assert restarted.macs() == {GATEWAY: OTHER_MAC}


def test_a_fresh_br_int_remembers_nothing(world):
    restarted = world.make(installed=dict, cache=Cache('chassis-1'))
    assert restarted.macs() == {}


def test_two_floating_ips_on_one_subnet_ask_the_gateway_once(world):
    world.b.floating_ip(world.external, FIP2, world.vm2, world.router)
    world.confirm()
    sent = world.at(0)
    assert [s for s in sent if s[2] == GATEWAY_IP] == [(1, FIP, GATEWAY_IP, PATCH_OFPORT)]
    assert sorted(s for s in sent if s[2] != GATEWAY_IP) == [(1, FIP, FIP, PATCH_OFPORT),
                                                             (1, FIP2, FIP2, PATCH_OFPORT)]


def test_parse_arp_reads_tagged_and_untagged_frames():
    frame = arp_reply(GATEWAY_IP, GATEWAY_MAC)
    assert parse_arp(frame) == (2, GATEWAY_MAC, GATEWAY_IP)
    assert parse_arp(frame[:12] + b'\x81\x00\x00\x64' + frame[12:]) == \
        (2, GATEWAY_MAC, GATEWAY_IP)
    assert parse_arp(frame[:30]) is None
    assert of.Output(1)  # the packet-outs are plain flow actions


def test_packet_ins_of_provider_ingress_go_to_the_neighbours(world):
    packet_ins = PacketIns(world.switch, dhcp.Settings(), 10.0, threading.Event(),
                           topology=lambda: None, neighbours=world.neighbours)
    world.confirm()
    packet_ins.packet_in(PacketIn(PATCH_OFPORT, p.PROVIDER_INGRESS.number, 0,
                                  arp_reply(GATEWAY_IP, GATEWAY_MAC, world.fip_mac)))
    assert world.neighbours.macs() == {GATEWAY: GATEWAY_MAC}
    packet_ins.packet_in(PacketIn(PATCH_OFPORT, p.PROVIDER_INGRESS.number, 0, b'junk'))


def test_two_external_networks_with_one_gateway_ip_each_learn_their_own_mac(world):
    """Two operators' external networks may both have their gateway at 192.168.0.1: each
    floating IP's network keeps the MAC that answered it."""
    b = world.b
    b.subnets[world.external.id].gateway_ip = '192.168.0.1'
    _, other = b.external_network('public2', '192.168.0.0/24', physnet='physnet2')
    other_subnet = b.subnet(b.network('private2'), '10.0.9.0/24')
    vm = b.port(other_subnet, '10.0.9.5', ofport=9)
    router = b.router('r2', other_subnet)
    b.router_gateway(router, other, '192.168.0.10')
    fip = b.floating_ip(other, '192.168.0.100', vm, router)
    world.confirm()
    world.at(0)
    world.neighbours.learn(arp_reply('192.168.0.1', GATEWAY_MAC, world.fip_mac))
    world.neighbours.learn(arp_reply('192.168.0.1', OTHER_MAC,
                                     b.ports[fip.floating_port_id].mac_address,
                                     '192.168.0.100'))
    assert world.neighbours.macs() == {('net-public', '192.168.0.1'): GATEWAY_MAC,
                                       ('net-public2', '192.168.0.1'): OTHER_MAC}
    world.confirm()
    topology = world.b.build()
    assert {f.address: f.gateway_mac for f in topology.local_floating_ips()} == \
        {FIP: GATEWAY_MAC, '192.168.0.100': OTHER_MAC}


GW_IP = '172.24.4.10'  # the router's gateway address (World's)


def gateway_world() -> World:
    """No floating IP: this chassis is the router's second gateway chassis, the first
    (chassis-2) alive."""
    world = World()
    b = world.b
    b.associate(world.fip)
    b.remote_chassis('chassis-2', '172.31.0.12', gateway=True)
    b.is_gateway = True
    b.gateway_chassis(world.router, 'chassis-2', b.chassis_id)
    world.gateway_mac = b.ports[world.router.gateway_port_id].mac_address
    return world


def test_a_chassis_that_takes_a_routers_gateway_announces_its_address_and_asks_upstream():
    world = gateway_world()
    world.confirm()
    # chassis-2 holds it: this one only probes for the upstream gateway (RFC 5227), from
    # its router MAC and no address, never from the gateway's
    assert world.at(0) == [(1, PROBE_SENDER_IP, GATEWAY_IP, PATCH_OFPORT)]
    world.b.liveness('chassis-2', live=False)
    world.confirm()
    assert sorted(world.at(0)) == [(1, GW_IP, GATEWAY_IP, PATCH_OFPORT),
                                   (1, GW_IP, GW_IP, PATCH_OFPORT)]
    assert world.at(GARP_SPACING) == [(1, GW_IP, GW_IP, PATCH_OFPORT)]
    assert world.at(GARP_SPACING) == [(1, GW_IP, GW_IP, PATCH_OFPORT)]
    world.neighbours.learn(arp_reply(GATEWAY_IP, GATEWAY_MAC, world.gateway_mac, GW_IP))
    assert world.neighbours.macs() == {GATEWAY: GATEWAY_MAC}
    world.confirm()
    assert world.b.build().local_gateway(world.router).gateway_mac == GATEWAY_MAC
    assert world.at(GARP_SPACING) == []  # still held: announced once


def test_a_standby_learns_the_upstream_mac_by_a_probe_from_its_router_mac():
    """The router's second gateway chassis, the first alive: its probe (RFC 5227) claims no
    address and comes from its router MAC, so nobody upstream learns the gateway address
    or MAC here; the reply to the router MAC gives it the MAC its standby SNAT sends to."""
    world = gateway_world()
    world.confirm()
    world.neighbours.send_due()
    (_, frame), = world.switch.sent
    assert world.switch.take() == [(1, PROBE_SENDER_IP, GATEWAY_IP, PATCH_OFPORT)]
    router_mac = bytes.fromhex(world.b.router_mac.replace(':', ''))
    assert frame[:6] == b'\xff' * 6 and frame[6:12] == router_mac
    assert frame[22:28] == router_mac  # the sender MAC the reply goes to
    world.neighbours.learn(arp_reply(GATEWAY_IP, GATEWAY_MAC, world.b.router_mac, '0.0.0.0'))
    assert world.neighbours.macs() == {GATEWAY: GATEWAY_MAC}
    # a reply to the gateway MAC (the holder's ask, flooded here) is not this one's
    world.neighbours.learn(arp_reply(GATEWAY_IP, OTHER_MAC, world.gateway_mac, GW_IP))
    assert world.neighbours.macs() == {GATEWAY: GATEWAY_MAC}


def test_a_gateway_given_back_and_taken_again_is_announced_again():
    world = gateway_world()
    world.b.liveness('chassis-2', live=False)
    world.confirm()
    world.at(1)
    world.b.liveness('chassis-2', live=True)
    world.confirm()
    world.b.liveness('chassis-2', live=False)
    world.confirm()
    assert (1, GW_IP, GW_IP, PATCH_OFPORT) in world.at(0)


def test_a_distributed_address_new_here_is_announced_and_asks_from_itself():
    world = World()
    b = world.b
    b.associate(world.fip)
    port = b.chassis_snat(world.router, world.external, '172.24.4.50')
    world.confirm()
    assert sorted(world.at(0)) == [(1, '172.24.4.50', GATEWAY_IP, PATCH_OFPORT),
                                   (1, '172.24.4.50', '172.24.4.50', PATCH_OFPORT)]
    world.neighbours.learn(arp_reply(GATEWAY_IP, GATEWAY_MAC, port.mac_address, '172.24.4.50'))
    assert world.neighbours.macs() == {GATEWAY: GATEWAY_MAC}


def test_a_restarted_gateway_keeps_the_mac_its_snat_flows_have():
    world = gateway_world()
    world.b.liveness('chassis-2', live=False)
    world.b.gateway_macs[GATEWAY] = GATEWAY_MAC
    topology = world.b.build()
    reconciler = Reconciler(FlowTableSimulator())
    install(topology, reconciler)
    assert reconciler.installed and not [f for f in reconciler.installed.values()
                                         if f.table == p.FIP_TO_EXTERNAL.number]
    cache = Cache('chassis-1')
    cache.objects['ports'], cache.objects['subnets'] = topology.ports, topology.subnets
    restarted = world.make(installed=lambda: reconciler.installed, cache=cache)
    assert restarted.macs() == {GATEWAY: GATEWAY_MAC}


def _tags(switch: Switch) -> list:
    """(VLAN id or 0: untagged, source MAC, sender IP, target IP) of each ARP sent since the
    last take."""
    sent, switch.sent = switch.sent, []
    return sorted(((struct.unpack('!H', data[14:16])[0] if data[12:14] == b'\x81\x00' else 0),
                   ':'.join(f'{b:02x}' for b in data[6:12]), *_described(actions, data)[1:3])
                  for actions, data in sent)


def test_a_gateway_taken_is_announced_on_each_vlan_network_behind_the_router_too():
    """The router's other chassis send its VMs' traffic out over a VLAN network behind it
    to the gateway MAC: the switches must learn it on this chassis' port there too. A
    tunnel network gets nothing, and one joining the router later is announced on then."""
    world = gateway_world()
    b = world.b
    vlan = b.subnet(b.provider_network('tenant-vlan', 150), '10.0.2.0/24')
    b.add_interface(world.router, vlan)
    b.liveness('chassis-2', live=False)
    world.confirm()
    world.neighbours.send_due()
    mac = world.gateway_mac
    assert _tags(world.switch) == [(0, mac, GW_IP, GATEWAY_IP), (0, mac, GW_IP, GW_IP),
                                   (150, mac, GW_IP, GW_IP)]
    assert sorted(world.at(GARP_SPACING)) == [(1, GW_IP, GW_IP, PATCH_OFPORT)] * 2
    world.at(GARP_SPACING)
    b.add_interface(world.router, b.subnet(b.provider_network('late', 160), '10.0.3.0/24'))
    world.confirm()
    world.neighbours.send_due()
    assert _tags(world.switch) == [(160, mac, GW_IP, GW_IP)]


def test_a_distributed_address_is_announced_on_its_external_network_only():
    """Distributed, the VMs of the VLAN network are SNATed where they are: nothing goes
    over it to the address."""
    world = World()
    b = world.b
    b.associate(world.fip)
    vlan = b.subnet(b.provider_network('tenant-vlan', 150), '10.0.2.0/24')
    b.add_interface(world.router, vlan)
    b.chassis_snat(world.router, world.external, '172.24.4.50')
    world.confirm()
    world.neighbours.send_due()
    assert [tag for tag, *_ in _tags(world.switch)] == [0, 0]


def vlan_gateway_world() -> World:
    """gateway_world with a VLAN network (150) behind the router."""
    world = gateway_world()
    b = world.b
    b.add_interface(world.router, b.subnet(b.provider_network('tenant-vlan', 150),
                                           '10.0.2.0/24'))
    return world


def test_the_gateways_announcement_behind_the_router_is_repeated_every_refresh_while_held():
    """Nothing else comes from the gateway MAC on the VLAN network: the switches there keep
    it on this chassis' port only by these (the external network's by the asks)."""
    world = vlan_gateway_world()
    world.b.liveness('chassis-2', live=False)
    world.confirm()
    taken = world.clock.now
    world.at(0)
    world.neighbours.learn(arp_reply(GATEWAY_IP, GATEWAY_MAC, world.gateway_mac, GW_IP))
    world.at(GARP_SPACING)
    world.at(GARP_SPACING)
    assert world.at(REFRESH - 3 * GARP_SPACING) == []
    mac = world.gateway_mac
    world.clock.now = taken + REFRESH
    world.neighbours.send_due()
    assert _tags(world.switch) == [(0, mac, GW_IP, GATEWAY_IP), (150, mac, GW_IP, GW_IP)]
    world.b.liveness('chassis-2', live=True)  # given back: no more, only the probes
    world.confirm()
    assert {frame[1] for frame in world.at(REFRESH)} <= {PROBE_SENDER_IP}


def test_a_gratuitous_arp_still_due_when_the_gateway_is_given_back_is_not_sent():
    """chassis-2 took the gateway back meanwhile and announced it: one of ours after its
    would take the MAC back to this chassis, on the VLAN network for good."""
    world = vlan_gateway_world()
    world.b.liveness('chassis-2', live=False)
    world.confirm()
    assert len([s for s in world.at(0) if s[2] == GW_IP]) == 2  # external and VLAN
    world.b.liveness('chassis-2', live=True)
    world.confirm()
    # nothing from the gateway address any more (standing by, it only probes)
    assert [s for s in world.at(GARP_SPACING) if s[1] != PROBE_SENDER_IP] == []
    assert [s for s in world.at(GARP_SPACING) if s[1] != PROBE_SENDER_IP] == []


def test_the_holder_announces_again_behind_the_router_when_another_gateway_comes_alive():
    """At a router's creation no BFD session is up yet: its second gateway chassis sees no
    one ahead alive, holds it too for a moment and announces it, perhaps last. Once this
    chassis sees it alive (and it has given the gateway back), the VLAN network behind the
    router hears from the holder again."""
    world = vlan_gateway_world()
    world.b.gateway_chassis(world.router, world.b.chassis_id, 'chassis-2')
    world.b.liveness('chassis-2', live=False)
    world.confirm()
    world.at(0)
    world.at(GARP_SPACING)
    world.at(GARP_SPACING)
    world.b.liveness('chassis-2', live=True)
    world.confirm()
    world.neighbours.send_due()
    assert _tags(world.switch) == [(150, world.gateway_mac, GW_IP, GW_IP)]
