"""The northbound model: Neutron's resources plus the integer keys the data plane uses.

Attribute names follow Neutron's API so the API layer maps them one to one; where Neutron's
name is not a Python identifier (``binding:host_id``, ``router:external``) the model uses an
alias. ``revision`` is not part of the stored document: the store sets it from the revision of
the write that produced this version of the object.
"""
from typing import ClassVar, Optional

from pydantic import BaseModel, ConfigDict, Field

DEVICE_OWNER_ROUTER_INTERFACE = 'network:router_interface'
DEVICE_OWNER_DHCP = 'network:dhcp'


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
    network_type: Optional[str] = Field(default=None, alias='provider:network_type')
    physical_network: Optional[str] = Field(default=None, alias='provider:physical_network')
    segmentation_id: Optional[int] = Field(default=None, alias='provider:segmentation_id')


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
    security_groups: list[str] = []
    port_security_enabled: bool = True
    allowed_address_pairs: list[AddressPair] = []

    @property
    def is_router_interface(self) -> bool:
        return self.device_owner == DEVICE_OWNER_ROUTER_INTERFACE


class RouterInterface(BaseModel):
    port_id: str
    subnet_id: str


class Router(Resource):
    table: ClassVar[str] = 'routers'
    key: int = Field(description='Router key: reg5 in the pipeline.')
    admin_state_up: bool = True
    status: str = 'ACTIVE'
    routes: list[HostRoute] = []
    interfaces: list[RouterInterface] = []
    external_gateway_info: Optional[dict] = None


class Chassis(Model):
    """A compute node running df-controller; registered and refreshed by that controller."""
    table: ClassVar[str] = 'chassis'
    tunnel_ip: str
    tunnel_types: list[str] = ['vxlan']
    heartbeat: float = Field(default=0.0, description='Unix time of the last heartbeat.')
    revision_seen: int = Field(default=0, description='Last store revision its controller applied.')
    networks: list[str] = Field(default=[], description='Networks its controller serves (caches).')
    routers: list[str] = Field(default=[], description='Routers its controller serves (caches).')

    def same_endpoint(self, other: 'Chassis') -> bool:
        """Whether tunnels to the two records are the same (heartbeats aside)."""
        return (self.tunnel_ip, self.tunnel_types) == (other.tunnel_ip, other.tunnel_types)


MODELS: dict[str, type[Model]] = {m.table: m for m in (Network, Subnet, Port, Router, Chassis)}


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


INTERNAL_MODELS: dict[str, type[Model]] = {m.table: m for m in (IPAllocation, MACAllocation, Fence)}


def model_for_table(table: str) -> type[Model]:
    return MODELS[table]
