"""Distributed east-west routing. In l2_lookup, a frame to a router interface's MAC gets the
router's key (reg5) and goes to table l3; there a flow per destination does what a router does
(dec_ttl, source MAC = the router's MAC on the destination subnet, destination MAC = the
destination's) and hands the packet to the destination network. Longest prefix wins: the
priority is 100 + the prefix length, so a port (/32) beats an extra route covering it.
Extra routes whose nexthop is a VM port on one of the router's subnets forward their prefix to
that port the same way."""
import ipaddress

from dragonflow.controller import pipeline as p
from dragonflow.controller.apps.units import unit
from dragonflow.controller.flows import DecTTL, Match, SetField, prefix_match
from dragonflow.controller.topology import ip_address, ip_network, ipv4_addresses

NAME = 'l3'
ROUTE_PRIORITY_BASE = 100


def flows(topology):
    for router in topology.routers.values():
        interfaces = tuple(
            (i.port, i.subnet, i.network, tuple(topology.vm_ports_on(i.network.id)))
            for i in topology.router_interfaces(router) if i.subnet.ip_version == 4)
        yield from _router_flows(router, interfaces)


@unit
def _router_flows(router, interfaces: tuple):
    """``interfaces``: (port, subnet, network, the network's VM ports) of each IPv4 one."""
    yield from _router_macs(router, interfaces)
    for prefix, actions in _routes(router, dict(_hosts(interfaces))).items():
        yield _route(router, prefix, actions)


def _routes(router, hosts) -> dict:
    """Forwarding actions by destination prefix: every host, then the usable extra routes."""
    routes = {ip_network(f'{ip}/32'): actions for ip, actions in hosts.items()}
    for route in sorted(router.routes, key=lambda r: r.nexthop):
        actions = hosts.get(route.nexthop)
        prefix = ip_network(route.destination)
        if actions and prefix.version == 4:
            # A port's own address stays direct; of several routes to one prefix (ECMP is not
            # done) the one with the lowest nexthop wins, in whatever order they come.
            routes.setdefault(prefix, actions)
    return routes


def _router_macs(router, interfaces):
    for interface_port, _, network, _ in interfaces:
        yield p.L2_LOOKUP.flow(
            100, Match(metadata=network.key, eth_dst=interface_port.mac_address),
            [SetField(p.ROUTER_REG, router.key), p.L3.goto()], cookie=router.key)


def _hosts(interfaces):
    """(IP, forwarding actions) for every VM address on the router's subnets."""
    for interface_port, subnet, network, vm_ports in interfaces:
        prefix = ip_network(subnet.cidr)
        for port in vm_ports:
            for ip in ipv4_addresses(port):
                if ip_address(ip) in prefix:
                    yield ip, (DecTTL(),
                               SetField('eth_src', interface_port.mac_address),
                               SetField('eth_dst', port.mac_address),
                               SetField(p.NETWORK_REG, network.key),
                               SetField(p.DESTINATION_PORT_REG, port.key),
                               p.EGRESS_DISPATCH.goto())


def _route(router, prefix: ipaddress.IPv4Network, actions):
    """A /0 (a default route) has no ipv4_dst at all: prefix_match."""
    return p.L3.flow(ROUTE_PRIORITY_BASE + prefix.prefixlen,
                     Match(reg5=router.key, eth_type=p.ETH_TYPE_IPV4,
                           **prefix_match('ipv4_dst', prefix)),
                     actions, cookie=router.key)
