"""The br-int pipeline, declared once: every table's number, purpose, the fields its flows may
match, and the tables they may continue in. Code refers to tables by these objects, never by
number, and every flow is checked against its table's declaration when it is built.

Registers: metadata = network key, reg6 = source port key, reg7 = destination port key,
reg5 = router key, reg4 = the conntrack zone of the local port being filtered (set with the
port in egress_conntrack and ingress_conntrack, so the security group tables' shared flows
commit in it); reg3 = the liveness port of the gateway chassis snat_redirect chose; reg0
bit 0 = larger than the external network's MTU (check_pkt_larger, on the way out: the first
table of each north-south path sends such packets to the controller, frag_needed.py);
tunnel_id = the network's tunnel key (its segmentation id: VNI or GRE key)
and tun_ipv4_dst = the peer chassis on tunnelled packets; vlan_vid = OFPVID_PRESENT | the
VLAN id of a VLAN network's frames on its physnet's patch port (a flat network's: untagged).
A miss in any table drops the packet (br-int is fail-mode secure and no table has a
table-miss flow that says otherwise). docs/pipeline.md describes each table in prose.
A flow the switch would refuse for a missing prerequisite (prerequisites.py) is refused here.
"""
import dataclasses

from dragonflow.controller import prerequisites
from dragonflow.controller.flows import Conntrack, Flow, Goto, Match, Resubmit

NETWORK_REG = 'metadata'
SOURCE_PORT_REG = 'reg6'
DESTINATION_PORT_REG = 'reg7'
ROUTER_REG = 'reg5'
CONNTRACK_ZONE_REG = 'reg4'
GATEWAY_PORT_REG = 'reg3'  # snat_redirect: the liveness port of the gateway chosen (bundle)
TOO_BIG_REG = 'reg0'  # bit 0: set by check_pkt_larger where traffic leaves for outside
TOO_BIG = (1, 1)  # the match on it: larger than the external network's MTU

ETH_TYPE_IPV4 = prerequisites.ETH_TYPE_IPV4
ETH_TYPE_ARP = prerequisites.ETH_TYPE_ARP
ARP_REQUEST = 1
ARP_REPLY = 2

_L2 = {'metadata', 'eth_src', 'eth_dst', 'eth_type'}
_L3 = _L2 | {'ip_proto', 'ipv4_src', 'ipv4_dst'}
_ARP = _L2 | {'arp_op', 'arp_tpa', 'arp_spa', 'arp_sha', SOURCE_PORT_REG}
_RULE = {'ct_state', 'eth_type', 'ip_proto', 'tcp_dst', 'udp_dst', 'sctp_dst', 'icmpv4_type',
         'icmpv4_code', 'conj_id'}


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    number: int
    purpose: str
    match_fields: frozenset
    next_tables: tuple = ()
    # Tables before this one it may run the packet through (resubmit): goto only goes forward.
    back_tables: tuple = ()

    def flow(self, priority: int, match: Match, actions=(), cookie: int = 0) -> Flow:
        """A flow in this table, refused if it matches or jumps where the table may not, or if
        the switch would refuse it (prerequisites)."""
        if not all(field in self.match_fields for field, _ in match):
            undeclared = match.fields() - self.match_fields
            raise ValueError(f'table {self.name} does not match on {sorted(undeclared)}')
        for action in actions:
            table = action.table if isinstance(action, (Goto, Resubmit, Conntrack)) else None
            allowed = self.next_tables + (self.back_tables if isinstance(action, Resubmit)
                                          else ())
            if table is not None and _name(table) not in allowed:
                raise ValueError(f'table {self.name} may not continue in table {table}')
        prerequisites.check(match, actions)
        return Flow(self.number, priority, match, tuple(actions), cookie)

    def goto(self) -> Goto:
        return Goto(self.number)

    def resubmit(self) -> Resubmit:
        return Resubmit(self.number)


CLASSIFY = Table(
    'classify', 0, 'local VM port: set reg6 and metadata; tunnel port: metadata from tun_id; '
    'patch port of a physnet: metadata from the VLAN id (popped) or its flat network',
    frozenset({'in_port', 'tunnel_id', 'vlan_vid'}),
    ('port_security', 'remote_ingress', 'provider_ingress'))
PORT_SECURITY = Table(
    'port_security', 5, 'a VM sends only with its own MAC and IPs (or allowed address pairs)',
    frozenset({SOURCE_PORT_REG, 'eth_src', 'eth_type', 'ipv4_src', 'arp_sha', 'arp_spa',
               'ip_proto', 'udp_src', 'udp_dst'}), ('egress_conntrack',))
EGRESS_CONNTRACK = Table(
    'egress_conntrack', 10, 'IPv4 from a port with security groups through conntrack (its zone)',
    frozenset({SOURCE_PORT_REG, 'eth_type', 'ip_proto', 'udp_src', 'udp_dst'}),
    ('egress_security_groups', 'services'))
EGRESS_SECURITY_GROUPS = Table(
    'egress_security_groups', 15, 'established/related pass; new ones only as a rule allows',
    frozenset(_RULE | {SOURCE_PORT_REG, 'ipv4_dst'}), ('services',))
SERVICES = Table(
    'services', 20, 'ARP to the responder, DHCP to the DHCP table, everything else to L2',
    frozenset(_L2 | {'ip_proto', 'udp_dst'}), ('arp_responder', 'dhcp', 'l2_lookup'))
ARP_RESPONDER = Table(
    'arp_responder', 21, 'answer ARP requests for router interface IPs and known port IPs',
    frozenset(_ARP), ('l2_lookup',))
DHCP = Table(
    'dhcp', 22, 'DHCP requests of ports on DHCP-enabled subnets to the local controller',
    frozenset({SOURCE_PORT_REG}), ('l2_lookup',))
L2_LOOKUP = Table(
    'l2_lookup', 30, 'router MAC to L3; known port MAC to its reg7; broadcast to every port; '
    'on a physical network any other MAC to it (provider_egress); a local floating IP\'s MAC '
    'on its external network to provider_ingress, as if it came from there',
    frozenset(_L2), ('l3', 'egress_dispatch', 'remote_flood', 'provider_ingress',
                     'provider_egress'))
REMOTE_INGRESS = Table(
    'remote_ingress', 35, 'packets from tunnels: destination MAC to a local port; a router\'s '
    'gateway MAC on the active gateway chassis: its reg5, to SNAT (or straight out without '
    'it); any other to the controller, to wait for a port about to be plugged here',
    frozenset(_L2), ('egress_dispatch', 'snat', 'snat_to_external'))
PROVIDER_INGRESS = Table(
    'provider_ingress', 36, 'frames from a physical network: to a local port\'s MAC; a local '
    'floating IP\'s ARP answered and its traffic to DNAT; ARP replies to it to the controller '
    '(the gateway\'s MAC); on the active gateway chassis, a router\'s gateway MAC on a '
    'physical network behind it: its reg5, to SNAT (or straight out without it); broadcast '
    'to local ports only; anything else dropped',
    frozenset(_ARP | {'ipv4_dst', 'ip_proto', 'icmpv4_type'}),
    ('egress_dispatch', 'fip_dnat', 'unsnat', 'l3', 'snat', 'snat_to_external'))
L3 = Table(
    'l3', 40, 'route by destination IP: dec_ttl, rewrite MACs, set the destination network/port; '
    'from a port with a floating IP to outside the router: to its SNAT; from the router\'s '
    'other addresses to outside: to the router\'s SNAT, here or on its gateway chassis',
    frozenset(_L3 | {ROUTER_REG}),
    ('egress_dispatch', 'fip_snat', 'snat_redirect', 'snat', 'snat_to_external'))
SNAT_REDIRECT = Table(
    'snat_redirect', 42, 'to outside through the router\'s gateway on another chassis: '
    'from a tunnel network, the first live one of its gateway_chassis (bundle active_backup '
    'over this chassis\' BFD ports to them) in reg3; from a physical network, out on it to '
    'the gateway MAC (the physical network knows where that is); too big: to the controller',
    frozenset({ROUTER_REG, TOO_BIG_REG, NETWORK_REG, 'eth_type'}),
    ('snat_tunnel', 'provider_egress'))
SNAT_TUNNEL = Table(
    'snat_tunnel', 43, 'reg3 names a gateway chassis: through the tunnel to it, on the '
    'network the packet came from (tunnel_id = its tunnel key), to the gateway MAC',
    frozenset({GATEWAY_PORT_REG, NETWORK_REG}), ())
SNAT = Table(
    'snat', 44, 'where the router SNATs (its active gateway chassis; every chassis in '
    'distributed mode): through the router\'s SNAT zone (nat: replies translated back); too '
    'big: to the controller', frozenset({ROUTER_REG, TOO_BIG_REG, 'eth_type', 'ipv4_src'}),
    ('snat_commit',))
SNAT_COMMIT = Table(
    'snat_commit', 45, 'a new connection: committed with SNAT to the router\'s address '
    '(its gateway address, or its address on this chassis)',
    frozenset({ROUTER_REG, 'ct_state', 'eth_type', 'ipv4_src'}), ('snat_to_external',))
SNAT_TO_EXTERNAL = Table(
    'snat_to_external', 46, 'to the external network: dec_ttl, the router\'s address\' MAC, '
    'the upstream gateway\'s MAC, its network (enable_snat=false comes here unNATed); too '
    'big: to the controller', frozenset({ROUTER_REG, TOO_BIG_REG, 'eth_type', 'ipv4_src'}),
    ('provider_egress',))
UNSNAT = Table(
    'unsnat', 47, 'from the external network to a router\'s SNAT address: its reg5, through '
    'its SNAT zone (nat)', frozenset({NETWORK_REG, 'eth_type', 'ipv4_dst'}), ('unsnat_route',))
UNSNAT_ROUTE = Table(
    'unsnat_route', 48, 'a reply translated back to the VM\'s address: routed by l3 '
    '(resubmit); anything else dropped', frozenset({ROUTER_REG, 'ct_state', 'eth_type'}),
    back_tables=('l3',))
FIP_DNAT = Table(
    'fip_dnat', 50, 'to a local floating IP: the router\'s key in reg5, through conntrack '
    '(the floating IP\'s NAT zone, nat: replies and related errors translated back)',
    frozenset({NETWORK_REG, 'eth_type', 'ipv4_dst'}), ('fip_dnat_commit',))
FIP_DNAT_COMMIT = Table(
    'fip_dnat_commit', 51, 'a new connection to a floating IP: committed with DNAT to the '
    'fixed IP', frozenset({ROUTER_REG, 'ct_state', 'eth_type', 'ipv4_dst'}), ('fip_to_port',))
FIP_TO_PORT = Table(
    'fip_to_port', 52, 'translated to the fixed IP: routed to the port (dec_ttl, MACs, its '
    'network and reg7)', frozenset({ROUTER_REG, 'eth_type', 'ipv4_dst'}), ('egress_dispatch',))
FIP_SNAT = Table(
    'fip_snat', 53, 'from a port with a floating IP to outside: through its NAT zone; too '
    'big: to the controller', frozenset({ROUTER_REG, TOO_BIG_REG, 'eth_type', 'ipv4_src'}),
    ('fip_snat_commit',))
FIP_SNAT_COMMIT = Table(
    'fip_snat_commit', 54, 'a new connection from it: committed with SNAT to the floating IP',
    frozenset({ROUTER_REG, 'ct_state', 'eth_type', 'ipv4_src'}), ('fip_to_external',))
FIP_TO_EXTERNAL = Table(
    'fip_to_external', 55, 'translated to the floating IP: to the external network (the FIP '
    'port\'s MAC, the gateway\'s MAC, dec_ttl)',
    frozenset({ROUTER_REG, 'eth_type', 'ipv4_src'}), ('provider_egress',))
EGRESS_DISPATCH = Table(
    'egress_dispatch', 60, 'local destination port to ingress filtering; remote one to its '
    'tunnel; one bound nowhere yet to every chassis of its network',
    frozenset({DESTINATION_PORT_REG}), ('ingress_conntrack', 'remote_flood', 'provider_egress'))
REMOTE_FLOOD = Table(
    'remote_flood', 62, 'a broadcast from a local port: one copy to each other chassis with '
    'ports on the network; on a physical network one copy to it',
    frozenset({NETWORK_REG}), ('provider_egress',))
PROVIDER_EGRESS = Table(
    'provider_egress', 64, 'to a physical network: a routed frame gets this chassis\' router '
    'MAC as source; VLAN tag pushed; out of the physnet\'s patch port (IN_PORT when it came '
    'in by it)', frozenset({NETWORK_REG, 'eth_src', 'in_port'}), ())
INGRESS_CONNTRACK = Table(
    'ingress_conntrack', 70, 'IPv4 to a port with security groups through conntrack (its zone)',
    frozenset({DESTINATION_PORT_REG, 'eth_type'}), ('ingress_security_groups', 'output'))
INGRESS_SECURITY_GROUPS = Table(
    'ingress_security_groups', 75, 'established/related pass; new ones only as a rule allows',
    frozenset(_RULE | {DESTINATION_PORT_REG, 'ipv4_src'}), ('output',))
OUTPUT = Table(
    'output', 80, 'reg7 to the port\'s OpenFlow port number',
    frozenset({DESTINATION_PORT_REG}), ())

TABLES = (CLASSIFY, PORT_SECURITY, EGRESS_CONNTRACK, EGRESS_SECURITY_GROUPS, SERVICES,
          ARP_RESPONDER, DHCP, L2_LOOKUP, REMOTE_INGRESS, PROVIDER_INGRESS, L3, SNAT_REDIRECT,
          SNAT_TUNNEL, SNAT, SNAT_COMMIT, SNAT_TO_EXTERNAL, UNSNAT, UNSNAT_ROUTE, FIP_DNAT,
          FIP_DNAT_COMMIT, FIP_TO_PORT, FIP_SNAT, FIP_SNAT_COMMIT, FIP_TO_EXTERNAL,
          EGRESS_DISPATCH, REMOTE_FLOOD, PROVIDER_EGRESS, INGRESS_CONNTRACK,
          INGRESS_SECURITY_GROUPS, OUTPUT)
BY_NUMBER = {t.number: t for t in TABLES}
# Where a too-big packet (TOO_BIG_REG) is sent to the controller, for frag_needed.py.
TOO_BIG_TABLES = (SNAT_REDIRECT, SNAT, SNAT_TO_EXTERNAL, FIP_SNAT)
BY_NAME = {t.name: t for t in TABLES}


def _name(number: int) -> str:
    table = BY_NUMBER.get(number)
    return table.name if table else f'undeclared table {number}'
