"""The northbound model: Neutron's resources plus the integer keys the data plane uses.

Attribute names follow Neutron's API so the API layer maps them one to one; where Neutron's
name is not a Python identifier (``binding:host_id``, ``router:external``) the model uses an
alias. ``revision`` is not part of the stored document: the store sets it from the revision of
the write that produced this version of the object.
"""
import ipaddress
from typing import ClassVar, Optional

from pydantic import BaseModel, ConfigDict, Field

DEVICE_OWNER_ROUTER_INTERFACE = 'network:router_interface'
DEVICE_OWNER_DHCP = 'network:dhcp'
DEVICE_OWNER_ROUTER_GATEWAY = 'network:router_gateway'
DEVICE_OWNER_FLOATINGIP = 'network:floatingip'
# Distributed SNAT (``[l3] snat_mode = distributed``): a router's address on its external
# network on one chassis (device_id = the router, binding:host_id = the chassis).
DEVICE_OWNER_CHASSIS_SNAT = 'network:chassis_snat'
# Ports that stand for an address of the cloud's own, never plugged into any chassis: they
# hold an address and a MAC, and their flows come from the object they belong to.
NOT_PLUGGED_OWNERS = frozenset({'network:router_interface', DEVICE_OWNER_ROUTER_GATEWAY,
                                DEVICE_OWNER_FLOATINGIP, DEVICE_OWNER_CHASSIS_SNAT})

TUNNEL_NETWORK_TYPES = ('vxlan', 'geneve', 'gre')
PHYSICAL_NETWORK_TYPES = ('flat', 'vlan')
NETWORK_TYPES = TUNNEL_NETWORK_TYPES + PHYSICAL_NETWORK_TYPES

# Who tells the API a port's (or floating IP's) status. df-api leaves it to the chassis, which
# writes binding and status into the object itself; Neutron keeps its own DB, so the chassis
# writes a StatusReport instead and the driver's worker tells Neutron.
STATUS_BY_CHASSIS = 'chassis'
STATUS_BY_REPORT = 'report'


class Model(BaseModel):
    """Base of every stored object."""
    model_config = ConfigDict(extra='forbid', populate_by_name=True)
    table: ClassVar[str]

    id: str
    revision: int = Field(default=0, exclude=True)

    def to_doc(self) -> dict:
        """The JSON document kept in the store (Neutron attribute names, no revision)."""
        return self.model_dump(mode='json', by_alias=True)

    @classmethod
    def from_doc(cls, doc: dict, revision: int = 0):
        obj = cls.model_validate(doc)
        obj.revision = revision
        return obj


class Resource(Model):
    """A tenant-owned Neutron resource."""
    project_id: str = ''
    name: str = ''
    description: str = ''
    tags: list[str] = []
    created_at: str = ''
    updated_at: str = ''


class Network(Resource):
    table: ClassVar[str] = 'networks'
    key: int = Field(description='Network key: the tunnel VNI and OpenFlow metadata.')
    admin_state_up: bool = True
    status: str = 'ACTIVE'
    shared: bool = False
    external: bool = Field(default=False, alias='router:external')
    mtu: int = 1450
    port_security_enabled: bool = True
    network_type: Optional[str] = Field(
        default=None, alias='provider:network_type',
        description="One of NETWORK_TYPES. None only in records written before provider "
                    "networks: a tunnel network of the chassis' first tunnel type, VNI = key.")
    physical_network: Optional[str] = Field(
        default=None, alias='provider:physical_network',
        description='flat and vlan: the physnet (a name of bridge_mappings); else None.')
    segmentation_id: Optional[int] = Field(
        default=None, alias='provider:segmentation_id',
        description='vlan: the VLAN id; vxlan, geneve, gre: the VNI / GRE key on the wire; '
                    'flat: None. Distinct from ``key``, which is only the pipeline\'s.')

    @property
    def is_physical(self) -> bool:
        """Crosses chassis on a physical network (flat, VLAN), not in a tunnel."""
        return self.network_type in PHYSICAL_NETWORK_TYPES

    @property
    def tunnel_key(self) -> Optional[int]:
        """The VNI (or GRE key) of a tunnel network; None for a physical one."""
        if self.is_physical:
            return None
        return self.key if self.segmentation_id is None else self.segmentation_id


class AllocationPool(BaseModel):
    start: str
    end: str


class HostRoute(BaseModel):
    destination: str
    nexthop: str


class Subnet(Resource):
    table: ClassVar[str] = 'subnets'
    network_id: str
    ip_version: int = 4
    cidr: str
    gateway_ip: Optional[str] = None
    allocation_pools: list[AllocationPool] = []
    enable_dhcp: bool = True
    dns_nameservers: list[str] = []
    host_routes: list[HostRoute] = []
    ipv6_ra_mode: Optional[str] = None
    ipv6_address_mode: Optional[str] = None


class FixedIP(BaseModel):
    subnet_id: str
    ip_address: str


class AddressPair(BaseModel):
    ip_address: str
    mac_address: Optional[str] = None


class Port(Resource):
    table: ClassVar[str] = 'ports'
    key: int = Field(description='Port key: reg6 (source) / reg7 (destination) in the pipeline.')
    network_id: str
    mac_address: str
    fixed_ips: list[FixedIP] = []
    device_owner: str = ''
    device_id: str = ''
    admin_state_up: bool = True
    status: str = 'DOWN'
    binding_host_id: str = Field(default='', alias='binding:host_id')
    binding_profile: dict = Field(default={}, alias='binding:profile')
    binding_vnic_type: str = Field(default='normal', alias='binding:vnic_type')
    security_groups: list[str] = Field(
        default=[], description='Ids of the SecurityGroups whose rules filter the port; '
                                'empty when port security is off and for network:* ports.')
    port_security_enabled: bool = True
    allowed_address_pairs: list[AddressPair] = Field(
        default=[], description='More (MAC, IP or prefix) the port may send from; the MAC is '
                                'the port\'s when the client gave none.')
    status_source: str = Field(
        default=STATUS_BY_CHASSIS,
        description="'chassis': the chassis writes binding_host_id and status here (df-api); "
                    "'report': it writes a StatusReport and never this object (Neutron).")

    @property
    def is_router_interface(self) -> bool:
        return self.device_owner == DEVICE_OWNER_ROUTER_INTERFACE

    @property
    def is_plugged_kind(self) -> bool:
        """A port a VM (or any interface) may be plugged into: not an address the cloud
        holds for a router or a floating IP."""
        return self.device_owner not in NOT_PLUGGED_OWNERS


class RouterInterface(BaseModel):
    port_id: str
    subnet_id: str


class ExternalFixedIP(BaseModel):
    subnet_id: str
    ip_address: str


class ExternalGateway(BaseModel):
    """A router's external gateway, as Neutron's external_gateway_info shows it."""
    network_id: str
    enable_snat: bool = True
    external_fixed_ips: list[ExternalFixedIP] = []


class Router(Resource):
    table: ClassVar[str] = 'routers'
    key: int = Field(description='Router key: reg5 in the pipeline.')
    admin_state_up: bool = True
    status: str = 'ACTIVE'
    routes: list[HostRoute] = []
    interfaces: list[RouterInterface] = []
    external_gateway_info: Optional[ExternalGateway] = None
    gateway_port_id: Optional[str] = Field(
        default=None, description='Its network:router_gateway port on the external network, '
                                  'holding the external_fixed_ips and the gateway MAC.')
    gateway_chassis: list[str] = Field(
        default=[], description='The chassis that may hold its gateway address (answer ARP '
                                'for it, SNAT to it), in priority order: the first one alive '
                                'is active (api/l3_scheduler.py; a chassis that comes back '
                                'moves itself to the end: controller/gateway_keeper.py).')


class FloatingIP(Resource):
    """A floating IP: an address of an external network that the chassis of ``port_id``
    NATs to ``fixed_ip_address`` (DNAT in, SNAT out). ``floating_port_id`` is its own
    network:floatingip port, which holds the address (IPAM) and the MAC the chassis answers
    ARP with. ``router_id`` is the router that joins the port's subnet to the external
    network (set while associated). ``status`` is ACTIVE once the bound chassis has the flows
    in, DOWN otherwise: df-api writes DOWN on every (dis)association, the chassis ACTIVE."""
    table: ClassVar[str] = 'floatingips'
    floating_network_id: str
    floating_ip_address: str
    floating_port_id: str
    port_id: Optional[str] = None
    fixed_ip_address: Optional[str] = None
    router_id: Optional[str] = None
    status: str = 'DOWN'
    status_source: str = Field(
        default=STATUS_BY_CHASSIS,
        description="As Port.status_source: 'report' under Neutron.")


class Chassis(Model):
    """A compute node running df-controller: its tunnel endpoint, registered by that controller
    when the store's record is not what it is. Its liveness is not here: see ChassisStatus."""
    # Records written before liveness left the change log carry heartbeat fields: ignored.
    model_config = ConfigDict(extra='ignore', populate_by_name=True)
    table: ClassVar[str] = 'chassis'
    tunnel_ip: str
    tunnel_types: list[str] = ['vxlan']
    physical_networks: list[str] = Field(
        default=[], description='The physnets of its bridge_mappings, sorted.')
    router_mac: Optional[str] = Field(
        default=None, description='The source MAC of the frames its routers send on physical '
                                  'networks (one per chassis, so no MAC moves upstream).')
    gateway: bool = Field(
        default=False, description='Configured as a gateway chassis ([controller] gateway): '
                                   'a candidate for routers\' gateway_chassis on the external '
                                   'networks of its physical_networks.')
    datapath_type: str = Field(
        default='system', description="Its br-int's datapath ([controller] datapath_type): "
                                      "'system' (kernel) or 'netdev' (userspace); Neutron's "
                                      "port binding hands it to Nova (vif_details).")

    def same_endpoint(self, other: 'Chassis') -> bool:
        """Whether the two records say the same to the data plane."""
        return self.model_dump(exclude={'revision'}) == other.model_dump(exclude={'revision'})


class ChassisStatus(BaseModel):
    """What a controller's heartbeat says (Store.heartbeat: a liveness record, expiring, never
    in the change log). No timestamp: that it has not expired says the chassis is up, and a
    value that does not change costs etcd no write (a lease keepalive alone)."""
    revision_seen: int = Field(default=0, description='The store revision whose flows its br-int '
                               'last confirmed.')
    networks: list[str] = Field(default=[], description='Networks its controller serves (caches).')
    routers: list[str] = Field(default=[], description='Routers its controller serves (caches).')
    active_gateways: list[str] = Field(
        default=[], description='Routers whose gateway this chassis holds now (as it sees its '
                                'peers\' liveness).')


# IP protocol names a security group rule may give, with their numbers (neutron-lib's
# IP_PROTOCOL_MAP). 'icmpv6' is Neutron's legacy name of 'ipv6-icmp'.
IP_PROTOCOLS = {
    'ah': 51, 'dccp': 33, 'egp': 8, 'esp': 50, 'gre': 47, 'hopopt': 0, 'icmp': 1, 'igmp': 2,
    'ip': 0, 'ipip': 4, 'ipv6-encap': 41, 'ipv6-frag': 44, 'ipv6-icmp': 58, 'icmpv6': 58,
    'ipv6-nonxt': 59, 'ipv6-opts': 60, 'ipv6-route': 43, 'ospf': 89, 'pgm': 113, 'rsvp': 46,
    'sctp': 132, 'tcp': 6, 'udp': 17, 'udplite': 136, 'vrrp': 112,
}


class SecurityGroup(Resource):
    """A set of rules (SecurityGroupRule objects naming it); ports list the groups they use.

    The project's group named 'default' is created by df-api on the project's first use
    (table default_security_groups makes it one per project)."""
    table: ClassVar[str] = 'security_groups'
    key: int = Field(description='Security group key: the data plane\'s id of the group '
                                 '(conjunctive matches, conntrack marks).')


class SecurityGroupRule(Model):
    """One rule of a security group, as Neutron stores it.

    ``protocol`` is None (any protocol; df-api stores 'any' and 0 so), a name of
    IP_PROTOCOLS or a number 1-255 as a string; ``protocol_number`` gives the number.
    For TCP, UDP, SCTP, DCCP and UDP-Lite the port range is port_range_min..port_range_max
    (None: any port); for ICMP and ICMPv6 they are the type and the code (None: any).
    ``remote_ip_prefix`` keeps the host bits the client gave (Neutron does);
    ``normalized_cidr`` is the network. A rule has a remote prefix or a remote group (whose
    ports' addresses it means), never both; neither means any address. Every change to a
    group's rules also updates the group (its revision)."""
    table: ClassVar[str] = 'security_group_rules'
    key: int = Field(description='Security group rule key: the data plane\'s id of the rule '
                                 '(its conjunctive match), unique in the deployment.')
    project_id: str = ''
    security_group_id: str
    direction: str = Field(description="'ingress' (to the port) or 'egress' (from it).")
    ethertype: str = 'IPv4'
    protocol: Optional[str] = None
    port_range_min: Optional[int] = None
    port_range_max: Optional[int] = None
    remote_ip_prefix: Optional[str] = None
    remote_group_id: Optional[str] = None
    description: str = ''
    tags: list[str] = []
    created_at: str = ''
    updated_at: str = ''

    @property
    def protocol_number(self) -> Optional[int]:
        """The IP protocol number; None for any protocol (also 'ip' and 'hopopt', 0)."""
        if self.protocol is None:
            return None
        number = int(self.protocol) if self.protocol.isdigit() else IP_PROTOCOLS[self.protocol]
        return number or None

    @property
    def normalized_cidr(self) -> Optional[str]:
        if self.remote_ip_prefix is None:
            return None
        return str(ipaddress.ip_network(self.remote_ip_prefix, strict=False))


class StatusReport(Model):
    """What a chassis says of a port or floating IP whose status_source is 'report' (Neutron):
    id '<resource>/<resource id>/<chassis>'. ACTIVE: br-int has the flows of the object's
    version ``object_revision`` (a reader compares it with the object's current revision:
    an older one says nothing of the current version); DOWN: unplugged from that chassis.
    Written by that chassis only, deleted by it when the object is gone or bound elsewhere
    (and by the reader when its API no longer has the object)."""
    table: ClassVar[str] = 'status_reports'
    resource: str = Field(description="The object's table: 'ports' or 'floatingips'.")
    resource_id: str
    chassis: str
    status: str = Field(description="'ACTIVE' or 'DOWN'.")
    object_revision: int = Field(description='The store revision of the version of the object '
                                             'this status is of.')

    @staticmethod
    def make_id(resource: str, resource_id: str, chassis: str) -> str:
        return f'{resource}/{resource_id}/{chassis}'


MODELS: dict[str, type[Model]] = {m.table: m for m in (Network, Subnet, Port, Router, Chassis,
                                                         SecurityGroup, SecurityGroupRule,
                                                         FloatingIP, StatusReport)}


# Records df-api keeps for itself. They live in the store so that every df-api process sees
# them and a commit can create them conditionally (compare-and-swap), but the data plane has no
# use for them, so they are not in MODELS and controllers skip their tables.

class IPAllocation(Model):
    """One address handed out: id '<subnet_id>/<ip_address>', created only if absent."""
    table: ClassVar[str] = 'ip_allocations'
    subnet_id: str
    network_id: str
    ip_address: str
    port_id: str

    @staticmethod
    def make_id(subnet_id: str, ip_address: str) -> str:
        return f'{subnet_id}/{ip_address}'


class MACAllocation(Model):
    """One MAC in use on a network: id '<network_id>/<mac_address>'."""
    table: ClassVar[str] = 'mac_allocations'
    network_id: str
    mac_address: str
    port_id: str

    @staticmethod
    def make_id(network_id: str, mac_address: str) -> str:
        return f'{network_id}/{mac_address}'


class Fence(Model):
    """Held while an object is checked for dependents and deleted: id '<table>/<id>'.

    Writers that add a dependent (a port on a network, an address on a subnet) require the
    parent's fence to be absent in their commit, so no dependent appears between the deleter's
    check and its delete. ``expires`` lets writers break the fence of a deleter that died.
    """
    table: ClassVar[str] = 'fences'
    expires: float


class SegmentAllocation(Model):
    """One network segment in use: id '<network_type>/<physical_network or ->/<segmentation
    id or ->', created only if absent, in the commit that creates the network, so no two
    networks get one VLAN id, VNI or flat physnet (Neutron: SegmentationIdInUse,
    FlatNetworkInUse)."""
    table: ClassVar[str] = 'segment_allocations'
    network_id: str

    @staticmethod
    def make_id(network_type: str, physical_network: Optional[str],
                segmentation_id: Optional[int]) -> str:
        return f'{network_type}/{physical_network or "-"}/' \
               f'{"-" if segmentation_id is None else segmentation_id}'


class DefaultSecurityGroup(Model):
    """Which group is a project's default: id = the project; created only if absent, in the
    same commit as the group, so concurrent first uses make one default group."""
    table: ClassVar[str] = 'default_security_groups'
    security_group_id: str


INTERNAL_MODELS: dict[str, type[Model]] = {m.table: m for m in (
    IPAllocation, MACAllocation, Fence, DefaultSecurityGroup, SegmentAllocation)}


def model_for_table(table: str) -> type[Model]:
    return MODELS[table]
