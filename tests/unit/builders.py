"""Build small topologies for app tests without a store or an API, install their flows in the
flow-table simulator, and build the packets to run through it."""
import dataclasses
import ipaddress
import itertools

from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from dragonflow.controller import apps, openflow
from dragonflow.controller import pipeline as p
from dragonflow.controller.flows import Flow
from dragonflow.controller.nat_zones import NatZones
from dragonflow.controller.reconciler import Reconciler
from dragonflow.controller.topology import Topology
from dragonflow.model import (
    AddressPair,
    Chassis,
    ExternalGateway,
    FixedIP,
    FloatingIP,
    Network,
    Port,
    Router,
    RouterInterface,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from dragonflow.model.objects import (
    DEVICE_OWNER_CHASSIS_SNAT,
    DEVICE_OWNER_FLOATINGIP,
    DEVICE_OWNER_ROUTER_GATEWAY,
    DEVICE_OWNER_ROUTER_INTERFACE,
)
from tests.flowsim import FlowTableSimulator, as_kept

BROADCAST = 'ff:ff:ff:ff:ff:ff'
TUNNEL_OFPORT = 1000
TUNNEL_OFPORTS = {'vxlan': 1000, 'geneve': 1001, 'gre': 1002}  # tunnel_types, in that order
ROUTER_MAC = 'fa:16:3f:00:00:01'  # this chassis' (Chassis.router_mac)
PATCH_OFPORT = 2000  # br-int's patch port to the first physnet's bridge (bridge_mappings)
LIVENESS_OFPORT = 3000  # this chassis' BFD port to the first peer it runs a session with


class TopologyBuilder:
    """Networks, subnets, ports and routers with predictable keys, MACs and ids.

    Default ids include the network, so two projects may reuse a CIDR or an IP; an id used
    twice is refused rather than silently replacing the first object.
    """

    def __init__(self, chassis_id='chassis-1'):
        self.chassis_id = chassis_id
        self.networks, self.subnets, self.ports, self.routers = {}, {}, {}, {}
        self.ofports: dict[str, int] = {}
        self.chassis: dict[str, Chassis] = {}
        self.tunnel_ofport = None
        self.security_groups: dict[str, SecurityGroup] = {}
        self.rules: dict[str, SecurityGroupRule] = {}
        self._keys = itertools.count(1)
        self.floating_ips: dict[str, FloatingIP] = {}
        self.patch_ofports: dict[str, int] = {}
        self.gateway_macs: dict[tuple, str] = {}  # (external network id, gateway IP) -> MAC
        self.nat_zones = NatZones()  # the chassis' allocator, as the flow loop has it
        self.tunnel_ofports: dict[str, int] = {}  # none: tunnel_ofport, of no type known
        self.router_mac = ROUTER_MAC
        # Gateway liveness, as ovsdb.py reads it: this chassis' BFD ports by peer, the peers
        # whose session says forwarding; [controller] gateway; physnets whose uplink is lost.
        self.liveness_ofports: dict[str, int] = {}
        self.live_peers: set[str] = set()
        self.is_gateway = False
        self.uplinks_down: set[str] = set()
        self.withdrawn_from: set[str] = set()  # peers whose BFD port holds cpath_down
        # Ports belong to a group that lets everything in and out unless a test says
        # otherwise: the other apps' tests do not depend on security groups.
        self.security_group('open', ('egress', {}), ('ingress', {}))

    def security_group(self, name, *rules):
        """A group with (direction, rule attributes) rules."""
        group = _add(self.security_groups,
                     SecurityGroup(id=f'sg-{name}', name=name, key=next(self._keys)))
        for direction, attrs in rules:
            self.rule(group, direction, **attrs)
        return group

    def rule(self, group, direction, **attrs):
        rule = SecurityGroupRule(id=f'rule-{len(self.rules) + 1}', key=next(self._keys),
                                 security_group_id=group.id, direction=direction, **attrs)
        return _add(self.rules, rule)

    def remote_chassis(self, name, tunnel_ip, **attrs):
        """Another chassis; this one gets its tunnel port (TUNNEL_OFPORT) with the first.
        ``attrs``: the record's other fields (gateway, tunnel_types, ...)."""
        self.tunnel_ofport = TUNNEL_OFPORT
        return _add(self.chassis, Chassis(id=name, tunnel_ip=tunnel_ip, **attrs))

    def liveness(self, chassis_id, live=True) -> int:
        """This chassis' BFD port to a peer (kept if it has one), forwarding if ``live``."""
        ofport = self.liveness_ofports.setdefault(
            chassis_id, LIVENESS_OFPORT + len(self.liveness_ofports))
        if live:
            self.live_peers.add(chassis_id)
        else:
            self.live_peers.discard(chassis_id)
        return ofport

    def gateway_chassis(self, router, *chassis_ids):
        """The router's gateway chassis, in priority order; this chassis gets a live BFD
        port to each other one."""
        router.gateway_chassis = list(chassis_ids)
        for chassis_id in chassis_ids:
            if chassis_id != self.chassis_id:
                self.liveness(chassis_id)
        return router

    def network(self, name, project='p1', **provider):
        """``provider``: network_type, physical_network, segmentation_id (Network's names)."""
        net = Network(id=f'net-{name}', name=name, key=next(self._keys), project_id=project,
                      **provider)
        return _add(self.networks, net)

    def provider_network(self, name, segmentation_id=None, physnet='physnet1', project='p1',
                         mapped=True):
        """A VLAN network (flat without a segmentation id) on ``physnet``; this chassis gets
        a patch port to the physnet if ``mapped``."""
        net = self.network(name, project, network_type='vlan' if segmentation_id else 'flat',
                           physical_network=physnet, segmentation_id=segmentation_id)
        if mapped:
            self.patch_ofports.setdefault(physnet, PATCH_OFPORT + len(self.patch_ofports))
        return net

    def tunnel_types(self, *types):
        """This chassis' tunnel ports, one per type (the first is a typeless network's)."""
        self.tunnel_ofports = {kind: TUNNEL_OFPORTS[kind] for kind in types}
        self.tunnel_ofport = self.tunnel_ofports[types[0]]

    def subnet(self, network, cidr, name=None):
        prefix = ipaddress.ip_network(cidr)
        subnet = Subnet(id=f'subnet-{name or network.name + "-" + cidr}',
                        network_id=network.id, cidr=cidr, ip_version=prefix.version,
                        gateway_ip=str(next(prefix.hosts())),
                        project_id=network.project_id)
        return _add(self.subnets, subnet)

    def port(self, subnet, ip, ofport=None, name=None, mac=None, **attrs):
        key = next(self._keys)
        attrs.setdefault('security_groups', ['sg-open'])
        port = Port(id=f'port-{name or subnet.network_id + "-" + ip}', key=key,
                    network_id=subnet.network_id,
                    mac_address=mac or f'fa:16:3e:00:00:{key:02x}',
                    fixed_ips=[FixedIP(subnet_id=subnet.id, ip_address=ip)], **attrs)
        _add(self.ports, port)
        if ofport is not None:
            self.ofports[port.id] = ofport
        return port

    def remove_port(self, port):
        del self.ports[port.id]
        self.ofports.pop(port.id, None)

    def router(self, name, *subnets, routes=(), key=None):
        """``key``: the router's, when a test needs one far from the others'."""
        router = Router(id=f'router-{name}', name=name, key=key or next(self._keys),
                        routes=list(routes))
        _add(self.routers, router)
        for subnet in subnets:
            self.add_interface(router, subnet)
        return router

    def add_interface(self, router, subnet):
        port = self.port(subnet, subnet.gateway_ip, name=f'{router.name}-{subnet.id}',
                         device_owner=DEVICE_OWNER_ROUTER_INTERFACE, device_id=router.id)
        router.interfaces.append(RouterInterface(port_id=port.id, subnet_id=subnet.id))
        return port

    def remove_interface(self, router, subnet):
        interface = next(i for i in router.interfaces if i.subnet_id == subnet.id)
        router.interfaces.remove(interface)
        del self.ports[interface.port_id]

    def external_network(self, name, cidr, physnet='physnet1', network_type='flat',
                         segmentation_id=None, **attrs):
        """An external (router:external) physical network and its subnet; this chassis gets
        a patch port to its physnet. ``attrs``: the network's other fields (mtu, ...)."""
        net = _add(self.networks, Network(
            id=f'net-{name}', name=name, key=next(self._keys), project_id='admin',
            external=True, network_type=network_type, physical_network=physnet,
            segmentation_id=segmentation_id, **attrs))
        self.patch_ofports.setdefault(physnet, PATCH_OFPORT + len(self.patch_ofports))
        return net, self.subnet(net, cidr)

    def router_gateway(self, router, external_subnet, ip, enable_snat=True):
        """The router's external gateway: its network:router_gateway port takes ``ip``."""
        port = self.port(external_subnet, ip, name=f'{router.name}-gateway',
                         device_owner=DEVICE_OWNER_ROUTER_GATEWAY, device_id=router.id,
                         security_groups=[])
        router.external_gateway_info = ExternalGateway(network_id=external_subnet.network_id,
                                                       enable_snat=enable_snat)
        router.gateway_port_id = port.id
        return port

    def chassis_snat(self, router, external_subnet, ip, host=None):
        """Distributed SNAT: the router's network:chassis_snat port on ``host`` (this
        chassis unless given)."""
        host = host or self.chassis_id
        return self.port(external_subnet, ip, name=f'{router.name}-snat-{host}',
                         device_owner=DEVICE_OWNER_CHASSIS_SNAT, device_id=router.id,
                         security_groups=[], **{'binding:host_id': host})

    def floating_ip(self, external_subnet, address, port=None, router=None, name=None):
        """A floating IP (its network:floatingip port holds the address and the MAC),
        associated with the first fixed IP of ``port`` through ``router`` if given."""
        name = name or f'fip-{address}'
        own = self.port(external_subnet, address, name=name,
                        device_owner=DEVICE_OWNER_FLOATINGIP, security_groups=[])
        return _add(self.floating_ips, FloatingIP(
            id=name, floating_network_id=external_subnet.network_id,
            floating_ip_address=address, floating_port_id=own.id,
            port_id=port.id if port else None, fixed_ip_address=ip_of(port) if port else None,
            router_id=router.id if router else None, project_id=own.project_id))

    def associate(self, fip, port=None, router=None):
        """Re-associate (or, with no port, disassociate) a floating IP."""
        self.floating_ips[fip.id] = fip.model_copy(update={
            'port_id': port.id if port else None,
            'fixed_ip_address': ip_of(port) if port else None,
            'router_id': router.id if router else None})
        return self.floating_ips[fip.id]

    def build(self) -> Topology:
        """An independent snapshot: later builder changes do not reach into it. The floating
        IPs get their NAT zones as the flow loop gives them (flush_new_nat_zones: what a
        switch must forget before it gets the flows)."""
        topology = Topology(self.chassis_id, _copy(self.networks), _copy(self.subnets),
                        _copy(self.ports), _copy(self.routers), _copy(self.chassis),
                        dict(self.ofports), self.tunnel_ofport, _copy(self.security_groups),
                        _copy(self.rules), floating_ips=_copy(self.floating_ips),
                        patch_ofports=dict(self.patch_ofports),
                        gateway_macs=dict(self.gateway_macs),
                        tunnel_ofports=dict(self.tunnel_ofports), router_mac=self.router_mac,
                        liveness_ofports=dict(self.liveness_ofports),
                        live_peers=frozenset(self.live_peers), is_gateway=self.is_gateway,
                        uplinks_down=frozenset(self.uplinks_down),
                        withdrawn_from=frozenset(self.withdrawn_from))
        return dataclasses.replace(
            topology, nat_zones=self.nat_zones.assign(topology.nat_associations()))

    def flush_new_nat_zones(self, switch) -> None:
        """What the flow loop does before it sends the flows of new NAT zones."""
        switch.flush_conntrack_zones(self.nat_zones.unflushed())
        self.nat_zones.flushed(self.nat_zones.unflushed())


def _add(objects: dict, obj):
    if obj.id in objects:
        raise ValueError(f'duplicate id {obj.id}: pass a name')
    objects[obj.id] = obj
    return obj


def _copy(objects: dict) -> dict:
    return {k: v.model_copy(deep=True) for k, v in objects.items()}


def install(topology: Topology, reconciler: Reconciler = None) -> FlowTableSimulator:
    """Reconcile the apps' flows for the topology into a (new or given) simulated br-int."""
    reconciler = reconciler or Reconciler(FlowTableSimulator())
    reconciler.reconcile(apps.desired_flows(topology))
    return reconciler.switch


def ip_of(port) -> str:
    return port.fixed_ips[0].ip_address


def only(deliveries: list):
    """The one delivery of a packet the test expects to come out exactly once."""
    assert len(deliveries) == 1, deliveries
    return deliveries[0]


def frame(src_port, eth_dst, **fields) -> dict:
    """An Ethernet frame sent by a port (an IPv4 packet unless eth_type says otherwise)."""
    return {'eth_src': src_port.mac_address, 'eth_dst': eth_dst,
            'eth_type': p.ETH_TYPE_IPV4, **fields}


def ipv4(src_port, eth_dst, ipv4_dst, ttl=64, **fields) -> dict:
    return frame(src_port, eth_dst, ipv4_src=ip_of(src_port), ipv4_dst=ipv4_dst, ip_proto=1,
                 ip_ttl=ttl, **fields)


def arp_request(src_port, target_ip, sender_ip=None) -> dict:
    """A broadcast ARP request from the port for target_ip."""
    return frame(src_port, BROADCAST, eth_type=p.ETH_TYPE_ARP, arp_op=p.ARP_REQUEST,
                 arp_sha=src_port.mac_address, arp_spa=sender_ip or ip_of(src_port),
                 arp_tha='00:00:00:00:00:00', arp_tpa=target_ip)


def as_sent(in_port: int, packet: dict) -> dict:
    """The headers a delivery of the packet carries when the switch changed nothing."""
    return {'in_port': in_port, 'ip_ttl': 64, **packet}


def rich_topology() -> TopologyBuilder:
    """Everything the apps know about at once: two projects reusing a CIDR and MACs, local,
    remote and disabled ports, a dual-stack port, an IPv6 subnet, two routers (one of them
    with extra routes, a default route and two routes to one prefix), a network nobody
    routes; north-south, p1's router with a floating IP and its gateway held here, p2's
    with its gateway on the other chassis."""
    b = TopologyBuilder()
    b.remote_chassis('chassis-2', '172.31.0.12')
    for project, first in (('p1', 1), ('p2', 20)):
        n1, n2 = b.network(f'{project}-a', project), b.network(f'{project}-b', project)
        s1, s2 = b.subnet(n1, '10.0.1.0/24'), b.subnet(n2, '10.0.2.0/24')
        s6 = b.subnet(n2, 'fd00:2::/64')
        b.port(s1, '10.0.1.5', ofport=first, mac='fa:16:3e:aa:00:01')
        b.port(s1, '10.0.1.6', ofport=first + 1, admin_state_up=False)
        b.port(s1, '10.0.1.7', **{'binding:host_id': 'chassis-2'})  # on another chassis
        b.port(s1, '10.0.1.8', ofport=first + 4, port_security_enabled=False)
        b.port(s1, '10.0.1.9', ofport=first + 5, allowed_address_pairs=[
            {'ip_address': '10.0.1.128/25'}, {'ip_address': '10.0.1.99',
                                              'mac_address': 'fa:16:3e:bb:00:01'}])
        dual = b.port(s2, '10.0.2.5', ofport=first + 2, mac='fa:16:3e:aa:00:02')
        dual.fixed_ips.append(FixedIP(subnet_id=s6.id, ip_address='fd00:2::5'))
        b.port(s2, '10.0.2.9', ofport=first + 3)
        b.router(project, s1, s2, s6, routes=[
            {'destination': '0.0.0.0/0', 'nexthop': '10.0.2.9'},
            {'destination': '192.168.0.0/16', 'nexthop': '10.0.2.9'},
            {'destination': '192.168.0.0/16', 'nexthop': '10.0.2.5'},
            {'destination': '192.168.7.7/32', 'nexthop': '10.0.2.5'},
            {'destination': 'fd00:9::/64', 'nexthop': 'fd00:2::5'}])
    lonely = b.subnet(b.network('lonely'), '10.9.0.0/24')
    b.port(lonely, '10.9.0.5', ofport=40)
    add_floating_ip(b)
    add_vlan_network(b)
    add_gateways(b)
    return b


def add_vlan_network(b: TopologyBuilder):
    """Provider networks: a VLAN network on physnet1 (VLAN 101) with a local, a remote and a
    disabled port, routed by p1's router (so routed frames leave with the router MAC)."""
    net = b.provider_network('vlan', segmentation_id=101)
    subnet = b.subnet(net, '10.0.5.0/24')
    b.port(subnet, '10.0.5.5', ofport=60)
    b.port(subnet, '10.0.5.6', ofport=61, admin_state_up=False)
    b.port(subnet, '10.0.5.7', **{'binding:host_id': 'chassis-2'})
    b.add_interface(b.routers['router-p1'], subnet)
    return b


GATEWAY_IP, GATEWAY_MAC = '172.24.4.1', 'fa:16:3e:ee:ee:01'


def add_floating_ip(b: TopologyBuilder):
    """North-south: an external flat network on physnet1 that p1's router has its gateway
    on, and a floating IP of p1's first local port, with the gateway's MAC learnt."""
    _, external = b.external_network('public', '172.24.4.0/24')
    router = b.routers['router-p1']
    b.router_gateway(router, external, '172.24.4.10')
    b.floating_ip(external, '172.24.4.100', b.ports['port-net-p1-a-10.0.1.5'], router)
    b.gateway_macs[external.network_id, GATEWAY_IP] = GATEWAY_MAC
    return b


def add_gateways(b: TopologyBuilder):
    """SNAT: this chassis is a gateway chassis; it holds p1's router's gateway (first of
    its gateway_chassis), p2's router has its gateway on chassis-2 (live) and a VLAN
    network (102, a local port on it) whose traffic out goes there over that network."""
    b.is_gateway = True
    b.gateway_chassis(b.routers['router-p1'], b.chassis_id, 'chassis-2')
    router = b.routers['router-p2']
    b.router_gateway(router, b.subnets['subnet-public-172.24.4.0/24'], '172.24.4.11')
    b.gateway_chassis(router, 'chassis-2', b.chassis_id)
    vlan = b.subnet(b.provider_network('p2-vlan', segmentation_id=102, project='p2'),
                    '10.0.7.0/24')
    b.port(vlan, '10.0.7.5', ofport=62)
    b.add_interface(router, vlan)
    return b


def every_kind_of_flow() -> list[Flow]:
    """The rich topology's flows, with security group rules that bring conjunctions, conj_id,
    masked transport ports, ICMP type and code, a prefix written with host bits set and one
    of any address, and an allowed address pair of any address (0.0.0.0/0)."""
    builder = rich_topology()
    builder.ports['port-net-p1-a-10.0.1.9'].allowed_address_pairs.append(
        AddressPair(ip_address='0.0.0.0/0', mac_address='fa:16:3e:cc:00:01'))
    group = builder.security_groups['sg-open']
    builder.rule(group, 'egress', protocol='tcp', port_range_min=443, port_range_max=443,
                 remote_ip_prefix='0.0.0.0/0')
    builder.rule(group, 'ingress', protocol='tcp', port_range_min=80, port_range_max=90,
                 remote_group_id=group.id)
    builder.rule(group, 'ingress', protocol='udp', port_range_min=1000, port_range_max=1999,
                 remote_ip_prefix='10.1.2.3/16')
    builder.rule(group, 'ingress', protocol='icmp', port_range_min=8, port_range_max=0)
    builder.rule(group, 'egress', protocol='sctp', port_range_min=5000, port_range_max=5000)
    return apps.desired_flows(builder.build())


def read_back(flow: Flow) -> Flow:
    """The flow as a dump of br-int reads it: encoded by os-ken into the flow_mod that adds it,
    kept as OVS keeps it, and parsed by os-ken."""
    datapath = ofproto_protocol.ProtocolDesc(ofp.OFP_VERSION)
    message = openflow.flow_mod(flow, ofp.OFPFC_ADD)
    message.set_xid(0)
    message.serialize()
    parsed = parser.OFPFlowMod.parser(datapath, ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD,
                                      len(message.buf), 0, message.buf)
    for instruction in parsed.instructions:
        for action in getattr(instruction, 'actions', ()):
            if isinstance(action, parser.NXActionRegMove):
                action.src_field = _nxm_header(action.src_field)
                action.dst_field = _nxm_header(action.dst_field)
    return as_kept(openflow.flow_from_stats(parsed))


_NXM_NAMES = {t.name for t in ofp.oxm_types if t.name.endswith('_nxm')}


def _nxm_header(field: str) -> str:
    """OVS dumps a reg_move field by its Nicira header where it has one, whatever header it
    was written with (br-int shows move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[])."""
    return f'{field}_nxm' if f'{field}_nxm' in _NXM_NAMES else field
