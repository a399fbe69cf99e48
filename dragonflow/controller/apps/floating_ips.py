"""Distributed floating IPs: DNAT in and SNAT out on the chassis of the port a floating IP is
bound to, in the conntrack zone of its association (LocalFloatingIP.nat_zone: the chassis
allocates one per floating IP, port and fixed IP, nat_zones.py), with no network node. A
floating IP without a zone yet has no flows.

In, from the external (physical) network, in provider_ingress: an ARP request for the floating
IP is answered in place with the floating IP port's MAC, so only the chassis of the bound
port answers; an ARP reply from the external subnet's gateway to that MAC goes to the
controller (neighbours.py learns the gateway's MAC from it); IPv4 to the MAC and the address
goes to fip_dnat. There ct(nat) translates the packets of known connections (replies to what
the VM opened, and ICMP errors about them, inner headers included); fip_dnat_commit commits a
new connection with DNAT to the fixed IP; fip_to_port routes it to the port as l3 would, so
egress_dispatch and the port's ingress security groups see the fixed IP.

Out, in l3: a packet from the fixed IP that no route of the router takes (east-west traffic
stays unNATed: the routes have higher priorities, and the snat app keeps the router's own
subnets off the external network) is measured against the external network's MTU
(check_pkt_larger: too big, fip_snat sends it to the controller, which answers
"fragmentation needed" from the router) and goes to fip_snat, ct(nat) again in the same
zone, fip_snat_commit commits a new connection with SNAT to the floating IP, and
fip_to_external sends it to the gateway's MAC on the external network through
provider_egress. Until the gateway's MAC is learnt there is no flow out. Traffic between two
floating IPs goes through the gateway (hairpin), as it would between two Neutron routers.
The fixed IP's diversion (90) is above the router's SNAT (snat.py, 80): a floating IP wins.

A frame from the external network with a floating IP's MAC as source (our own gratuitous ARP
flooded back, or a chassis that has not yet heard of a move) is dropped, never answered.

A VM plugged on the external network itself sends to a floating IP of this chassis as to
any host there; the physical network would not send it back out of the port it came in by,
so l2_lookup takes the floating IP's MAC straight to provider_ingress, as if it had come in.
"""
from dragonflow.controller import pipeline as p
from dragonflow.controller.apps.snat import ETHERNET_HEADER, answered_here, too_big_flow
from dragonflow.controller.apps.units import unit
from dragonflow.controller.flows import (
    CT_ESTABLISHED,
    CT_INVALID,
    CT_NEW,
    CT_RELATED,
    CT_TRACKED,
    CheckPktLarger,
    Conntrack,
    DecTTL,
    Match,
    Nat,
    SetField,
    ct_state,
)

NAME = 'floating_ips'
# provider_ingress: above the provider app's flows for local MACs and broadcasts (the ARP
# answers and the own-frame drop are snat.answered_here's, shared with router addresses).
INGRESS_PRIORITY = 200
# l3: below every route (100 + prefix length) and the router's own subnets (snat.py: 95),
# above the router's SNAT (snat.py: 80).
SNAT_PRIORITY = 90
NAT_PRIORITY = 100
NEW = ct_state(set_bits=CT_TRACKED | CT_NEW, clear_bits=CT_ESTABLISHED | CT_RELATED | CT_INVALID)


def flows(topology):
    local = topology.local_floating_ips()
    if not local:
        return
    yield from _table_flows()
    routers = {}
    for fip in local:
        routers[fip.router.id] = fip.router
        yield from _floating_ip(fip.floating_ip, fip.port, fip.own_port, fip.interface.port,
                                fip.router, fip.external_network, fip.external_subnet,
                                topology.network_of(fip.port), fip.gateway_mac, fip.nat_zone)
    for router in routers.values():
        yield from _router(router)


@unit
def _table_flows():
    """Connections already known go on untouched by the commit tables."""
    yield p.FIP_DNAT_COMMIT.flow(0, Match(), [p.FIP_TO_PORT.goto()])
    yield p.FIP_SNAT_COMMIT.flow(0, Match(), [p.FIP_TO_EXTERNAL.goto()])


@unit
def _floating_ip(fip, port, own_port, interface_port, router, external, external_subnet,
                 network, gateway_mac, zone: int):
    key = own_port.key
    yield from _inbound(fip, port, own_port, interface_port, router, external,
                        external_subnet, network, key, zone)
    yield from _outbound(fip, own_port, router, external, gateway_mac, key, zone)


def _inbound(fip, port, own_port, interface_port, router, external, external_subnet,
             network, key, zone):
    address, mac = fip.floating_ip_address, own_port.mac_address
    on_external = dict(metadata=external.key)
    yield from answered_here(own_port, address, external, external_subnet.gateway_ip)
    yield p.PROVIDER_INGRESS.flow(
        INGRESS_PRIORITY,
        Match(**on_external, eth_type=p.ETH_TYPE_IPV4, eth_dst=mac, ipv4_dst=address),
        [p.FIP_DNAT.goto()], cookie=key)
    yield p.FIP_DNAT.flow(
        NAT_PRIORITY, Match(**on_external, eth_type=p.ETH_TYPE_IPV4, ipv4_dst=address),
        [SetField(p.ROUTER_REG, router.key),
         Conntrack(zone, nat=Nat(), table=p.FIP_DNAT_COMMIT.number)], cookie=key)
    yield p.FIP_DNAT_COMMIT.flow(
        NAT_PRIORITY,
        Match(reg5=router.key, ct_state=NEW, eth_type=p.ETH_TYPE_IPV4, ipv4_dst=address),
        [Conntrack(zone, commit=True, nat=Nat('dst', fip.fixed_ip_address),
                   table=p.FIP_TO_PORT.number)], cookie=key)
    yield p.FIP_TO_PORT.flow(
        NAT_PRIORITY,
        Match(reg5=router.key, eth_type=p.ETH_TYPE_IPV4, ipv4_dst=fip.fixed_ip_address),
        [DecTTL(), SetField('eth_src', interface_port.mac_address),
         SetField('eth_dst', port.mac_address), SetField(p.NETWORK_REG, network.key),
         SetField(p.DESTINATION_PORT_REG, port.key), p.EGRESS_DISPATCH.goto()], cookie=key)


def _outbound(fip, own_port, router, external, gateway_mac, key, zone):
    fixed = fip.fixed_ip_address
    yield p.L3.flow(SNAT_PRIORITY,
                    Match(reg5=router.key, eth_type=p.ETH_TYPE_IPV4, ipv4_src=fixed),
                    [CheckPktLarger(external.mtu + ETHERNET_HEADER, p.TOO_BIG_REG),
                     p.FIP_SNAT.goto()], cookie=key)
    yield p.FIP_SNAT.flow(
        NAT_PRIORITY, Match(reg5=router.key, eth_type=p.ETH_TYPE_IPV4, ipv4_src=fixed),
        [Conntrack(zone, nat=Nat(), table=p.FIP_SNAT_COMMIT.number)], cookie=key)
    yield p.FIP_SNAT_COMMIT.flow(
        NAT_PRIORITY,
        Match(reg5=router.key, ct_state=NEW, eth_type=p.ETH_TYPE_IPV4, ipv4_src=fixed),
        [Conntrack(zone, commit=True, nat=Nat('src', fip.floating_ip_address),
                   table=p.FIP_TO_EXTERNAL.number)], cookie=key)
    if gateway_mac is None:  # not learnt yet: nothing goes out (neighbours.py asks for it)
        return
    yield p.FIP_TO_EXTERNAL.flow(
        NAT_PRIORITY,
        Match(reg5=router.key, eth_type=p.ETH_TYPE_IPV4, ipv4_src=fip.floating_ip_address),
        [DecTTL(), SetField('eth_src', own_port.mac_address), SetField('eth_dst', gateway_mac),
         SetField(p.NETWORK_REG, external.key), p.PROVIDER_EGRESS.goto()], cookie=key)


@unit
def _router(router):
    """A frame too big for the external network goes to the controller (frag_needed.py)."""
    yield too_big_flow(p.FIP_SNAT, router)
