"""Distributed DHCP: every chassis answers its own VMs, from packet-ins; no DHCP agent, no
dnsmasq, no DHCP port.

Flows: UDP to port 67 goes from the services table to table dhcp, where a request from a
local port on a DHCP-enabled subnet goes to the controller; any other (a subnet without DHCP,
where a tenant may run its own server) continues to L2 like any frame. The server of a subnet
is its gateway address; where no port holds it, the ARP responder answers for it
with the network's DHCP MAC, so renewals unicast to the server arrive too.

``answer`` turns a request into the reply, a pure function of the topology: the port's fixed
IP, the subnet's mask, gateway, DNS servers and host routes, the network's MTU, the lease.
A request for another address gets a NAK, so a port whose fixed IP changed moves to its new
address at the next renewal.
"""
import dataclasses
import ipaddress
from typing import Optional

from os_ken.lib.packet import dhcp as d
from os_ken.lib.packet import ethernet, ipv4, packet, udp

from dragonflow.controller import pipeline as p
from dragonflow.controller.apps.arp_responder import reply as arp_reply
from dragonflow.controller.flows import Match, ToController

NAME = 'dhcp'
SERVER_PORT, CLIENT_PORT = 67, 68
DHCP_NAK, DHCP_RELEASE, DHCP_DECLINE, DHCP_INFORM = 6, 7, 4, 8
BROADCAST_FLAG = 0x8000
OPT_BROADCAST_ADDRESS = 28


@dataclasses.dataclass(frozen=True)
class Settings:
    lease_time: int = 86400
    metadata_ip: str = ''


def flows(topology):
    yield p.SERVICES.flow(100, Match(eth_type=p.ETH_TYPE_IPV4, ip_proto=17, udp_dst=SERVER_PORT),
                          [p.DHCP.goto()])
    yield p.DHCP.flow(0, Match(), [p.L2_LOOKUP.goto()])
    served = set()
    for port, _ in topology.local_ports():
        subnet = dhcp_subnet(topology, port)
        if subnet is None:
            continue
        yield p.DHCP.flow(100, Match(reg6=port.key), [ToController()], cookie=port.key)
        served.add(subnet.id)
    # The ARP responder answers for every port's address already: a port that holds the
    # server's address (a router interface, or a VM given the gateway address of a subnet
    # with no router, as Neutron allows) is answered for, with its own MAC.
    held = {(port.network_id, f.ip_address) for port in topology.ports.values()
            for f in port.fixed_ips}
    for subnet_id in sorted(served):
        subnet = topology.subnets[subnet_id]
        ip, mac = server(topology, subnet)
        if (subnet.network_id, ip) not in held:
            network = topology.networks[subnet.network_id]
            yield arp_reply(network.key, ip, mac, network.key)


def dhcp_subnet(topology, port):
    """The DHCP-enabled IPv4 subnet of the port's first address on one, or None."""
    for fixed in port.fixed_ips:
        subnet = topology.subnets.get(fixed.subnet_id)
        if subnet is not None and subnet.enable_dhcp and subnet.ip_version == 4:
            return subnet
    return None


def server(topology, subnet) -> tuple[str, str]:
    """(IP, MAC) the subnet's DHCP server answers from: the gateway address, with the router
    interface's MAC when a router holds it, else the network's DHCP MAC."""
    ip = subnet.gateway_ip or str(next(ipaddress.ip_network(subnet.cidr).hosts()))
    for port in topology.ports_on(subnet.network_id):
        if port.is_router_interface and any(f.ip_address == ip for f in port.fixed_ips):
            return ip, port.mac_address
    key = topology.networks[subnet.network_id].key
    return ip, '02:df:' + ':'.join(f'{b:02x}' for b in key.to_bytes(4, 'big'))


def answer(topology, port, frame: bytes, settings: Settings) -> Optional[bytes]:
    """The reply to a DHCP request ``frame`` from ``port``, or None if none is due."""
    subnet = dhcp_subnet(topology, port)
    request = packet.Packet(frame).get_protocol(d.dhcp)
    if subnet is None or request is None or request.op != d.DHCP_BOOT_REQUEST:
        return None
    options = {o.tag: o.value for o in (request.options.option_list if request.options else [])}
    kind = options.get(d.DHCP_MESSAGE_TYPE_OPT, b'\0')[0]
    address = next(f.ip_address for f in port.fixed_ips if f.subnet_id == subnet.id)
    if kind == d.DHCP_DISCOVER:
        return _reply(topology, port, subnet, request, d.DHCP_OFFER, address, settings)
    if kind == d.DHCP_REQUEST:
        wanted = options.get(d.DHCP_REQUESTED_IP_ADDR_OPT)
        wanted = str(ipaddress.IPv4Address(wanted)) if wanted else request.ciaddr
        if wanted != address:
            return _reply(topology, port, subnet, request, DHCP_NAK, None, settings)
        return _reply(topology, port, subnet, request, d.DHCP_ACK, address, settings)
    if kind == DHCP_INFORM:
        return _reply(topology, port, subnet, request, d.DHCP_ACK, None, settings)
    return None  # RELEASE, DECLINE: nothing to say; the address stays the port's


def _reply(topology, port, subnet, request, kind, address, settings) -> bytes:
    server_ip, server_mac = server(topology, subnet)
    options = [d.option(d.DHCP_MESSAGE_TYPE_OPT, bytes([kind])),
               d.option(d.DHCP_SERVER_IDENTIFIER_OPT, _ip(server_ip))]
    if kind != DHCP_NAK:
        options += _configuration(topology, subnet, server_ip, settings,
                                  lease=address is not None)
    options.append(d.option(d.DHCP_END_OPT, b''))
    broadcast = kind == DHCP_NAK or bool(request.flags & BROADCAST_FLAG) or \
        (request.ciaddr == '0.0.0.0' and address is None)
    destination = '255.255.255.255' if broadcast else (address or request.ciaddr)
    reply = packet.Packet()
    reply.add_protocol(ethernet.ethernet(
        dst='ff:ff:ff:ff:ff:ff' if broadcast else port.mac_address, src=server_mac,
        ethertype=p.ETH_TYPE_IPV4))
    reply.add_protocol(ipv4.ipv4(src=server_ip, dst=destination, proto=17, ttl=64))
    reply.add_protocol(udp.udp(src_port=SERVER_PORT, dst_port=CLIENT_PORT))
    reply.add_protocol(d.dhcp(
        op=d.DHCP_BOOT_REPLY, chaddr=request.chaddr, xid=request.xid, flags=request.flags,
        ciaddr=request.ciaddr, yiaddr=address or '0.0.0.0', siaddr=server_ip,
        options=d.options(options)))
    reply.serialize()
    return bytes(reply.data)


def _configuration(topology, subnet, server_ip, settings, lease: bool) -> list:
    prefix = ipaddress.ip_network(subnet.cidr)
    network = topology.networks[subnet.network_id]
    options = [d.option(d.DHCP_SUBNET_MASK_OPT, _ip(str(prefix.netmask))),
               d.option(OPT_BROADCAST_ADDRESS, _ip(str(prefix.broadcast_address))),
               d.option(d.DHCP_INTERFACE_MTU_OPT, network.mtu.to_bytes(2, 'big'))]
    if lease:
        options += [d.option(d.DHCP_IP_ADDR_LEASE_TIME_OPT, _u32(settings.lease_time)),
                    d.option(d.DHCP_RENEWAL_TIME_OPT, _u32(settings.lease_time // 2)),
                    d.option(d.DHCP_REBINDING_TIME_OPT, _u32(settings.lease_time * 7 // 8))]
    if subnet.gateway_ip:
        options.append(d.option(d.DHCP_GATEWAY_ADDR_OPT, _ip(subnet.gateway_ip)))
    if subnet.dns_nameservers:
        options.append(d.option(d.DHCP_DNS_SERVER_ADDR_OPT,
                                b''.join(_ip(s) for s in subnet.dns_nameservers)))
    routes = [(r.destination, r.nexthop) for r in subnet.host_routes
              if ipaddress.ip_network(r.destination).version == 4]
    if settings.metadata_ip:
        routes.append((f'{settings.metadata_ip}/32', server_ip))
    if routes:
        # Clients that take option 121 ignore the router option: repeat the default route.
        if subnet.gateway_ip:
            routes.append(('0.0.0.0/0', subnet.gateway_ip))
        options.append(d.option(d.DHCP_CLASSLESS_ROUTE_OPT,
                                b''.join(_classless_route(*r) for r in routes)))
    return options


def _classless_route(destination: str, nexthop: str) -> bytes:
    """RFC 3442: prefix length, the significant octets of the destination, the router."""
    prefix = ipaddress.ip_network(destination)
    significant = (prefix.prefixlen + 7) // 8
    return bytes([prefix.prefixlen]) + prefix.network_address.packed[:significant] + _ip(nexthop)


def _ip(address: str) -> bytes:
    return ipaddress.IPv4Address(address).packed


def _u32(value: int) -> bytes:
    return value.to_bytes(4, 'big')
