"""What the apps see: the cached topology plus this chassis' VM interfaces, as one immutable
snapshot with the lookups the apps share."""
import dataclasses
import functools
import ipaddress
from typing import Optional

from dragonflow.controller.cache import is_local
from dragonflow.model import Chassis, FloatingIP, Network, Port, Router, Subnet
from dragonflow.model.objects import DEVICE_OWNER_CHASSIS_SNAT


@dataclasses.dataclass(frozen=True)
class RouterInterface:
    router: Router
    port: Port
    subnet: Subnet
    network: Network

    @property
    def ip(self) -> str:
        return next(f.ip_address for f in self.port.fixed_ips if f.subnet_id == self.subnet.id)


class _HeldExternalAddress:
    """An address of the cloud's on an external network that this chassis answers for and
    sends from (a floating IP, a router's gateway or distributed address): with ``own_port``
    (its MAC), ``external_network`` and ``external_subnet`` (whose gateway is the next hop)."""

    @property
    def mac(self) -> str:
        return self.own_port.mac_address

    @property
    def gateway(self) -> tuple[str, str]:
        """The upstream gateway as Topology.gateway_macs names it: external network id, IP."""
        return self.external_network.id, self.external_subnet.gateway_ip


@dataclasses.dataclass(frozen=True)
class LocalFloatingIP(_HeldExternalAddress):
    """A floating IP whose port is plugged on this chassis, with everything its NAT needs."""
    floating_ip: FloatingIP
    port: Port               # the VM's port, plugged here
    own_port: Port           # its network:floatingip port: the MAC it answers ARP with
    interface: RouterInterface  # of its router, on the subnet of the fixed IP
    external_network: Network
    external_subnet: Subnet  # the floating IP's; its gateway is the next hop out
    gateway_mac: Optional[str]  # the gateway's, once this chassis has learnt it
    nat_zone: Optional[int]  # its association's conntrack zone (nat_zones.py), once it has one

    @property
    def router(self) -> Router:
        return self.interface.router

    @property
    def address(self) -> str:
        return self.floating_ip.floating_ip_address

    @property
    def fixed_ip(self) -> str:
        return self.floating_ip.fixed_ip_address

    @property
    def association(self) -> tuple[str, str, str]:
        """What a NAT zone is allocated for: the floating IP, the port and the fixed IP it is
        associated with (a move to another port is a new association)."""
        return self.floating_ip.id, self.port.id, self.fixed_ip

    @property
    def zone_key(self) -> str:
        """Its NAT zone's key in Topology.nat_zones."""
        return self.floating_ip.id


@dataclasses.dataclass(frozen=True)
class RouterGateway:
    """A router's gateway as any chassis sees it: its network:router_gateway port (the
    gateway address and MAC), on an IPv4 subnet with a gateway of its external network."""
    router: Router
    port: Port
    external_network: Network
    external_subnet: Subnet
    interfaces: tuple  # the router's IPv4 interfaces (RouterInterface): what it SNATs

    @property
    def address(self) -> str:
        return _address_on(self.port, self.external_subnet)

    @property
    def mac(self) -> str:
        return self.port.mac_address

    @property
    def enable_snat(self) -> bool:
        return self.router.external_gateway_info.enable_snat

    @property
    def physical_networks(self) -> tuple:
        """The flat and VLAN networks behind the router, once each, in key order: their
        VMs reach the gateway over them (to its MAC), never through a tunnel."""
        networks = {i.network.id: i.network for i in self.interfaces if i.network.is_physical}
        return tuple(sorted(networks.values(), key=lambda n: n.key))


@dataclasses.dataclass(frozen=True)
class LocalGateway(_HeldExternalAddress):
    """A router whose traffic out without a floating IP leaves from this chassis: it holds
    the router's gateway (Topology.active_gateway), or, in distributed mode, has the router's
    network:chassis_snat port; with everything its SNAT (or its routing without NAT, for
    enable_snat=false) needs."""
    router_gateway: RouterGateway
    own_port: Port           # the gateway port, or this chassis' chassis_snat port
    external_subnet: Subnet  # the own port's address'; its gateway is the next hop out
    gateway_mac: Optional[str]  # the upstream gateway's, once this chassis has learnt it
    nat_zone: Optional[int]  # the router's SNAT zone here (nat_zones.py), once it has one

    @property
    def router(self) -> Router:
        return self.router_gateway.router

    @property
    def external_network(self) -> Network:
        return self.router_gateway.external_network

    @property
    def distributed(self) -> bool:
        """SNAT to this chassis' own address of the router's, for its own VMs only."""
        return self.own_port.id != self.router_gateway.port.id

    @property
    def enable_snat(self) -> bool:
        return self.router_gateway.enable_snat

    @property
    def address(self) -> str:
        """What the router's traffic leaves from: the gateway address or this chassis'."""
        return _address_on(self.own_port, self.external_subnet)

    @property
    def association(self) -> tuple[str, str, str]:
        """What a NAT zone is allocated for: the router, its address here and the port holding
        it (holding the gateway again after losing it, or another address, is a new one)."""
        return self.router.id, self.own_port.id, self.address

    @property
    def zone_key(self) -> str:
        """Its NAT zone's key in Topology.nat_zones (router and floating IP ids never meet)."""
        return self.router.id


@dataclasses.dataclass(frozen=True)
class Topology:
    chassis_id: str
    networks: dict[str, Network]
    subnets: dict[str, Subnet]
    ports: dict[str, Port]
    routers: dict[str, Router]
    chassis: dict[str, Chassis]
    ofports: dict[str, int]  # port id -> OpenFlow port number, for VMs plugged on this chassis
    tunnel_ofport: Optional[int] = None  # this chassis' tunnel port, when it has one
    security_groups: dict = dataclasses.field(default_factory=dict)
    security_group_rules: dict = dataclasses.field(default_factory=dict)
    revision: int = 0  # the store revision the objects are current at
    floating_ips: dict = dataclasses.field(default_factory=dict)
    # What this chassis has that the store does not say (from its OVSDB, config and packets):
    tunnel_ofports: dict = dataclasses.field(default_factory=dict)  # tunnel type -> ofport
    patch_ofports: dict = dataclasses.field(default_factory=dict)  # physnet -> br-int's patch
    router_mac: Optional[str] = None  # source MAC of routed frames sent on physical networks
    # (external network id, gateway IP) -> the gateway's MAC, learnt (neighbours.py)
    gateway_macs: dict = dataclasses.field(default_factory=dict)
    # floating IP id (an association's) or router id (its SNAT here) -> conntrack zone
    nat_zones: dict = dataclasses.field(default_factory=dict)
    # Gateway liveness (ovsdb.py, gateway_keeper.py): this chassis' BFD port to each peer it
    # runs a session with, and the peers whose session says forwarding now.
    liveness_ofports: dict = dataclasses.field(default_factory=dict)  # chassis id -> ofport
    live_peers: frozenset = frozenset()
    is_gateway: bool = False  # [controller] gateway
    uplinks_down: frozenset = frozenset()  # physnets whose provider bridge lost every uplink
    # The peers this chassis' BFD ports hold bfd:cpath_down towards (gateway_keeper.py):
    # they see it dead, so it must not act as alive for what they send.
    withdrawn_from: frozenset = frozenset()

    @classmethod
    def from_objects(cls, chassis_id: str, objects: dict, ofports: dict[str, int],
                     tunnel_ofport: Optional[int], revision: int = 0, **local) -> 'Topology':
        """From objects by table name (the cache's), copied so later changes stay out.
        ``local``: the fields of this chassis' own (tunnel_ofports, patch_ofports, ...)."""
        o = {table: dict(rows) for table, rows in objects.items()}
        return cls(chassis_id, o['networks'], o['subnets'], o['ports'], o['routers'],
                   o['chassis'], ofports, tunnel_ofport, o.get('security_groups', {}),
                   o.get('security_group_rules', {}), revision, o.get('floatingips', {}),
                   **local)

    def __hash__(self):
        return id(self)

    @functools.cached_property
    def _ports_by_network(self) -> dict[str, list[Port]]:
        index: dict[str, list[Port]] = {}
        for port in sorted(self.ports.values(), key=lambda p: p.key):
            index.setdefault(port.network_id, []).append(port)
        return index

    def ports_on(self, network_id: str) -> list[Port]:
        """Every port of the network, router interfaces included, in port key order."""
        return self._ports_by_network.get(network_id, [])

    def vm_ports_on(self, network_id: str) -> list[Port]:
        """The ports an interface may be plugged into: not router interfaces, gateways or
        floating IPs (Port.is_plugged_kind)."""
        return [p for p in self.ports_on(network_id) if p.is_plugged_kind]

    def local_ports(self) -> list[tuple[Port, int]]:
        """Ports plugged on this chassis that the store knows, with their OpenFlow port."""
        return self._local_ports

    @functools.cached_property
    def _local_ports(self) -> list[tuple[Port, int]]:
        return [(self.ports[pid], ofport) for pid, ofport in sorted(self.ofports.items())
                if pid in self.ports and self.ports[pid].network_id in self.networks]

    def local_port_ids(self) -> frozenset[str]:
        return self._local_port_ids

    @functools.cached_property
    def _local_port_ids(self) -> frozenset[str]:
        return frozenset(port.id for port, _ in self.local_ports())

    def local_network_ids(self) -> set[str]:
        """Networks with a local port (cache.is_local: plugged here, or bound here with its VM
        about to be plugged)."""
        return {port.network_id for port in self.ports.values()
                if port.network_id in self.networks
                and is_local(port, self.chassis_id, self.ofports.keys())}

    def port_at(self, ofport: int) -> Optional[Port]:
        """The local port plugged at an OpenFlow port number."""
        return self._ports_by_ofport.get(ofport)

    @functools.cached_property
    def _ports_by_ofport(self) -> dict[int, Port]:
        return {ofport: port for port, ofport in self.local_ports()}

    def remote_ports_on(self, network_id: str) -> list[tuple[Port, Chassis]]:
        """VM ports of the network bound to another chassis that we can tunnel to."""
        result = []
        for port in self.vm_ports_on(network_id):
            chassis = self.chassis.get(port.binding_host_id)
            if port.id not in self.ofports and chassis and chassis.id != self.chassis_id:
                result.append((port, chassis))
        return result

    def unbound_ports_on(self, network_id: str) -> list[Port]:
        """VM ports of the network neither plugged here nor bound to a chassis we know."""
        return [port for port in self.vm_ports_on(network_id)
                if port.id not in self.ofports and port.binding_host_id not in self.chassis]

    def rules_of(self, port: Port) -> list:
        """The rules of the port's security groups, in a stable order."""
        groups = set(port.security_groups)
        return sorted((r for r in self.security_group_rules.values()
                       if r.security_group_id in groups), key=lambda r: r.id)

    @functools.cached_property
    def _members(self) -> dict[str, list[str]]:
        members: dict[str, set] = {}
        for port in self.ports.values():
            addresses = set(ipv4_addresses(port)) | {
                str(ip_network(pair.ip_address))
                for pair in port.allowed_address_pairs
                if ip_network(pair.ip_address).version == 4}
            for group in port.security_groups:
                members.setdefault(group, set()).update(addresses)
        return {group: sorted(ips) for group, ips in members.items()}

    def members(self, group_id: str) -> list[str]:
        """IPv4 addresses (and allowed address pair prefixes, as Neutron counts them) of the
        ports in a security group, as far as this chassis knows them."""
        return self._members.get(group_id, [])

    def network_of(self, port: Port) -> Optional[Network]:
        return self.networks.get(port.network_id)

    def router_interfaces(self, router: Router) -> list[RouterInterface]:
        """The router's interfaces whose port, subnet and network are all known."""
        result = []
        for interface in router.interfaces:
            port = self.ports.get(interface.port_id)
            subnet = self.subnets.get(interface.subnet_id)
            network = self.networks.get(subnet.network_id) if subnet else None
            if port and subnet and network and \
                    any(f.subnet_id == subnet.id for f in port.fixed_ips):
                result.append(RouterInterface(router, port, subnet, network))
        return result

    def gateway_chassis(self, router: Router) -> tuple[str, ...]:
        """The router's gateway chassis whose records are known, in priority order."""
        return tuple(c for c in router.gateway_chassis if c in self.chassis)

    def can_hold_gateway(self, router: Router) -> bool:
        """Whether this chassis can hold the router's gateway now: it is configured as a
        gateway, listed as one of the router's, its external network is physical, on a
        physnet patched here whose uplink is not down, and it is not withdrawn from any of
        the router's senders (not ready yet, or waiting for its failback): those send to
        another gateway, and holding it here too (its ARP answers and gratuitous ARPs
        taking the address' MAC upstream) would take the replies of their connections."""
        gateway = router.external_gateway_info
        network = self.networks.get(gateway.network_id) if gateway else None
        return self.is_gateway and self.chassis_id in router.gateway_chassis and \
            network is not None and network.is_physical and \
            network.physical_network in self.patch_ofports and \
            network.physical_network not in self.uplinks_down and \
            self.withdrawn_from.isdisjoint(self.senders(router))

    def senders(self, router: Router) -> set[str]:
        """The peers that send the router's traffic out to its gateway chassis: its other
        gateway chassis and the chassis hosting its VMs."""
        peers = set(router.gateway_chassis)
        for interface in self.router_interfaces(router):
            peers.update(p.binding_host_id for p in self.vm_ports_on(interface.network.id))
        return peers - {self.chassis_id, '', None}

    def active_gateway(self, router: Router) -> Optional[str]:
        """The chassis holding the router's gateway as this chassis sees it: the first of its
        gateway_chassis that is this one (when it can hold it) or a live peer."""
        for chassis_id in router.gateway_chassis:
            if chassis_id == self.chassis_id:
                if self.can_hold_gateway(router):
                    return chassis_id
            elif chassis_id in self.live_peers:
                return chassis_id
        return None

    def liveness_peers(self) -> dict[str, str]:
        """The chassis this one runs BFD with (id -> tunnel IP): the gateway chassis of every
        router it knows with a gateway; and, for a router it is a gateway chassis of, the
        other gateway chassis and every chassis hosting the router's VM ports (they send to
        it, and see it alive only if it answers)."""
        return self._liveness_peers

    @functools.cached_property
    def _liveness_peers(self) -> dict[str, str]:
        peers: set[str] = set()
        for router in self.routers.values():
            if router.external_gateway_info is None:
                continue
            peers.update(router.gateway_chassis)
            if self.chassis_id in router.gateway_chassis:
                for interface in self.router_interfaces(router):
                    peers.update(p.binding_host_id for p in self.vm_ports_on(interface.network.id))
        peers.discard(self.chassis_id)
        return {c: self.chassis[c].tunnel_ip for c in sorted(peers) if c in self.chassis}

    def router_gateway(self, router: Router) -> Optional[RouterGateway]:
        """The router's gateway, if its port, the external network and an IPv4 subnet of it
        with a gateway IP holding the port's address are all known."""
        return self._router_gateways.get(router.id)

    @functools.cached_property
    def _router_gateways(self) -> dict[str, RouterGateway]:
        result = {}
        for router in self.routers.values():
            info = router.external_gateway_info
            port = self.ports.get(router.gateway_port_id) if info else None
            network = self.networks.get(info.network_id) if info else None
            subnet = self._external_subnet(port, network) if port and network else None
            if subnet is not None:
                interfaces = tuple(i for i in self.router_interfaces(router)
                                   if i.subnet.ip_version == 4)
                result[router.id] = RouterGateway(router, port, network, subnet, interfaces)
        return result

    def _external_subnet(self, port: Port, network: Network) -> Optional[Subnet]:
        """The IPv4 subnet with a gateway IP of ``network`` that holds the port's address."""
        for fixed in port.fixed_ips:
            subnet = self.subnets.get(fixed.subnet_id)
            if subnet is not None and subnet.network_id == network.id == port.network_id \
                    and subnet.ip_version == 4 and subnet.gateway_ip:
                return subnet
        return None

    def gateway_networks(self) -> set[str]:
        """The networks of the routers this chassis is a gateway chassis of: it may hold
        their gateway, so their VMs' traffic out may come to it through a tunnel."""
        return {i.network.id for router in self.routers.values()
                if router.external_gateway_info is not None
                and self.chassis_id in router.gateway_chassis
                for i in self.router_interfaces(router)}

    def chassis_snat_port(self, router: Router) -> Optional[Port]:
        """This chassis' network:chassis_snat port of the router (distributed mode), on the
        router's external network."""
        return self._chassis_snat_ports.get(router.id)

    @functools.cached_property
    def _chassis_snat_ports(self) -> dict[str, Port]:
        result = {}
        for port in sorted(self.ports.values(), key=lambda p: p.key):
            router = self.routers.get(port.device_id)
            if port.device_owner == DEVICE_OWNER_CHASSIS_SNAT and router is not None and \
                    port.binding_host_id == self.chassis_id and \
                    router.external_gateway_info is not None and \
                    port.network_id == router.external_gateway_info.network_id:
                result.setdefault(router.id, port)
        return result

    def held_gateways(self) -> list[str]:
        """The routers whose gateway this chassis holds now (ChassisStatus.active_gateways),
        in id order."""
        return [g.router.id for g in self.local_gateways() if not g.distributed]

    def local_gateway(self, router: Router) -> Optional[LocalGateway]:
        """The router's way out on this chassis, if it is here and ready: with its SNAT zone
        (none is needed for enable_snat=false)."""
        return self._local_gateways.get(router.id)

    def local_gateways(self) -> list[LocalGateway]:
        """Every router's way out on this chassis that is ready (local_gateway), in router
        id order."""
        return list(self._local_gateways.values())

    @functools.cached_property
    def _local_gateways(self) -> dict[str, LocalGateway]:
        return {g.router.id: g for g in self.gateway_associations()
                if g.nat_zone is not None or not g.enable_snat}

    def gateway_associations(self) -> list[LocalGateway]:
        """The routers whose traffic out leaves from this chassis, with or without a zone
        yet, in router id order: those it holds the gateway of (the first live of their
        gateway_chassis, as this chassis sees it), and, SNATing, those it has its own
        chassis_snat port of (distributed mode) on a physnet patched here. Holding the
        gateway wins: the gateway serves every chassis, its own VMs included."""
        return self._gateway_associations

    @functools.cached_property
    def _gateway_associations(self) -> list[LocalGateway]:
        result = []
        for router_id in sorted(self._router_gateways):
            found = self._local_gateway(self._router_gateways[router_id])
            if found is not None:
                result.append(found)
        return result

    def _local_gateway(self, gateway: RouterGateway) -> Optional[LocalGateway]:
        router, network = gateway.router, gateway.external_network
        own_port, subnet = None, None
        if self.active_gateway(router) == self.chassis_id:
            own_port, subnet = gateway.port, gateway.external_subnet
        elif gateway.enable_snat and self.chassis_snat_port(router) is not None and \
                network.is_physical and network.physical_network in self.patch_ofports and \
                network.physical_network not in self.uplinks_down:
            own_port = self.chassis_snat_port(router)
            subnet = self._external_subnet(own_port, network)
        if own_port is None or subnet is None:
            return None
        return LocalGateway(gateway, own_port, subnet,
                            self.gateway_macs.get((network.id, subnet.gateway_ip)),
                            self.nat_zones.get(router.id))

    def standby_gateways(self) -> list[LocalGateway]:
        """The routers whose gateway this chassis could hold now (can_hold_gateway) while a
        live peer ahead of it holds it, ready (with their SNAT zone, none needed for
        enable_snat=false), in router id order. Their SNAT is installed here beforehand
        (snat.py): a sender whose BFD sees the holder die sends here at once, before this
        chassis' own BFD and controller see it; only what answers for the address (ARP,
        ping, gratuitous ARPs, asking the upstream gateway from it) waits for that."""
        return [g for g in self.standby_associations()
                if g.nat_zone is not None or not g.enable_snat]

    def standby_associations(self) -> list[LocalGateway]:
        """standby_gateways with or without a zone yet. Their association is the active
        gateway's (router, gateway port, address): taking over keeps the zone and the
        connections the standby NATed meanwhile."""
        return self._standby_associations

    @functools.cached_property
    def _standby_associations(self) -> list[LocalGateway]:
        local = {g.router.id for g in self.gateway_associations()}
        result = []
        for router_id in sorted(self._router_gateways):
            gateway = self._router_gateways[router_id]
            router, network = gateway.router, gateway.external_network
            if router_id in local or not self.can_hold_gateway(router) or \
                    self.active_gateway(router) == self.chassis_id:
                continue
            subnet = gateway.external_subnet
            result.append(LocalGateway(gateway, gateway.port, subnet,
                                       self.gateway_macs.get((network.id, subnet.gateway_ip)),
                                       self.nat_zones.get(router.id)))
        return result

    def local_floating_ips(self) -> list[LocalFloatingIP]:
        """The floating IPs NATed here: those of floating_ip_associations() that have a NAT
        zone."""
        return self._local_floating_ips

    @functools.cached_property
    def _local_floating_ips(self) -> list[LocalFloatingIP]:
        return [fip for fip in self.floating_ip_associations() if fip.nat_zone is not None]

    def nat_associations(self) -> list:
        """What needs a conntrack zone of this chassis' (nat_zones.py allocates them), with
        or without one yet: the floating IP associations (floating_ip_associations), then
        the routers SNATing here (gateway_associations with enable_snat), then those it
        stands by for (standby_associations)."""
        return self.floating_ip_associations() + [
            g for g in self.gateway_associations() + self.standby_associations()
            if g.enable_snat]

    def floating_ip_associations(self) -> list[LocalFloatingIP]:
        """The floating IPs of the ports plugged here and bound nowhere else whose router,
        its interface on the fixed IP's subnet, the external network (physical, on a physnet
        this chassis is patched to) and subnet (with a gateway) are all known, with or
        without a NAT zone yet; in id order."""
        return self._nat_associations

    @functools.cached_property
    def _nat_associations(self) -> list[LocalFloatingIP]:
        result = []
        for fip in sorted(self.floating_ips.values(), key=lambda f: f.id):
            found = self._floating_ip(fip)
            if found is not None:
                result.append(found)
        return result

    def _floating_ip(self, fip: FloatingIP) -> Optional[LocalFloatingIP]:
        port, own_port = self.ports.get(fip.port_id), self.ports.get(fip.floating_port_id)
        router = self.routers.get(fip.router_id)
        network = self.networks.get(fip.floating_network_id)
        # Plugged here but bound to another chassis: a live migration's destination before
        # the switchover, and only the source may answer for the floating IP until then.
        # Plugged and not bound yet is local: this controller binds it next.
        if port is None or own_port is None or router is None or network is None or \
                fip.port_id not in self.local_port_ids() or not fip.fixed_ip_address or \
                port.binding_host_id not in (None, '', self.chassis_id) or \
                router.external_gateway_info is None or \
                router.external_gateway_info.network_id != network.id or \
                not network.is_physical or network.physical_network not in self.patch_ofports:
            return None
        fixed_subnet = next((f.subnet_id for f in port.fixed_ips
                             if f.ip_address == fip.fixed_ip_address), None)
        interface = next((i for i in self.router_interfaces(router)
                          if i.subnet.id == fixed_subnet and i.subnet.ip_version == 4), None)
        subnet = next((self.subnets[f.subnet_id] for f in own_port.fixed_ips
                       if f.ip_address == fip.floating_ip_address
                       and f.subnet_id in self.subnets), None)
        if interface is None or subnet is None or subnet.network_id != network.id or \
                not subnet.gateway_ip or subnet.ip_version != 4:
            return None
        return LocalFloatingIP(fip, port, own_port, interface, network, subnet,
                               self.gateway_macs.get((network.id, subnet.gateway_ip)),
                               self.nat_zones.get(fip.id))


def _address_on(port: Port, subnet: Subnet) -> str:
    return next(f.ip_address for f in port.fixed_ips if f.subnet_id == subnet.id)


def ipv4_addresses(port: Port) -> list[str]:
    return [f.ip_address for f in port.fixed_ips if ip_address(f.ip_address).version == 4]


# Every pass asks again about the same addresses and prefixes: parsing them was a fifth of the
# apps' time. The objects are immutable, so one parse serves every pass.
@functools.lru_cache(maxsize=1 << 16)
def ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@functools.lru_cache(maxsize=1 << 16)
def ip_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A prefix; host bits may be set (allowed address pairs, extra routes)."""
    return ipaddress.ip_network(text, strict=False)
