"""The controller's selective copy of the northbound objects.

A chassis keeps only what it needs (DESIGN: "it grows with what is local, not with the
deployment"): the networks with a port on this chassis (plugged here, or bound here: Nova
binds a port before it plugs the VM), the routers on those networks, the
networks those routers connect, the subnets and ports of all these networks, and the chassis
hosting those ports; the security groups of its ports with their rules, the groups those
rules name as remote, and the ports that are members of those (for their addresses).
North-south: the floating IPs of its local ports (with their own network:floatingip ports),
and the external networks of its routers that have a gateway, with their subnets (the
gateway IP) and those routers' gateway ports, but not the rest of the external networks'
ports: an external network is shared by every project, its ports grow with the deployment.
SNAT: the routers this chassis is a gateway chassis of (in their gateway_chassis), local
VMs or not, with everything they connect as above (it may hold their gateway, and route
the replies to their VMs wherever they are); the chassis records of the gateway chassis of
every router in scope (where their traffic out goes, and whom to run BFD with); and this
chassis' own network:chassis_snat ports (distributed mode), not their whole network: a port
that is never plugged (NOT_PLUGGED_OWNERS) does not make its network local by being bound
here.

The store's change log brings every change; ``apply`` keeps those in scope and drops the rest.
When a change, or a VM plugged here, widens the scope to objects the cache never kept (a new
local network, a router interface to a network we did not have), ``needs_refill`` is raised and
the controller reloads the scope from a store snapshot. When the scope narrows, the objects
that fell out are evicted at once.
"""
import dataclasses
import threading
from typing import Callable, Optional

from dragonflow.model import (
    MODELS,
    Chassis,
    FloatingIP,
    Model,
    Network,
    Port,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    StatusReport,
    Subnet,
)
from dragonflow.model.objects import DEVICE_OWNER_CHASSIS_SNAT, STATUS_BY_CHASSIS
from dragonflow.store import api


@dataclasses.dataclass(frozen=True)
class Scope:
    networks: frozenset
    routers: frozenset
    chassis: frozenset
    missing: bool  # the scope names objects the given objects do not include
    security_groups: frozenset = frozenset()  # of local ports, and the groups their rules name
    local_groups: frozenset = frozenset()     # of local ports: their rules are needed
    remote_groups: frozenset = frozenset()    # named by those rules: their members are needed
    floating_ips: frozenset = frozenset()     # of local ports
    # External networks of the routers in scope, kept with their subnets but only the ports
    # named in ``ports`` (gateway and floating IP ports), not every port on them.
    external_networks: frozenset = frozenset()
    ports: frozenset = frozenset()            # kept whatever their network
    chassis_id: str = ''                      # this chassis: its own status reports are kept


# What changes in a resource without changing any flow: names, descriptions, timestamps, and
# the status a controller reports (a port going ACTIVE is news for the API, not for the flows).
BOOKKEEPING = frozenset({'name', 'description', 'tags', 'created_at', 'updated_at', 'status'})


# Tables the scope is not computed from: the chassis records (a chassis registering costs no
# scope computation) and the status reports.
NOT_SCOPE_INPUTS = frozenset({Chassis.table, StatusReport.table})


def same_for_data_plane(old: Model, new: Model) -> bool:
    if isinstance(old, Chassis):
        return old.same_endpoint(new)
    return old.model_dump(exclude=BOOKKEEPING) == new.model_dump(exclude=BOOKKEEPING)


def is_local(port: Port, chassis_id: str, local_port_ids: set[str]) -> bool:
    """Plugged here, or bound here: by Nova, which binds a port before it plugs the VM (so
    the port's network is served, and its packets held, before the plug), or still after an
    unplug, until this controller reports the port DOWN and unbound. A port no VM is ever
    plugged into (a chassis_snat port is bound to its chassis) is not local."""
    return port.id in local_port_ids or \
        port.binding_host_id == chassis_id and port.is_plugged_kind


def is_own_address(port: Port, chassis_id: str) -> bool:
    """This chassis' own address on an external network (distributed SNAT)."""
    return port.device_owner == DEVICE_OWNER_CHASSIS_SNAT and port.binding_host_id == chassis_id


def scope_of(objects: dict[str, dict[str, Model]], chassis_id: str,
             local_port_ids: set[str], unknown_port_ids=frozenset()) -> Scope:
    """What this chassis needs, computed from ``objects`` (everything, or what is cached).

    ``unknown_port_ids``: plugged interfaces naming ports the store did not have at the last
    refill; they do not count as missing again (their creation arrives as an event)."""
    ports, subnets = objects[Port.table], objects[Subnet.table]
    local_ports = {p.id for p in ports.values() if is_local(p, chassis_id, local_port_ids)}
    local = {ports[p].network_id for p in local_ports}
    missing = any(pid not in ports and pid not in unknown_port_ids for pid in local_port_ids)
    floating_ips = {f.id for f in objects[FloatingIP.table].values()
                    if f.port_id in local_ports}
    fip_routers = {objects[FloatingIP.table][f].router_id for f in floating_ips} - {None}
    routers = set()
    networks = set(local)
    for router in objects[Router.table].values():
        interface_subnets = [subnets.get(i.subnet_id) for i in router.interfaces]
        if router.id in fip_routers or chassis_id in router.gateway_chassis or \
                any(s is not None and s.network_id in local for s in interface_subnets):
            routers.add(router.id)
            missing |= None in interface_subnets
            networks |= {s.network_id for s in interface_subnets if s is not None}
    missing |= bool(fip_routers - set(objects[Router.table]))
    external, extra_ports = _north_south(objects, routers, floating_ips)
    missing |= any(n not in objects[Network.table] for n in networks | external)
    missing |= any(p not in ports for p in extra_ports)
    extra_ports |= {p.id for p in ports.values() if is_own_address(p, chassis_id)}
    hosts = {p.binding_host_id for p in ports.values() if p.network_id in networks}
    hosts |= {c for r in routers for c in objects[Router.table][r].gateway_chassis}
    local_groups = {g for p in local_ports for g in ports[p].security_groups}
    remote_groups = {r.remote_group_id for r in objects[SecurityGroupRule.table].values()
                     if r.security_group_id in local_groups and r.remote_group_id}
    groups = local_groups | remote_groups
    missing |= any(g not in objects[SecurityGroup.table] for g in groups)
    return Scope(frozenset(networks), frozenset(routers), frozenset(hosts | {chassis_id}),
                 missing, frozenset(groups), frozenset(local_groups), frozenset(remote_groups),
                 frozenset(floating_ips), frozenset(external - networks),
                 frozenset(extra_ports), chassis_id)


def _north_south(objects, routers: set, floating_ips: set) -> tuple[set, set]:
    """The external networks of the routers in scope (and of the floating IPs), and the
    ports kept on them: the routers' gateway ports and the floating IPs' own ports."""
    external, extra_ports = set(), set()
    for router_id in routers:
        router = objects[Router.table].get(router_id)
        if router is not None and router.external_gateway_info is not None:
            external.add(router.external_gateway_info.network_id)
            if router.gateway_port_id:
                extra_ports.add(router.gateway_port_id)
    for fip in (objects[FloatingIP.table][f] for f in floating_ips):
        external.add(fip.floating_network_id)
        extra_ports.add(fip.floating_port_id)
    return external, extra_ports


def in_scope(scope: Scope, table: str, obj: Model) -> bool:
    if table == Network.table:
        return obj.id in scope.networks or obj.id in scope.external_networks
    if table == Subnet.table:
        return obj.network_id in scope.networks or obj.network_id in scope.external_networks
    if table == Port.table:  # on a network we serve, named, or a member of a group a rule names
        return obj.network_id in scope.networks or obj.id in scope.ports or \
            not scope.remote_groups.isdisjoint(obj.security_groups)
    if table == FloatingIP.table:
        return obj.id in scope.floating_ips
    if table == SecurityGroup.table:
        return obj.id in scope.security_groups
    if table == SecurityGroupRule.table:
        return obj.security_group_id in scope.local_groups
    if table == Router.table:
        return obj.id in scope.routers
    if table == Chassis.table:
        return obj.id in scope.chassis
    if table == StatusReport.table:  # what this chassis said last (reports.py), nobody else's
        return obj.chassis == scope.chassis_id
    return False


class Cache:
    """Objects in scope by table and id, plus the store revision they are current at.
    ``lock`` guards it between the threads that share it: the store watcher (which writes),
    the flow loop and the reporter."""

    def __init__(self, chassis_id: str):
        self.lock = threading.Lock()
        self.chassis_id = chassis_id
        self.loaded = False  # once a snapshot has been loaded: before, it knows nothing
        # The revision of the last change that changed the topology the apps see: flows
        # built at or after it are current for every later revision too.
        self.relevant_revision = 0
        self.local_port_ids: set[str] = set()
        self.objects: dict[str, dict[str, Model]] = {table: {} for table in MODELS}
        self.revision = 0
        self.needs_refill = True
        self.unknown_port_ids: frozenset = frozenset()
        # The scope depends on everything but the chassis records: kept until something
        # else changes, so that a chassis registering costs no scope computation.
        self._kept_scope: Optional[Scope] = None
        # Called (under the lock) when a port or floating IP whose status is reported
        # (status_source 'report') changes, even in a way no flow sees: each new revision
        # needs a report of its own (controller/reports.py sets it).
        self.on_status_input: Callable[[], None] = lambda: None

    def load(self, revision: int, records: list[api.Record]) -> None:
        """Replace everything with the scope selected from a full snapshot."""
        everything = {table: {} for table in MODELS}
        for record in records:
            model = MODELS.get(record.table)
            if model is not None:  # tables the controller does not use (IPAM) are skipped
                everything[record.table][record.id] = model.from_doc(record.value,
                                                                     record.revision)
        scope = scope_of(everything, self.chassis_id, self.local_port_ids)
        self.objects = {table: {i: o for i, o in rows.items() if in_scope(scope, table, o)}
                        for table, rows in everything.items()}
        self.revision = revision
        self.relevant_revision = revision
        self.loaded = True
        self.needs_refill = False
        self.unknown_port_ids = frozenset(self.local_port_ids - set(everything[Port.table]))
        self._kept_scope = None

    def apply(self, events: list[api.Event]) -> bool:
        """Apply a batch of whole commits; commits older than the cache are skipped (a
        refill may have loaded a newer snapshot while the batch was read). True when the
        topology the apps see changed (not by a status report alone)."""
        current = self.revision
        fresh = [e for e in events if e.revision > current and e.table in MODELS]
        changed = False
        for event in fresh:
            changed |= self._apply(event)
        if events:
            self.revision = max(current, events[-1].revision)
        if any(e.table not in NOT_SCOPE_INPUTS for e in fresh):
            changed |= self._rescope()
        if changed:
            self.relevant_revision = self.revision
        return changed

    def set_local_ports(self, port_ids: set[str]) -> None:
        """The VM interfaces plugged on this chassis changed (OVSDB)."""
        if port_ids != self.local_port_ids:
            self.local_port_ids = set(port_ids)
            self._kept_scope = None
            self._rescope()

    def written(self, obj: Model) -> bool:
        """This controller just wrote ``obj``: keep it now, so that its change event, when
        the watcher brings it, changes nothing. True when that narrowed the scope (a port
        reported DOWN was the last reason to keep its network): the flows must follow."""
        rows = self.objects[obj.table]
        old = rows.get(obj.id)
        if old is None or old.revision >= obj.revision:
            return False
        rows[obj.id] = obj
        self._changed_scope_input(obj.table)
        narrowed = self._rescope()
        if narrowed:  # the pass this wakes builds from the cache as it is now
            self.relevant_revision = max(self.relevant_revision, self.revision)
        return narrowed

    def _apply(self, event: api.Event) -> bool:
        rows = self.objects[event.table]
        if event.table == StatusReport.table:  # kept for the reporter; no flow depends on it
            self._keep_report(event)
            return False
        if event.deleted:
            old = rows.pop(event.id, None)
            if old is None:
                return False
            self._status_input(old)
            self._changed_scope_input(event.table)
            return True
        old = rows.get(event.id)
        if old is not None and old.revision == event.revision:
            return False  # written here, already kept
        obj = MODELS[event.table].from_doc(event.value, event.revision)
        if old is None and not self._widens(event.table, obj) and \
                not in_scope(self._scope(), event.table, obj):
            return False
        rows[event.id] = obj
        self._status_input(obj)
        self._changed_scope_input(event.table)
        return old is None or not same_for_data_plane(old, obj)

    def _status_input(self, obj: Model) -> None:
        if getattr(obj, 'status_source', STATUS_BY_CHASSIS) != STATUS_BY_CHASSIS:
            self.on_status_input()

    def _keep_report(self, event: api.Event) -> None:
        rows = self.objects[StatusReport.table]
        if event.deleted:
            rows.pop(event.id, None)
            return
        report = StatusReport.from_doc(event.value, event.revision)
        if report.chassis == self.chassis_id:
            rows[event.id] = report

    def _changed_scope_input(self, table: str) -> None:
        if table not in NOT_SCOPE_INPUTS:
            self._kept_scope = None

    def _widens(self, table: str, obj: Model) -> bool:
        """A new object that may pull more into scope: a port that is ours (or our own
        address), a router with an interface on a subnet we have or with this chassis among
        its gateway chassis, a floating IP of a port of ours."""
        if table == Port.table:
            return is_local(obj, self.chassis_id, self.local_port_ids) or \
                is_own_address(obj, self.chassis_id)
        if table == Router.table:
            return self.chassis_id in obj.gateway_chassis or \
                any(i.subnet_id in self.objects[Subnet.table] for i in obj.interfaces)
        if table == FloatingIP.table:
            port = self.objects[Port.table].get(obj.port_id)
            return port is not None and is_local(port, self.chassis_id, self.local_port_ids)
        return False

    def missing_chassis(self) -> set[str]:
        """Hosts of cached ports whose chassis record is not cached (fetched one by one)."""
        return set(self._scope().chassis) - set(self.objects[Chassis.table]) - {''}

    def add(self, obj: Model) -> None:
        self.objects[obj.table][obj.id] = obj
        self.relevant_revision = self.revision

    def _scope(self) -> Scope:
        if self._kept_scope is None:
            self._kept_scope = scope_of(self.objects, self.chassis_id, self.local_port_ids,
                                        self.unknown_port_ids)
        return self._kept_scope

    def _rescope(self) -> bool:
        """Evict what fell out of scope (True if anything did); flag a refill if the scope
        names objects the cache does not have."""
        scope = self._scope()
        evicted = False
        for table, rows in self.objects.items():
            for obj_id in [i for i, o in rows.items() if not in_scope(scope, table, o)]:
                del rows[obj_id]
                evicted = True
        if evicted:
            self._kept_scope = None
        if scope.missing:
            self.needs_refill = True
        return evicted
