"""Fragmentation needed: the router's answer to a packet too big for its external network.

On its way out (to SNAT, to a floating IP's SNAT, or routed out with enable_snat=false) a
packet from a router's subnet is measured against the external network's MTU
(check_pkt_larger in l3), and the first table of each way out (pipeline.TOO_BIG_TABLES)
sends a too-big one to the controller, with the router's key in reg5. Open vSwitch does not
fragment, and the packet is never sent on: the router answers as a router on the path
would (RFC 792, RFC 1191):

- with DF set: ICMP destination unreachable, fragmentation needed (type 3, code 4), the
  next-hop MTU being the external network's, from the router's interface address on the
  sender's subnet to the sender, quoting the packet's IP header and its first 8 bytes of
  payload. It goes back into br-int as a packet-out that puts the router's key in reg5 and
  resubmits to l3, so the router routes it to the sender wherever that is, through the
  sender's security groups (it is related to the connection the packet belongs to).
- without DF: dropped (a router would fragment it; Open vSwitch does not). The sender sees
  a loss, as on a link that cannot carry the packet; path MTU discovery, which every
  current stack does for TCP, sets DF.

As RFC 1122 (3.2.2) asks, no error is sent about an ICMP error, a fragment other than the
first, or a packet from a broadcast or multicast address. The answers of one router are
rate limited (packet_ins.py), so a flood of big packets costs little.
"""
import ipaddress
import struct
from typing import Optional

from dragonflow.controller import flows as of
from dragonflow.controller import pipeline as p
from dragonflow.controller.topology import Topology, ip_address, ip_network

TOO_BIG_TABLES = frozenset(t.number for t in p.TOO_BIG_TABLES)
ETHERNET_HEADER = 14
ETH_TYPE_VLAN = 0x8100
IP_PROTO_ICMP = 1
DONT_FRAGMENT, FRAGMENT_OFFSET = 0x4000, 0x1fff
ICMP_UNREACHABLE, CODE_FRAG_NEEDED = 3, 4
ICMP_ERRORS = frozenset({3, 4, 5, 11, 12})
QUOTED_PAYLOAD = 8  # RFC 792: the datagram's header and its first 64 bits of data
TTL = 64
TOS_INTERNETWORK_CONTROL = 0xc0  # precedence 6, as a router's ICMP errors carry it
_IPV4 = struct.Struct('!BBHHHBBH4s4s')
_ICMP_HEADER = struct.Struct('!BBHHH')  # type, code, checksum, unused, next-hop MTU


def wants_answer(data: bytes) -> bool:
    """Whether a too-big frame gets an answer at all: an IPv4 packet with DF set, the first
    (or only) fragment, not an ICMP error, from a unicast address. Cheap: it decides, in
    os-ken's receiving thread, what is queued."""
    packet = _ip_packet(data)
    if packet is None or len(packet) < _IPV4.size:
        return False
    flags_offset, protocol, source = struct.unpack_from('!6xH1xB2x4s', packet)
    if not flags_offset & DONT_FRAGMENT or flags_offset & FRAGMENT_OFFSET:
        return False
    header_len = (packet[0] & 0x0f) * 4
    if protocol == IP_PROTO_ICMP and len(packet) > header_len and \
            packet[header_len] in ICMP_ERRORS:
        return False
    sender = ipaddress.IPv4Address(source)
    return not (sender.is_multicast or sender.is_unspecified or
                sender == ipaddress.IPv4Address('255.255.255.255'))


def answer(topology: Topology, router_key: int, data: bytes) -> Optional[tuple[list, bytes]]:
    """The packet-out (actions, frame) that answers the too-big frame ``data`` seen on the
    way out of router ``router_key``, or None: no answer (see the module docstring), or a
    router, external network or interface on the sender's subnet this chassis does not
    know."""
    if not wants_answer(data):
        return None
    router = next((r for r in topology.routers.values() if r.key == router_key), None)
    gateway = router.external_gateway_info if router else None
    external = topology.networks.get(gateway.network_id) if gateway else None
    if external is None:
        return None
    packet = _ip_packet(data)
    sender = str(ipaddress.IPv4Address(packet[12:16]))
    interface = next((i for i in topology.router_interfaces(router)
                      if i.subnet.ip_version == 4
                      and ip_address(sender) in ip_network(i.subnet.cidr)), None)
    if interface is None:
        return None
    frame = frag_needed(packet, external.mtu, interface.ip, sender,
                        interface.port.mac_address, _mac(data[6:12]))
    return [of.SetField(p.ROUTER_REG, router.key), of.Resubmit(p.L3.number)], frame


def frag_needed(packet: bytes, mtu: int, source: str, destination: str, eth_src: str,
                eth_dst: str) -> bytes:
    """The Ethernet frame of an ICMP fragmentation needed with next-hop MTU ``mtu`` about
    the IPv4 ``packet``: its header (options included) and first 8 bytes of payload."""
    header_len = (packet[0] & 0x0f) * 4
    quoted = packet[:header_len + QUOTED_PAYLOAD]
    icmp = _ICMP_HEADER.pack(ICMP_UNREACHABLE, CODE_FRAG_NEEDED, 0, 0, mtu) + quoted
    icmp = icmp[:2] + struct.pack('!H', _checksum(icmp)) + icmp[4:]
    header = _IPV4.pack(0x45, TOS_INTERNETWORK_CONTROL, _IPV4.size + len(icmp), 0, 0, TTL,
                        IP_PROTO_ICMP, 0, ipaddress.IPv4Address(source).packed,
                        ipaddress.IPv4Address(destination).packed)
    header = header[:10] + struct.pack('!H', _checksum(header)) + header[12:]
    ethernet = _mac_bytes(eth_dst) + _mac_bytes(eth_src) + struct.pack('!H', p.ETH_TYPE_IPV4)
    return ethernet + header + icmp


def _ip_packet(data: bytes) -> Optional[bytes]:
    """The IPv4 packet in an Ethernet frame (under one 802.1Q header at most), or None."""
    offset = ETHERNET_HEADER - 2
    if data[offset:offset + 2] == struct.pack('!H', ETH_TYPE_VLAN):
        offset += 4
    if data[offset:offset + 2] != struct.pack('!H', p.ETH_TYPE_IPV4):
        return None
    packet = data[offset + 2:]
    if not packet or packet[0] >> 4 != 4 or (packet[0] & 0x0f) < 5:
        return None
    return packet


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b'\0'
    total = sum(struct.unpack(f'!{len(data) // 2}H', data))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff


def _mac(raw: bytes) -> str:
    return ':'.join(f'{b:02x}' for b in raw)


def _mac_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(':', ''))
