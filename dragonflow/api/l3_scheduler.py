"""Where routers SNAT: their gateway chassis, and in distributed mode their chassis SNAT ports.

**Gateway chassis.** A router with a gateway on an external network of physnet P may have its
gateway held by any chassis whose record says ``gateway`` and lists P in
``physical_networks`` (an external network that is no flat or VLAN network has no physnet,
hence no candidate: the outside is reached where the physical network is). ``candidates()``
orders them least-loaded first: chassis alive now (their heartbeat, Store.heartbeats()) before
silent ones, then by how many routers have the chassis first in their list (the ones it holds
while everything is up), then by how many list it at all, then by id; so two routers with the
same two candidates get different first chassis. The router handler writes the whole list in
the commit that sets the gateway, and clears it with the gateway; a router keeping its
external network keeps its list.

A list is never reordered once made: its first live chassis holds the gateway, and moving it
would move the traffic (a chassis that comes back moves itself to the end of lists, see
controller/gateway_keeper.py). The job below only appends the candidates a list lacks (a new
gateway chassis; the live ones first) and drops entries of chassis that can no longer hold it
(their record gone, not a gateway any more, or without the physnet): none of those can be
the one holding it, so dropping them moves nothing, and the others keep their order.

**Chassis SNAT ports** (``[l3] snat_mode = distributed``). A router with a gateway and
enable_snat gets one ``network:chassis_snat`` port per chassis that hosts a VM port
(binding:host_id) on one of the router's interface networks and maps the external network's
physnet: device_id = the router, binding:host_id = the chassis, an IPv4 address of the
external network (IPAM, as for gateway ports) and a MAC, no project (as gateway ports, shown
to admins only). That chassis SNATs the router's VMs there to that address. Its id is
derived from (router, chassis), and it is created only if absent, so df-api processes
running this at once never make two. The ports go when no longer needed (the VMs gone, the
gateway cleared or moved, enable_snat off, the mode back to ``gateway``, the router deleted).

**The job** (``Scheduler``, a thread of every df-api process, started and stopped with the
app like the compactor). It keeps a view of routers, ports, chassis and networks from a
snapshot, follows the change log from its revision (``Store.changes``/``wait``, the
primitives ``Store.watch`` is made of, so that it also wakes for the periodic pass) and
reconsiders the routers each change may concern; every ``[l3] schedule_interval`` seconds,
and at start, it reconsiders every router (liveness, which orders new candidates, is not in
the log; an address that was lacking may be free again). Decisions come from the view; each
write is a plan over a fresh Txn (txn.run): the router written at the revision read, a port
created only if absent and only while its router is what the plan read, a port deleted at
its revision. A write that loses a race is re-planned from fresh reads, so any number of
df-api processes may run this at once. Level-triggered: a pass computes what should be from
the current state, whatever woke it; one bad object is logged and the pass goes on.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
import uuid
from typing import Callable, Iterable, Optional

from dragonflow.api import errors
from dragonflow.api import txn as txns
from dragonflow.api.handlers.networks import subnets_of
from dragonflow.api.handlers.ports import create_service_port, release
from dragonflow.model import Chassis, Network, Port, Router
from dragonflow.model.objects import DEVICE_OWNER_CHASSIS_SNAT
from dragonflow.store import api

LOG = logging.getLogger(__name__)
POLL = 1.0  # seconds the job waits for changes at most: how soon it sees a stop
BACKOFF = (0.5, 10.0)  # seconds: the first pause after a failed round, the longest
TABLES = (Router.table, Port.table, Chassis.table, Network.table)
# Chassis SNAT port ids: uuid5 of '<router id>/<chassis id>' in this namespace.
SNAT_PORT_NAMESPACE = uuid.UUID('6f1d0c8e-2b7a-5c43-9e61-d4a0b1f35c27')


def snat_port_id(router_id: str, chassis_id: str) -> str:
    """The id of the router's chassis SNAT port on that chassis: the same in every df-api."""
    return str(uuid.uuid5(SNAT_PORT_NAMESPACE, f'{router_id}/{chassis_id}'))


def physnet_of(network: Optional[Network]) -> Optional[str]:
    """The physnet an external network reaches the outside on (None: no flat/VLAN one)."""
    return network.physical_network if network is not None and network.is_physical else None


def can_hold(chassis: Optional[Chassis], physnet: Optional[str]) -> bool:
    """Whether the chassis is a gateway candidate for an external network of ``physnet``."""
    return chassis is not None and chassis.gateway and physnet is not None and \
        physnet in chassis.physical_networks


class Load:
    """How loaded each chassis is as a gateway: how many routers have it first in their
    gateway_chassis, and how many list it at all."""

    def __init__(self, routers: Iterable[Router] = ()):
        self.first: collections.Counter = collections.Counter()
        self.listed: collections.Counter = collections.Counter()
        for router in routers:
            self.add(router.gateway_chassis)

    def add(self, chassis_ids: list[str], sign: int = 1) -> None:
        if chassis_ids:
            self.first[chassis_ids[0]] += sign
        for chassis_id in set(chassis_ids):
            self.listed[chassis_id] += sign

    def replace(self, old: list[str], new: list[str]) -> None:
        self.add(old, -1)
        self.add(new)

    def key(self, chassis_id: str, live: set[str], own: list[str]) -> tuple:
        """The sort key of a candidate for a router whose list is ``own`` (not counted)."""
        first = self.first[chassis_id] - (1 if own and own[0] == chassis_id else 0)
        listed = self.listed[chassis_id] - (1 if chassis_id in own else 0)
        return chassis_id not in live, first, listed, chassis_id


def candidates(chassis: Iterable[Chassis], physnet: Optional[str], load: Load,
               live: set[str], own: list[str] = ()) -> list[str]:
    """The gateway candidates for an external network of ``physnet``, least-loaded first."""
    ids = [c.id for c in chassis if can_hold(c, physnet)]
    return sorted(ids, key=lambda c: load.key(c, live, list(own)))


def extended(current: list[str], ordered: list[str]) -> list[str]:
    """``current`` without the chassis that are no candidate any more (``ordered`` are all the
    candidates, in the order new ones go in), then the candidates it lacks: never reordered."""
    kept = [c for i, c in enumerate(current) if c in ordered and c not in current[:i]]
    return kept + [c for c in ordered if c not in kept]


@dataclasses.dataclass
class View:
    """What the scheduler decides from: the objects of TABLES as of ``revision``, with the
    indexes it needs (VM hosts per network, chassis SNAT ports per router)."""
    revision: int = 0
    objects: dict = dataclasses.field(default_factory=lambda: {t: {} for t in TABLES})
    # network id -> Counter of the chassis hosting its VM ports (binding:host_id)
    hosts: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(
        collections.Counter))
    # router id -> {port id: its network:chassis_snat ports}
    snat_ports: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(dict))

    @classmethod
    def of(cls, revision: int, records: list[api.Record]) -> View:
        view = cls(revision=revision)
        for record in records:
            if record.table in TABLES:
                view.put(record.table, record.id, record.value, record.revision)
        return view

    @property
    def routers(self) -> dict[str, Router]:
        return self.objects[Router.table]

    @property
    def ports(self) -> dict[str, Port]:
        return self.objects[Port.table]

    @property
    def chassis(self) -> dict[str, Chassis]:
        return self.objects[Chassis.table]

    @property
    def networks(self) -> dict[str, Network]:
        return self.objects[Network.table]

    def put(self, table: str, id: str, value: Optional[dict], revision: int):
        """Replace (``value`` None: remove) one object; the old version, or None."""
        objects = self.objects[table]
        old = objects.pop(id, None)
        if table == Port.table and old is not None:
            self._index_port(old, -1)
        if value is None:
            return old
        try:
            new = model_of(table).from_doc(value, revision)
        except ValueError as e:  # pydantic's ValidationError: left out, the rest goes on
            LOG.warning('%s/%s is unreadable, not scheduled: %s', table, id, e)
            return old
        objects[id] = new
        if table == Port.table:
            self._index_port(new, 1)
        return old

    def _index_port(self, port: Port, sign: int) -> None:
        if port.device_owner == DEVICE_OWNER_CHASSIS_SNAT:
            ports = self.snat_ports[port.device_id]
            if sign > 0:
                ports[port.id] = port
            else:
                ports.pop(port.id, None)
            if not ports:
                del self.snat_ports[port.device_id]
        elif port.is_plugged_kind and port.binding_host_id:
            hosts = self.hosts[port.network_id]
            hosts[port.binding_host_id] += sign
            if hosts[port.binding_host_id] <= 0:
                del hosts[port.binding_host_id]
            if not hosts:
                del self.hosts[port.network_id]

    def apply(self, events: list[api.Event]) -> set[str]:
        """Apply changes; the ids of the routers they may concern."""
        routers, networks, chassis_changed = set(), set(), False
        for event in events:
            if event.table not in TABLES:
                continue
            old = self.put(event.table, event.id, event.value, event.revision)
            new = self.objects[event.table].get(event.id)
            if event.table == Router.table:
                routers.add(event.id)
            elif event.table == Chassis.table:
                chassis_changed = True
            elif event.table == Network.table:
                networks.add(event.id)
            else:
                routers.update(p.device_id for p in (old, new)
                               if p is not None and p.device_owner == DEVICE_OWNER_CHASSIS_SNAT)
                if _host(old) != _host(new):
                    networks.update(p.network_id for p in (old, new) if p is not None)
        if chassis_changed:
            routers.update(r.id for r in self.routers.values() if r.external_gateway_info
                           or r.gateway_chassis)
        if networks:
            routers.update(r.id for r in self.routers.values()
                           if networks & ({r.external_gateway_info.network_id}
                                          if r.external_gateway_info else set())
                           or networks & self.interface_networks(r))
        self.revision = events[-1].revision if events else self.revision
        return routers

    def interface_networks(self, router: Router) -> set[str]:
        return {p.network_id for i in router.interfaces
                if (p := self.ports.get(i.port_id)) is not None}

    def snat_chassis(self, router: Optional[Router]) -> set[str]:
        """The chassis that should have a chassis SNAT port of ``router`` (distributed)."""
        gateway = router.external_gateway_info if router is not None else None
        if gateway is None or not gateway.enable_snat:
            return set()
        physnet = physnet_of(self.networks.get(gateway.network_id))
        hosts = set()
        for network_id in self.interface_networks(router):
            hosts.update(self.hosts.get(network_id, ()))
        return {h for h in hosts if (c := self.chassis.get(h)) is not None
                and physnet is not None and physnet in c.physical_networks}


def _host(port: Optional[Port]) -> Optional[tuple]:
    """What of a port decides where SNAT ports are needed."""
    if port is None or not port.is_plugged_kind or not port.binding_host_id:
        return None
    return port.network_id, port.binding_host_id


def model_of(table: str):
    return {m.table: m for m in (Router, Port, Chassis, Network)}[table]


class Scheduler:
    """Keeps gateway_chassis lists complete and chassis SNAT ports as needed (see above)."""

    def __init__(self, store: api.Store, conf, clock: Callable[[], float] = time.monotonic):
        self.store, self.conf, self.clock = store, conf, clock
        self.distributed = conf.l3.snat_mode == 'distributed'
        self.interval = conf.l3.schedule_interval
        self.view: Optional[View] = None
        self.writes = 0  # commits this scheduler made (tests, logs)
        self._failing: dict[str, str] = {}  # what failed last time -> why
        self.busy = threading.Lock()  # held by a round (see run)

    # One round

    def resync(self) -> None:
        """A fresh view from a snapshot (at start, and after the log was compacted past it)."""
        self.view = View.of(*self.store.snapshot())

    def follow(self) -> Optional[set[str]]:
        """The routers the changes after the view's revision may concern; None when there
        is no change yet (then wait for one: ``store.wait(view.revision, ...)``)."""
        events = self.store.changes(self.view.revision)
        return self.view.apply(events) if events else None

    def schedule(self, router_ids: Iterable[str]) -> None:
        """Reconsider these routers (ids of routers gone included: their ports go)."""
        live = set(self.store.heartbeats())
        load = Load(self.view.routers.values())
        for router_id in sorted(set(router_ids)):
            try:
                self.schedule_router(router_id, live, load)
            except api.Unavailable:
                raise  # not this router's trouble: the round is retried after a pause
            except (api.StoreError, errors.NeutronError) as e:
                LOG.warning('router %s not scheduled now: %s', router_id, e)
            except Exception:
                LOG.exception('router %s not scheduled now', router_id)

    def schedule_router(self, router_id: str, live: set[str], load: Load) -> None:
        router = self.view.routers.get(router_id)
        if router is not None and self._wanted(router, live, load) != router.gateway_chassis:
            self._write_gateway_chassis(router_id, live, load)
        self._place_snat_ports(router_id)

    def everything(self) -> set[str]:
        """Every router, and the routers of every chassis SNAT port (gone ones included)."""
        return set(self.view.routers) | set(self.view.snat_ports)

    # Gateway chassis

    def _wanted(self, router: Router, live: set[str], load: Load) -> list[str]:
        gateway = router.external_gateway_info
        if gateway is None:
            return []  # the handler clears the list with the gateway; a leftover goes too
        physnet = physnet_of(self.view.networks.get(gateway.network_id))
        counted = self.view.routers.get(router.id, router).gateway_chassis  # its part of load
        ordered = candidates(self.view.chassis.values(), physnet, load, live, counted)
        return extended(router.gateway_chassis, ordered)

    def _write_gateway_chassis(self, router_id: str, live: set[str], load: Load) -> None:
        def plan(txn, keys):
            router = txn.get(Router, router_id)
            if router is None:
                return None
            wanted = self._wanted(router, live, load)
            if wanted != router.gateway_chassis:
                txn.update(router.model_copy(update={'gateway_chassis': wanted}))
                return router, wanted
            return router, None
        result, revision = txns.run(self.store, plan)
        if result is None:
            return
        router, wanted = result
        if wanted is not None:
            LOG.info('router %s: gateway chassis %s (were %s)', router_id, wanted,
                     router.gateway_chassis)
            self.writes += 1
            load.replace(router.gateway_chassis, wanted)
            router = router.model_copy(update={'gateway_chassis': wanted,
                                               'revision': revision})
        else:
            load.replace(self.view.routers[router_id].gateway_chassis, router.gateway_chassis)
        self.view.routers[router_id] = router  # what it is now, before the log says so

    # Chassis SNAT ports

    def _place_snat_ports(self, router_id: str) -> None:
        router = self.view.routers.get(router_id)
        needed = self.view.snat_chassis(router) if self.distributed else set()
        network_id = router.external_gateway_info.network_id if needed else None
        have = dict(self.view.snat_ports.get(router_id, {}))
        for port in have.values():
            if port.binding_host_id not in needed or port.network_id != network_id or \
                    port.id != snat_port_id(router_id, port.binding_host_id):
                self._guarded(f'removing SNAT port {port.id} of router {router_id}',
                              self._delete_snat_port, port)
        placed = {p.binding_host_id for p in self.view.snat_ports.get(router_id, {}).values()}
        for chassis_id in sorted(needed - placed):
            self._guarded(f'a SNAT port of router {router_id} on chassis {chassis_id}',
                          self._create_snat_port, router_id, chassis_id, network_id)

    def _guarded(self, what: str, write, *args) -> None:
        """One port's write: its failure is logged (again only when it changes: each pass
        tries again) and the others go on."""
        try:
            write(*args)
        except api.Unavailable:
            raise
        except (api.StoreError, errors.NeutronError) as e:
            if self._failing.get(what) != str(e):
                LOG.warning('%s: not now: %s', what, e)
            self._failing[what] = str(e)
        else:
            self._failing.pop(what, None)

    def _create_snat_port(self, router_id: str, chassis_id: str, network_id: str) -> None:
        port_id = snat_port_id(router_id, chassis_id)

        def plan(txn, keys):
            router = txn.get(Router, router_id)
            gateway = router.external_gateway_info if router is not None else None
            if gateway is None or not gateway.enable_snat or gateway.network_id != network_id:
                return None  # changed meanwhile: the change's own round decides
            txn.require(router)
            if txn.get(Port, port_id) is not None:
                return None  # another df-api made it
            network = txn.get(Network, network_id)
            subnets = [s for s in subnets_of(txn, network_id) if s.ip_version == 4]
            if network is None or not subnets:
                return None
            return create_service_port(txn, keys, self.conf, network,
                                       DEVICE_OWNER_CHASSIS_SNAT, router_id, port_id=port_id,
                                       subnets=subnets, host=chassis_id)
        port, revision = txns.run(self.store, plan)
        if port is not None:
            self.writes += 1
            LOG.info('router %s: SNAT port %s on chassis %s (%s)', router_id, port.id,
                     chassis_id, ', '.join(f.ip_address for f in port.fixed_ips))
            self.view.put(Port.table, port.id, port.to_doc(), revision)

    def _delete_snat_port(self, port: Port) -> None:
        def plan(txn, keys):
            current = txn.get(Port, port.id)
            if current is None or current.device_owner != DEVICE_OWNER_CHASSIS_SNAT:
                return None
            release(txn, current)
            return current
        gone, _ = txns.run(self.store, plan)
        if gone is not None:
            self.writes += 1
            LOG.info('router %s: SNAT port %s on chassis %s removed', gone.device_id, gone.id,
                     gone.binding_host_id)
        self.view.put(Port.table, port.id, None, 0)

    # The thread

    def run(self, stop: threading.Event) -> None:
        """Rounds until ``stop`` is set: a full pass at start and every interval, the routers
        the changes concern in between. A failed round is logged and tried again. Rounds run
        under ``busy``, the waits for news outside it (see SchedulerThread.join)."""
        pause, due = BACKOFF[0], 0.0
        while not stop.is_set():
            idle = False
            try:
                with self.busy:
                    if stop.is_set():
                        return
                    due, idle = self._round(due)
                if idle:
                    self.store.wait(self.view.revision, min(POLL, max(due - self.clock(), 0)))
                pause = BACKOFF[0]
            except api.Compacted as e:
                if self.view is not None:  # behind the log: resync at once
                    LOG.info('the change log was compacted past the scheduler: resyncing')
                    self.view = None
                    continue
                pause, due = self._pause(stop, pause, e), 0.0  # even a snapshot failed
            except Exception as e:
                # The routers of the changes read are not done: a full pass next.
                pause, due = self._pause(stop, pause, e), 0.0

    def _round(self, due: float) -> tuple[float, bool]:
        """One round: the next full pass' time, and whether there was nothing to do."""
        if self.view is None:
            self.resync()
            due = 0.0
        if self.clock() >= due:
            dirty = self.everything()
            due = self.clock() + self.interval
        else:
            dirty = self.follow()
            if dirty is None:
                return due, True
        if dirty:
            self.schedule(dirty)
        return due, False

    @staticmethod
    def _pause(stop: threading.Event, pause: float, error: Exception) -> float:
        """After a failed round: log, wait, and the next pause."""
        if stop.is_set():
            return pause   # the app stopped (a store closed under a wait, say): say nothing
        if isinstance(error, api.StoreError):
            LOG.warning('L3 scheduling paused %.1f s: %s', pause, error)
        else:
            LOG.error('L3 scheduling paused %.1f s', pause, exc_info=error)
        stop.wait(pause)
        return min(pause * 2, BACKOFF[1])


class SchedulerThread(threading.Thread):
    """The thread of one Scheduler, started at once."""

    def __init__(self, store: api.Store, conf, stop: threading.Event):
        self.scheduler = Scheduler(store, conf)
        super().__init__(target=self.scheduler.run, args=(stop,), name='l3-scheduler',
                         daemon=True)
        self.start()

    def join(self, timeout: Optional[float] = None) -> None:
        """Once ``stop`` is set: return when no round runs and none will start. The thread
        may still sit in a wait for news (up to POLL seconds), which writes nothing: an app
        stops without waiting for it."""
        if self.scheduler.busy.acquire(timeout=-1 if timeout is None else timeout):
            self.scheduler.busy.release()


def run(store: api.Store, conf, stop: threading.Event) -> SchedulerThread:
    """Start a thread scheduling routers' gateway chassis and chassis SNAT ports by the [l3]
    options until ``stop`` is set; return it (join it after setting ``stop``)."""
    return SchedulerThread(store, conf, stop)
