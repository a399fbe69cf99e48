"""Fragmentation needed: a packet too big for the router's external network reaches the
controller, which answers ICMP 3/4 from the router (checked with scapy, an implementation
independent of the one that built it) and sends it back through l3 to the sender, through
its security groups as related to what it sent; no answer without DF, about an ICMP error,
a later fragment or from a multicast source; each router's answers within a rate limit."""
import threading

import pytest
from scapy.layers.inet import ICMP, IP, TCP, IPerror, TCPerror
from scapy.layers.l2 import Ether

from dragonflow.controller import flows as of
from dragonflow.controller import frag_needed
from dragonflow.controller import pipeline as p
from dragonflow.controller.apps import dhcp
from dragonflow.controller.openflow import PacketIn
from dragonflow.controller.packet_ins import FRAG_NEEDED_RATE, PacketIns
from tests.unit.builders import PATCH_OFPORT, TopologyBuilder, install, ip_of, only
from tests.unit.clock import Clock

ME = 'chassis-1'
MTU = 1400
UPSTREAM_IP, UPSTREAM_MAC = '172.24.4.1', 'fa:16:3e:ee:ee:01'
INTERNET = '203.0.113.10'
LARGEST = MTU + frag_needed.ETHERNET_HEADER  # the longest frame that goes out


class Cloud:
    """One chassis holding the gateway of router r, which joins private (10.0.0.0/24) and
    other (10.0.1.0/24) to the flat external network public (MTU 1400): vm at ofport 1 and
    peer (on other) at 3 get out by the router's SNAT, fip_vm at 2 by its floating IP. vm's
    and peer's security group lets nothing in that does not belong to what they sent."""

    def __init__(self):
        self.b = b = TopologyBuilder(ME)
        b.remote_chassis(ME, '172.31.0.1', gateway=True)
        b.is_gateway = True
        b.security_group('egress-only', ('egress', {}))
        private = b.subnet(b.network('private'), '10.0.0.0/24')
        other = b.subnet(b.network('other'), '10.0.1.0/24')
        self.vm = b.port(private, '10.0.0.5', ofport=1, security_groups=['sg-egress-only'])
        self.fip_vm = b.port(private, '10.0.0.6', ofport=2)
        self.peer = b.port(other, '10.0.1.5', ofport=3, security_groups=['sg-egress-only'])
        self.ofports = {self.vm.id: 1, self.fip_vm.id: 2, self.peer.id: 3}
        external, public = b.external_network('public', '172.24.4.0/24', mtu=MTU)
        self.router = b.router('r', private, other)
        b.router_gateway(self.router, public, '172.24.4.10')
        b.gateway_chassis(self.router, ME)
        b.floating_ip(public, '172.24.4.100', self.fip_vm, self.router)
        b.gateway_macs[external.id, UPSTREAM_IP] = UPSTREAM_MAC
        self.topology = b.build()
        self.switch = install(self.topology)

    def interface(self, port):
        """The router's interface on the port's network."""
        return next(i for i in self.topology.router_interfaces(self.router)
                    if i.network.id == port.network_id)

    def send(self, port, length, **ip) -> tuple:
        """A TCP segment from a VM to the internet host, ``length`` bytes of frame (``ip``:
        IP header fields, flags='DF'): its deliveries, and the frame."""
        frame = tcp_frame(port.mac_address, self.interface(port).port.mac_address,
                          ip_of(port), length, **ip)
        return self.switch.run(self.ofports[port.id], **fields_of(frame), frame_len=length), \
            frame


def tcp_frame(src_mac, dst_mac, src_ip, length, sport=40000, **ip) -> bytes:
    headers = Ether(src=src_mac, dst=dst_mac) / IP(src=src_ip, dst=INTERNET, **ip) / \
        TCP(sport=sport, dport=443, flags='A')
    return bytes(headers / bytes(length - len(headers)))


def fields_of(frame: bytes) -> dict:
    """A TCP frame, or an ICMP error about one, as the simulator takes it."""
    packet = Ether(frame)
    fields = dict(eth_src=packet.src, eth_dst=packet.dst, eth_type=p.ETH_TYPE_IPV4,
                  ipv4_src=packet[IP].src, ipv4_dst=packet[IP].dst, ip_proto=packet[IP].proto)
    if ICMP in packet:
        quoted = packet[IPerror]
        fields.update(icmpv4_type=packet[ICMP].type, icmpv4_code=packet[ICMP].code,
                      quoted=dict(eth_type=p.ETH_TYPE_IPV4, ipv4_src=quoted.src,
                                  ipv4_dst=quoted.dst, ip_proto=quoted.proto,
                                  tcp_src=quoted[TCPerror].sport,
                                  tcp_dst=quoted[TCPerror].dport))
    else:
        fields.update(tcp_src=packet[TCP].sport, tcp_dst=packet[TCP].dport)
    return fields


def packet_in(delivery, frame: bytes) -> PacketIn:
    """What br-int sends the controller for a delivery to it: the frame, the table and
    cookie of the flow, the registers."""
    assert delivery.port == of.CONTROLLER
    return PacketIn(of.CONTROLLER, delivery.table, delivery.cookie, frame, delivery.pipeline)


class Switch:
    def __init__(self):
        self.sent = []

    def send_packets(self, packets):
        self.sent.extend(packets)


def controller(topology, rate=FRAG_NEEDED_RATE, clock=None) -> tuple:
    """The packet-in handler of a chassis whose flows are ``topology``'s, and its switch."""
    switch = Switch()
    ins = PacketIns(switch, dhcp.Settings(), 1.0, threading.Event(), lambda: topology,
                    frag_needed_rate=rate, clock=clock or Clock())
    return ins, switch


def answers(ins: PacketIns, switch: Switch, *packets: PacketIn) -> list:
    """The packet-outs the controller sends for these packet-ins, once its thread has
    served them."""
    for packet in packets:
        ins.packet_in(packet)
    ins.serve_queued()
    sent, switch.sent = switch.sent, []
    return sent


def checksums_hold(frame: bytes) -> bool:
    """The IP and ICMP checksums are the ones scapy computes."""
    parsed = Ether(frame)
    again = parsed.copy()
    del again[IP].chksum, again[ICMP].chksum
    again = Ether(bytes(again))
    return (parsed[IP].chksum, parsed[ICMP].chksum) == (again[IP].chksum, again[ICMP].chksum)


@pytest.fixture
def cloud():
    return Cloud()


@pytest.mark.parametrize('who, table', [
    ('vm', p.SNAT), ('fip_vm', p.FIP_SNAT), ('peer', p.SNAT)])
def test_a_too_big_packet_with_df_is_answered_from_the_router(cloud, who, table):
    port = getattr(cloud, who)
    [delivery], frame = cloud.send(port, LARGEST + 1, flags='DF')
    assert (delivery.port, delivery.table) == (of.CONTROLLER, table.number)
    [(actions, reply)] = answers(*controller(cloud.topology), packet_in(delivery, frame))
    assert actions == [of.SetField(p.ROUTER_REG, cloud.router.key), of.Resubmit(p.L3.number)]
    icmp, original = Ether(reply), Ether(frame)[IP]
    assert (icmp[IP].src, icmp[IP].dst, icmp[ICMP].type, icmp[ICMP].code,
            icmp[ICMP].nexthopmtu) == (cloud.interface(port).ip, ip_of(port), 3, 4, MTU)
    assert bytes(icmp[ICMP].payload) == bytes(original)[:original.ihl * 4 + 8]
    assert checksums_hold(reply)
    # l3 routes it to the sender, whose security group takes it as related to what it sent.
    back = only(cloud.switch.packet_out(actions, **fields_of(reply)))
    assert back.port == cloud.ofports[port.id]
    assert (back.packet['ipv4_src'], back.packet['icmpv4_type']) == (
        cloud.interface(port).ip, 3)


def test_an_answer_about_nothing_the_sender_sent_is_not_let_in(cloud):
    """The security group lets the answer in as related: the same answer about a
    connection the VM never opened stays out."""
    [delivery], frame = cloud.send(cloud.vm, LARGEST + 1, flags='DF')
    [(actions, reply)] = answers(*controller(cloud.topology), packet_in(delivery, frame))
    unknown = fields_of(reply)
    unknown['quoted'] = dict(unknown['quoted'], tcp_src=40001)
    assert cloud.switch.packet_out(actions, **unknown) == []


def test_a_packet_that_fits_goes_out(cloud):
    [delivery], _ = cloud.send(cloud.vm, LARGEST, flags='DF')
    assert delivery.port == PATCH_OFPORT


def too_big(cloud, frame: bytes) -> PacketIn:
    """``frame`` sent to the controller as vm's too-big packets are (table, registers)."""
    [delivery], _ = cloud.send(cloud.vm, LARGEST + 1, flags='DF')
    return packet_in(delivery, frame)


@pytest.mark.parametrize('ip', [
    {},                                   # no DF: dropped, as OVS does not fragment
    {'flags': 'DF', 'frag': 100},         # a later fragment
    {'flags': 'DF', 'src': '224.0.0.5'},  # from a multicast address
], ids=['no DF', 'later fragment', 'multicast source'])
def test_no_answer_without_df_or_about_what_rfc_1122_exempts(cloud, ip):
    frame = tcp_frame(cloud.vm.mac_address, 'fa:16:3e:00:00:99',
                      ip.pop('src', ip_of(cloud.vm)), LARGEST + 1, **ip)
    assert answers(*controller(cloud.topology), too_big(cloud, frame)) == []
    assert frag_needed.answer(cloud.topology, cloud.router.key, frame) is None


def _icmp(cloud, icmp_type: int, code: int) -> bytes:
    headers = Ether(src=cloud.vm.mac_address, dst='fa:16:3e:00:00:99') / \
        IP(src=ip_of(cloud.vm), dst=INTERNET, flags='DF') / ICMP(type=icmp_type, code=code)
    return bytes(headers / bytes(LARGEST + 1 - len(headers)))


def test_no_answer_about_an_icmp_error_but_one_about_an_echo_request(cloud):
    assert answers(*controller(cloud.topology), too_big(cloud, _icmp(cloud, 3, 3))) == []
    [(_, reply)] = answers(*controller(cloud.topology), too_big(cloud, _icmp(cloud, 8, 0)))
    assert Ether(reply)[ICMP].type == 3


def test_no_answer_for_a_router_this_chassis_does_not_know(cloud):
    [delivery], frame = cloud.send(cloud.vm, LARGEST + 1, flags='DF')
    stranger = packet_in(delivery, frame)._replace(match={p.ROUTER_REG: 999}, cookie=999)
    assert answers(*controller(cloud.topology), stranger) == []


def test_each_routers_answers_are_rate_limited(cloud):
    """A burst gets as many answers as the rate a second; a router's burst takes nothing
    from another's; the next second brings more."""
    [delivery], frame = cloud.send(cloud.vm, LARGEST + 1, flags='DF')
    packet = packet_in(delivery, frame)
    clock = Clock()
    ins, switch = controller(cloud.topology, rate=2, clock=clock)
    assert len(answers(ins, switch, packet, packet, packet)) == 2
    other = packet._replace(match={p.ROUTER_REG: 999})
    for _ in range(2):
        ins.packet_in(other)
    assert ins._queue.qsize() == 2  # queued (and answered with nothing: unknown here)
    ins.serve_queued()
    clock.now += 1.0
    assert len(answers(ins, switch, packet, packet, packet)) == 2
