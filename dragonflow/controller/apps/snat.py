"""SNAT: a router's traffic to outside from addresses without a floating IP leaves from its
gateway address, NATed with conntrack on the chassis holding the router's gateway (or, in
distributed mode, from an address of the router's own to each chassis, there); with
enable_snat=false it is routed out and in without NAT, through that chassis all the same.

Out, in l3: what no route of the router takes (routes are 100 + prefix length; the router's
own subnets are dropped at 95, so an address nobody holds there never leaves; a floating
IP's fixed IP goes to its own SNAT at 90) from one of the router's IPv4 subnets is diverted
at 80: check_pkt_larger against the external network's MTU (a frame too big goes to the
controller in the next table, frag_needed.py answers "fragmentation needed" from the
router), the destination MAC set to the router's gateway MAC, then:

- on the chassis where the router's way out is (Topology.local_gateway: it holds the
  gateway, as Topology.active_gateway says; or its chassis_snat port is here) to snat, where
  ct(nat) in the router's zone translates the packets of known connections; snat_commit
  commits a new one with SNAT to the address; snat_to_external decrements the TTL, sets the
  address' MAC and the upstream gateway's (learnt by neighbours.py: none yet, no flow out)
  and sends it to the external network's provider_egress. enable_snat=false skips the NAT:
  l3 goes to snat_to_external, which takes the router's subnets as they are.
- anywhere else, to snat_redirect. From a tunnel network: bundle_load (active_backup) over
  this chassis' BFD ports to the router's gateway_chassis, in their order, writes the first
  one whose BFD session says forwarding into reg3 (so a dead or unready gateway is skipped
  in the datapath, with no controller and no store), and snat_tunnel sends the packet to
  that chassis through the tunnel of its network (the flow-based port, tunnel_id = the
  network's tunnel key, tun_ipv4_dst = the gateway's). A gateway chassis that could hold
  the gateway itself lists only the chassis ahead of it: when those are dead the gateway is
  its own to take, and nothing goes to one behind it meanwhile. No live member: OFPP_NONE,
  no flow, dropped. From a physical (flat, VLAN) network, which crosses on the physical
  network and never in a tunnel (as provider.py has it): out on that network, through
  provider_egress, as the VM sent it but to the gateway MAC (its source stays the VM's MAC:
  it is not routed here); the physical network's switches take it to where they learnt the
  gateway MAC on that VLAN, the chassis holding the gateway: it announces the gateway
  address there too when it takes it (neighbours.py), so a failover moves it. This needs
  no BFD port: the physical network finds the gateway.

On the chassis holding the gateway, remote_ingress takes a packet from a tunnel of one of
the router's networks to the gateway MAC (150, above every port's) to snat (or
snat_to_external), with the router's key in reg5: the tunnels app keeps the ingress flows of
those networks there, local ports or not. provider_ingress does the same (150, above the
provider app's flows) for a frame to the gateway MAC on one of the router's physical
networks (its classify flow is there wherever the physnet is mapped). The reply goes back
through l3 as any (routed to the VM over its network, with this chassis' router MAC as
source). Where that network and the external one share a physnet, both ways come in and
leave by one patch port: provider_egress sends what came in by it out of IN_PORT. Every
chassis drops what comes from the gateway MAC on those physical networks (the holder's
gratuitous ARPs there, flooded: for an address on none of their subnets, the VMs there have
nothing to learn from them). The gateway chassis must map the physnets of the router's
physical networks: a VM on one it does not map gets no way out.

In, from the external network, in provider_ingress (only where the router's way out is, so
only that chassis answers): an ARP request for the address is answered in place, an ICMP
echo request to it gets its reply in place, an ARP reply from the upstream gateway to the
address' MAC goes to the controller (neighbours.py), our own frames coming back are
dropped; IPv4 to the address goes to unsnat: the router's key in reg5, ct(nat) in its zone,
and unsnat_route runs what it translated back (a reply, or an ICMP error about what a VM
sent) through l3, which routes it to the VM wherever it is. enable_snat=false: IPv4 to the
gateway MAC for one of the router's subnets goes to l3 as it is.
"""
from dragonflow.controller import pipeline as p
from dragonflow.controller.apps import tunnels
from dragonflow.controller.apps.arp_responder import reply_actions
from dragonflow.controller.apps.provider import vlan_actions
from dragonflow.controller.apps.units import unit
from dragonflow.controller.flows import (
    CT_ESTABLISHED,
    CT_INVALID,
    CT_NEW,
    CT_RELATED,
    CT_TRACKED,
    IN_PORT,
    BundleLoad,
    CheckPktLarger,
    Conntrack,
    DecTTL,
    Match,
    Move,
    Nat,
    Output,
    SetField,
    ToController,
    ct_state,
    prefix_match,
)
from dragonflow.controller.topology import ip_network

NAME = 'snat'
ETHERNET_HEADER = 14  # check_pkt_larger measures the frame; an MTU counts from IP on
# l3: below every route (100 + prefix length) and a floating IP's SNAT (90); the router's
# own subnets above both.
OWN_SUBNET_PRIORITY = 95
DIVERSION_PRIORITY = 80
# remote_ingress: above the tunnels app's flows for local MACs (100); provider_ingress the
# same, above the provider app's (100, broadcast 50) and below our own frames' drop (210).
REMOTE_PRIORITY = 150
# snat_redirect: a physical network's frames out on it, above the bundle (100).
PHYSICAL_PRIORITY = 110
# provider_ingress: as the floating IPs', above the provider app's for local MACs; the echo
# request above the flow that takes everything else to the address to unsnat.
OWN_FRAME_PRIORITY = 210
ECHO_PRIORITY = 205
INGRESS_PRIORITY = 200
# l2_lookup: above the l2 app's flows for known MACs (the address' is none of them).
LOCAL_ADDRESS_PRIORITY = 110
NAT_PRIORITY = 100
RELATED_PRIORITY = 90
TOO_BIG_PRIORITY = 200
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
NEW = ct_state(set_bits=CT_TRACKED | CT_NEW, clear_bits=CT_ESTABLISHED | CT_RELATED | CT_INVALID)
ESTABLISHED = ct_state(set_bits=CT_TRACKED | CT_ESTABLISHED)
RELATED = ct_state(set_bits=CT_TRACKED | CT_RELATED)


def flows(topology):
    snatting = False
    tunnelled: dict = {}  # network id -> (network, the gateway chassis it is sent to)
    standby = {g.router.id: g for g in topology.standby_gateways()}
    probed: dict = {}  # (external network key, gateway IP) -> the network
    for router in topology.routers.values():
        if router.external_gateway_info is None:
            continue
        yield from _own_subnets(router, tuple(i.subnet for i in topology.router_interfaces(router)
                                              if i.subnet.ip_version == 4))
        gateway = topology.router_gateway(router)
        if gateway is None:
            continue
        physical = gateway.physical_networks
        yield from _own_frames(router, gateway.mac, physical)
        local = topology.local_gateway(router)
        if local is not None:
            snatting |= local.enable_snat
            yield from _local(topology, local)
            continue
        if router.id in standby:
            snatting |= standby[router.id].enable_snat
            yield from _standby(standby[router.id])
            # Asked beforehand, refreshed while standing by: not only while unknown.
            probed[standby[router.id].external_network.key,
                   standby[router.id].external_subnet.gateway_ip] = \
                standby[router.id].external_network
        # A physical network finds the gateway MAC itself; a tunnel network needs a
        # gateway chassis to tunnel to.
        members = _redirect_members(topology, router)
        diverted = tuple(i.subnet for i in gateway.interfaces
                         if members or i.network.is_physical)
        if diverted:
            yield from _diversion(router, diverted, gateway.mac,
                                  gateway.external_network.mtu, p.SNAT_REDIRECT.number)
            yield from _too_big(router, (p.SNAT_REDIRECT.number,))
        yield from _over_physical(router, physical)
        if members:
            yield from _redirect(router, tuple(ofport for _, ofport in members))
            for interface in gateway.interfaces:
                if interface.network.is_physical:
                    continue
                chassis = tunnelled.setdefault(interface.network.id, (interface.network, {}))[1]
                chassis.update(members)
    if snatting:
        yield from _table_flows()
    if topology.router_mac is not None:
        for (_, gateway_ip), network in sorted(probed.items()):
            yield from _probe_replies(network, gateway_ip, topology.router_mac)
    for network, chassis in tunnelled.values():
        yield from _tunnels_of(topology, network, chassis)


def _subnets(gateway) -> tuple:
    return tuple(i.subnet for i in gateway.interfaces)


@unit
def _own_frames(router, gateway_mac: str, networks: tuple):
    """The gratuitous ARPs the chassis holding the gateway sends on the physical networks
    behind the router (neighbours.py), flooded back to us: dropped, never given to the VMs
    there (the gateway address is on none of their subnets) nor taken for the gateway."""
    for network in networks:
        yield p.PROVIDER_INGRESS.flow(OWN_FRAME_PRIORITY,
                                      Match(metadata=network.key, eth_src=gateway_mac), [],
                                      cookie=router.key)


@unit
def _over_physical(router, networks: tuple):
    """From a physical network: out on it, as the VM sent it to the gateway MAC (its own
    source MAC: provider_egress rewrites only routed frames'), never into a tunnel. The
    physical network takes it to the chassis that last sent from that MAC, the active
    gateway (its gratuitous ARPs), whose provider_ingress takes it to SNAT."""
    for network in networks:
        yield p.SNAT_REDIRECT.flow(
            PHYSICAL_PRIORITY,
            Match(reg5=router.key, metadata=network.key, eth_type=p.ETH_TYPE_IPV4),
            [p.PROVIDER_EGRESS.goto()], cookie=router.key)


@unit
def _table_flows():
    """A connection already known goes on untouched by the commit table."""
    yield p.SNAT_COMMIT.flow(0, Match(), [p.SNAT_TO_EXTERNAL.goto()])


@unit
def _own_subnets(router, subnets: tuple):
    """What no route takes to one of the router's own subnets (its interfaces' addresses, an
    address no port holds) is dropped as before, never sent out through the gateway or a
    floating IP."""
    for subnet in subnets:
        yield p.L3.flow(OWN_SUBNET_PRIORITY,
                        Match(reg5=router.key, eth_type=p.ETH_TYPE_IPV4,
                              **prefix_match('ipv4_dst', ip_network(subnet.cidr))),
                        [], cookie=router.key)


@unit
def _diversion(router, subnets: tuple, gateway_mac: str, mtu: int, table: int):
    """From the router's subnets to outside: measured, to the gateway MAC, to ``table``;
    a frame too big for the external network goes to the controller there."""
    for subnet in subnets:
        yield p.L3.flow(
            DIVERSION_PRIORITY,
            Match(reg5=router.key, eth_type=p.ETH_TYPE_IPV4,
                  **prefix_match('ipv4_src', ip_network(subnet.cidr))),
            [CheckPktLarger(mtu + ETHERNET_HEADER, p.TOO_BIG_REG),
             SetField('eth_dst', gateway_mac), p.BY_NUMBER[table].goto()],
            cookie=router.key)


@unit
def _too_big(router, tables: tuple):
    for table in tables:
        yield too_big_flow(p.BY_NUMBER[table], router)


def too_big_flow(table, router):
    """In a table a way out starts in: a frame check_pkt_larger found too big for the
    external network goes to the controller (frag_needed.py), which finds the router by the
    cookie."""
    return table.flow(TOO_BIG_PRIORITY,
                      Match(reg5=router.key, reg0=p.TOO_BIG, eth_type=p.ETH_TYPE_IPV4),
                      [ToController()], cookie=router.key)


def _redirect_members(topology, router) -> tuple:
    """(gateway chassis, this chassis' BFD port to it) for the router's gateway chassis a
    packet may go to from here, in their order: all but this chassis, or, if this chassis
    could hold the gateway, those ahead of it."""
    members = []
    for chassis_id in router.gateway_chassis:
        if chassis_id == topology.chassis_id:
            if topology.can_hold_gateway(router):
                break
            continue
        ofport = topology.liveness_ofports.get(chassis_id)
        if ofport is not None and chassis_id in topology.chassis:  # its tunnel IP known
            members.append((chassis_id, ofport))
    return tuple(members)


@unit
def _redirect(router, members: tuple):
    yield p.SNAT_REDIRECT.flow(
        NAT_PRIORITY, Match(reg5=router.key, eth_type=p.ETH_TYPE_IPV4),
        [BundleLoad(members, p.GATEWAY_PORT_REG), p.SNAT_TUNNEL.goto()], cookie=router.key)


def _tunnels_of(topology, network, chassis: dict):
    """To each gateway chassis the network's packets may be redirected to, through the
    tunnel the network crosses in to it."""
    tunnel = tunnels.tunnel_ofport(topology, network)
    if tunnel is None:
        return ()
    gateways = tuple((ofport, topology.chassis[chassis_id].tunnel_ip)
                     for chassis_id, ofport in sorted(chassis.items())
                     if tunnels.crosses_to(topology, network, topology.chassis[chassis_id]))
    return _tunnels(network.key, network.tunnel_key, gateways, tunnel)


@unit
def _tunnels(network_key: int, tunnel_key: int, gateways: tuple, tunnel: int):
    for ofport, tunnel_ip in gateways:
        yield p.SNAT_TUNNEL.flow(
            NAT_PRIORITY, Match(reg3=ofport, metadata=network_key),
            [SetField('tunnel_id', tunnel_key), SetField('tun_ipv4_dst', tunnel_ip),
             Output(tunnel)], cookie=network_key)


def _local(topology, local):
    gateway = local.router_gateway
    first = p.SNAT if local.enable_snat else p.SNAT_TO_EXTERNAL
    router, own = local.router, local.own_port
    yield from _diversion(router, _subnets(gateway), gateway.mac,
                          gateway.external_network.mtu, first.number)
    # Where it starts, and snat_to_external after snat as well: one check for every way.
    yield from _too_big(router, (p.SNAT.number, p.SNAT_TO_EXTERNAL.number)
                        if local.enable_snat else (p.SNAT_TO_EXTERNAL.number,))
    if not local.distributed:
        yield from _from_tunnels(router, gateway.mac, first.number,
                                 tuple(i.network for i in gateway.interfaces
                                       if not i.network.is_physical))
        yield from _from_physical(router, gateway.mac, first.number,
                                  gateway.physical_networks)
    yield from _answers(own, local.address, local.external_network, local.external_subnet)
    if local.enable_snat:
        yield from _snat(router, own, local.address, local.external_network, _subnets(gateway),
                         local.nat_zone)
    else:
        yield from _routed(router, own, local.external_network, _subnets(gateway))
    if local.gateway_mac is not None:  # not learnt yet: nothing goes out (neighbours.py asks)
        yield from _to_external(router, own, local.external_network, local.gateway_mac,
                                (local.address,) if local.enable_snat else
                                tuple(s.cidr for s in _subnets(gateway)))


def _standby(standby):
    """A router whose gateway a live peer ahead of this chassis holds, while this one could
    hold it: its SNAT data path, all of it but what answers for the address. It sees traffic
    only once a sender's bundle has moved to this chassis (its BFD saw the holder die) or
    the external network learnt the address' MAC here (from what this SNATed): the takeover
    waits for no BFD detection nor controller pass of this chassis'. No ARP or ping answer,
    no gratuitous ARP, no ARP from the address (they would take the holder's traffic); the
    upstream gateway's MAC is learnt beforehand by a probe from the router MAC
    (neighbours.py, _probe_replies). A physical network behind the router is left out: a
    frame flooded to the gateway MAC (unknown to its switches) reaches every gateway
    chassis, and only the holder must take it."""
    gateway = standby.router_gateway
    router, own = standby.router, standby.own_port
    first = p.SNAT if standby.enable_snat else p.SNAT_TO_EXTERNAL
    yield from _from_tunnels(router, gateway.mac, first.number,
                             tuple(i.network for i in gateway.interfaces
                                   if not i.network.is_physical))
    if standby.enable_snat:
        yield from _snat(router, own, standby.address, standby.external_network,
                         _subnets(gateway), standby.nat_zone)
    else:
        yield from _routed(router, own, standby.external_network, _subnets(gateway))
    if standby.gateway_mac is not None:
        yield from _to_external(router, own, standby.external_network, standby.gateway_mac,
                                (standby.address,) if standby.enable_snat else
                                tuple(s.cidr for s in _subnets(gateway)))


@unit
def _probe_replies(network, gateway_ip: str, router_mac: str):
    """The upstream gateway's answer to this chassis' ARP probe (RFC 5227: from the router
    MAC, sender address 0.0.0.0; neighbours.py) goes to the controller, which learns its MAC
    for the routers this chassis stands by for."""
    yield p.PROVIDER_INGRESS.flow(
        INGRESS_PRIORITY,
        Match(metadata=network.key, eth_type=p.ETH_TYPE_ARP, arp_op=p.ARP_REPLY,
              eth_dst=router_mac, arp_spa=gateway_ip),
        [ToController()], cookie=network.key)


@unit
def _from_tunnels(router, gateway_mac: str, table: int, networks: tuple):
    """What the router's other chassis redirect here (snat_redirect) comes to its MAC."""
    for network in networks:
        yield p.REMOTE_INGRESS.flow(
            REMOTE_PRIORITY, Match(metadata=network.key, eth_dst=gateway_mac),
            [SetField(p.ROUTER_REG, router.key), p.BY_NUMBER[table].goto()],
            cookie=router.key)


@unit
def _from_physical(router, gateway_mac: str, table: int, networks: tuple):
    """What the router's other chassis send out on a physical network behind it
    (snat_redirect) comes here through the physical network, to its MAC."""
    for network in networks:
        yield p.PROVIDER_INGRESS.flow(
            REMOTE_PRIORITY, Match(metadata=network.key, eth_dst=gateway_mac),
            [SetField(p.ROUTER_REG, router.key), p.BY_NUMBER[table].goto()],
            cookie=router.key)


def answered_here(own_port, address: str, external, gateway_ip: str):
    """An address of the cloud's on an external network, held on this chassis: frames to its
    MAC from a VM on that network go to provider_ingress as if from outside; our own frames
    coming back are dropped; an ARP request for it is answered in place (back out with the
    tag classify popped); the upstream gateway's ARP reply to it goes to the controller
    (neighbours.py). A router's gateway or distributed address's, and a floating IP's
    (floating_ips.py)."""
    on_external = dict(metadata=external.key)
    mac, key = own_port.mac_address, own_port.key
    yield p.L2_LOOKUP.flow(LOCAL_ADDRESS_PRIORITY, Match(**on_external, eth_dst=mac),
                           [p.PROVIDER_INGRESS.goto()], cookie=key)
    yield p.PROVIDER_INGRESS.flow(OWN_FRAME_PRIORITY, Match(**on_external, eth_src=mac), [],
                                  cookie=key)
    yield p.PROVIDER_INGRESS.flow(
        INGRESS_PRIORITY,
        Match(**on_external, eth_type=p.ETH_TYPE_ARP, arp_op=p.ARP_REQUEST, arp_tpa=address),
        [*reply_actions(address, mac), *vlan_actions(external), Output(IN_PORT)],
        cookie=key)
    yield p.PROVIDER_INGRESS.flow(
        INGRESS_PRIORITY,
        Match(**on_external, eth_type=p.ETH_TYPE_ARP, arp_op=p.ARP_REPLY, eth_dst=mac,
              arp_spa=gateway_ip),
        [ToController()], cookie=key)


@unit
def _answers(own, address: str, external, external_subnet):
    """In from the external network: ARP and ping for the address answered here, the
    upstream gateway's ARP replies to the controller, our own frames dropped; a VM on the
    external network on this chassis reaches the address as if from outside."""
    on_external = dict(metadata=external.key)
    mac, key = own.mac_address, own.key
    back = [*vlan_actions(external), Output(IN_PORT)]  # with the tag classify popped
    yield from answered_here(own, address, external, external_subnet.gateway_ip)
    yield p.PROVIDER_INGRESS.flow(
        ECHO_PRIORITY,
        Match(**on_external, eth_type=p.ETH_TYPE_IPV4, ip_proto=1,
              icmpv4_type=ICMP_ECHO_REQUEST, eth_dst=mac, ipv4_dst=address),
        [Move('eth_src', 'eth_dst', 48), SetField('eth_src', mac),
         Move('ipv4_src', 'ipv4_dst', 32), SetField('ipv4_src', address),
         SetField('icmpv4_type', ICMP_ECHO_REPLY), *back], cookie=key)


@unit
def _snat(router, own, address: str, external, subnets: tuple, zone: int):
    key = own.key
    for subnet in subnets:
        source = prefix_match('ipv4_src', ip_network(subnet.cidr))
        yield p.SNAT.flow(
            NAT_PRIORITY, Match(reg5=router.key, eth_type=p.ETH_TYPE_IPV4, **source),
            [Conntrack(zone, nat=Nat(), table=p.SNAT_COMMIT.number)], cookie=key)
        yield p.SNAT_COMMIT.flow(
            NAT_PRIORITY,
            Match(reg5=router.key, ct_state=NEW, eth_type=p.ETH_TYPE_IPV4, **source),
            [Conntrack(zone, commit=True, nat=Nat('src', address),
                       table=p.SNAT_TO_EXTERNAL.number)], cookie=key)
    yield p.PROVIDER_INGRESS.flow(
        INGRESS_PRIORITY,
        Match(metadata=external.key, eth_type=p.ETH_TYPE_IPV4, eth_dst=own.mac_address,
              ipv4_dst=address),
        [p.UNSNAT.goto()], cookie=key)
    yield p.UNSNAT.flow(
        NAT_PRIORITY, Match(metadata=external.key, eth_type=p.ETH_TYPE_IPV4, ipv4_dst=address),
        [SetField(p.ROUTER_REG, router.key),
         Conntrack(zone, nat=Nat(), table=p.UNSNAT_ROUTE.number)], cookie=key)
    for priority, state in ((NAT_PRIORITY, ESTABLISHED), (RELATED_PRIORITY, RELATED)):
        yield p.UNSNAT_ROUTE.flow(
            priority, Match(reg5=router.key, ct_state=state, eth_type=p.ETH_TYPE_IPV4),
            [p.L3.resubmit()], cookie=key)


@unit
def _routed(router, own, external, subnets: tuple):
    """enable_snat=false: in to the router's subnets as they are (the upstream routes them
    to the gateway address)."""
    for subnet in subnets:
        yield p.PROVIDER_INGRESS.flow(
            INGRESS_PRIORITY,
            Match(metadata=external.key, eth_type=p.ETH_TYPE_IPV4, eth_dst=own.mac_address,
                  **prefix_match('ipv4_dst', ip_network(subnet.cidr))),
            [SetField(p.ROUTER_REG, router.key), p.L3.goto()], cookie=own.key)


@unit
def _to_external(router, own, external, gateway_mac: str, sources: tuple):
    """Out to the upstream gateway from ``sources`` (the address SNATed to, or the router's
    subnets without NAT). The cookie names the own port: neighbours.py reads the gateway's
    MAC back from these flows after a restart."""
    for source in sources:
        yield p.SNAT_TO_EXTERNAL.flow(
            NAT_PRIORITY,
            Match(reg5=router.key, eth_type=p.ETH_TYPE_IPV4,
                  **prefix_match('ipv4_src', ip_network(source))),
            [DecTTL(), SetField('eth_src', own.mac_address), SetField('eth_dst', gateway_mac),
             SetField(p.NETWORK_REG, external.key), p.PROVIDER_EGRESS.goto()],
            cookie=own.key)
