"""Everything the controller tells the store, from a worker thread of its own, so the flow
loop never waits on the store:
- the chassis record (the tunnel endpoint), when the store's is missing or differs;
- a heartbeat (Store.heartbeat: a liveness record that expires, not a logged change) every
  interval, and at once when the networks or routers this chassis serves change, or the
  routers whose gateway it holds (as it sees its peers' liveness, in the topology whose flows
  br-int last confirmed); it names the store revision whose flows br-int last confirmed;
- its ports' binding and status: bound here and ACTIVE once the switch has confirmed their
  flows, DOWN and unbound once unplugged;
- the status of the floating IPs of its ports: ACTIVE once the switch has confirmed all their
  flows, the way out to the learnt gateway included (df-api writes DOWN on every
  association change, so this chassis only ever writes ACTIVE, and only on the version of
  the floating IP whose flows it has);
- under Neutron (objects whose status_source is 'report'), none of those writes: Neutron's DB
  holds the binding and the status, so the chassis writes its own StatusReport of each such
  port bound to it and floating IP of those ports (ACTIVE with the store revision of the
  version whose flows are in, DOWN once unplugged or, for a floating IP, until the flows of
  its new association are), and deletes its reports of objects gone or bound elsewhere. The
  driver's worker (dragonflow/neutron/status.py) tells Neutron.

Level-triggered: the loop hands over the newest confirmed topology, and each report is
computed from it and the cache's current objects when it is written. A store outage delays
the reports, never a flow: they are retried with backoff and go out when it returns.
"""
import logging
import threading
import time
from typing import Callable, Optional

from dragonflow.controller.cache import Cache, same_for_data_plane
from dragonflow.model import Chassis, ChassisStatus, FloatingIP, Model, Port, StatusReport
from dragonflow.model.objects import STATUS_BY_CHASSIS, STATUS_BY_REPORT
from dragonflow.store import api

LOG = logging.getLogger(__name__)
BACKOFF = (0.1, 2.0)  # seconds: the first pause after a store error, the longest
HEARTBEATS_TO_EXPIRE = 3  # a chassis whose heartbeats stop is down after this many intervals


class Reporter:
    def __init__(self, store: api.Store, cache: Cache, chassis: Chassis, interval: float,
                 stop: threading.Event, wake_loop: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic, on_confirmed=()):
        """``on_confirmed``: called in the loop's thread with each confirmed topology too
        (neighbours.py: what br-int now answers for)."""
        self.on_confirmed = tuple(on_confirmed)
        self.store, self.cache, self.chassis = store, cache, chassis
        self.interval, self.stop, self.wake_loop = interval, stop, wake_loop
        self.clock = clock
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards _confirmed between the loop and this worker
        self._confirmed = None  # the newest topology whose flows the switch has, to report
        self._applied = 0  # the store revision of the newest one
        self._next_heartbeat = 0.0
        self._retry_ports_at = float('inf')  # ports whose version changed, to report again
        self._retry_pause = BACKOFF[0]
        # (networks, routers, active gateways) of the last heartbeat
        self._published: Optional[tuple] = None
        self._active_gateways: list[str] = []  # of the newest confirmed topology
        self._registered = False
        # The newest confirmed topology, kept: the status reports are recomputed from it
        # whenever the cache's versions of their objects change (a new revision of a port is
        # news for Neutron even when no flow changes).
        self._latest = None
        cache.on_status_input = self.wake

    def ports_confirmed(self, topology) -> None:
        """From the loop: the switch has the flows of ``topology``; report its ports."""
        active = active_gateways(topology)
        with self._lock:
            self._confirmed = topology
            self._latest = topology
            self._applied = max(self._applied, topology.revision)
            self._active_gateways = active
        self._wake.set()
        for listener in self.on_confirmed:
            listener(topology)

    def wake(self) -> None:
        """Something may have changed what this chassis serves: publish it if so."""
        self._wake.set()

    def run(self) -> None:
        pause = BACKOFF[0]
        while not self.stop.is_set():
            due = min(self._next_heartbeat, self._retry_ports_at)
            self._wake.wait(timeout=max(due - self.clock(), 0.0))
            self._wake.clear()
            try:
                self.report()
                pause = BACKOFF[0]
            except api.StoreError as e:
                LOG.warning('cannot report to the store, retrying in %.1f s: %s', pause, e)
                self.stop.wait(pause)
                pause = min(pause * 2, BACKOFF[1])
                self._wake.set()

    def report(self) -> None:
        """One round: whatever is due. A failed write leaves it due."""
        if not self._registered or self._record_gone():
            self._register()
        with self._lock:
            topology, self._confirmed = self._confirmed, None
        if topology is not None:
            try:
                self._report_ports(topology)
            except BaseException:
                with self._lock:  # retried, unless a newer one came meanwhile
                    self._confirmed = self._confirmed or topology
                raise
        self._report_status()
        served = self._served()
        if self.clock() >= self._next_heartbeat or served[:3] != self._published:
            self._heartbeat(served)

    def _register(self) -> None:
        record = self.store.get(Chassis.table, self.chassis.id)
        if record is None or not Chassis.from_doc(record.value).same_endpoint(self.chassis):
            revision = self.store.put(Chassis.table, self.chassis.id, self.chassis.to_doc())
            record = api.Record(Chassis.table, self.chassis.id, self.chassis.to_doc(), revision)
            LOG.info('chassis %s registered: %s %s', self.chassis.id, self.chassis.tunnel_ip,
                     ','.join(self.chassis.tunnel_types))
        if self._record_gone():  # kept at once, so that its absence means it was deleted
            with self.cache.lock:
                self.cache.add(Chassis.from_doc(record.value, record.revision))
        self._registered = True

    def _record_gone(self) -> bool:
        """The chassis record was deleted (by an operator, say): register again."""
        with self.cache.lock:
            return self.cache.loaded and self.chassis.id not in self.cache.objects[Chassis.table]

    def _served(self) -> tuple:
        with self._lock:
            applied, active = self._applied, self._active_gateways
        with self.cache.lock:
            networks, routers = (sorted(self.cache.objects['networks']),
                                 sorted(self.cache.objects['routers']))
            if self.cache.relevant_revision <= applied:  # nothing since changed the flows
                applied = max(applied, self.cache.revision)
        return networks, routers, active, applied

    def _heartbeat(self, served: tuple) -> None:
        networks, routers, active, revision = served
        status = ChassisStatus(revision_seen=revision, networks=networks, routers=routers,
                               active_gateways=active)
        self.store.heartbeat(self.chassis.id, status.model_dump(),
                             ttl=HEARTBEATS_TO_EXPIRE * self.interval)
        self._published = served[:3]
        self._next_heartbeat = self.clock() + self.interval

    def _report_ports(self, topology) -> None:
        """Bind plugged ports to this chassis (ACTIVE: their flows are in); unplugged ones go
        DOWN and unbound. Decided on the cache's current version of each port."""
        me = self.chassis.id
        updates = []
        with self.cache.lock:
            ports = self.cache.objects[Port.table]
            current = [ports[i] for i in topology.ports
                       if i in ports and ports[i].status_source == STATUS_BY_CHASSIS]
        down = set()
        for port in current:
            plugged = port.id in topology.ofports
            if plugged and (port.binding_host_id != me or port.status != 'ACTIVE'):
                updates.append((port, {'binding_host_id': me, 'status': 'ACTIVE'}))
            elif not plugged and port.binding_host_id == me and port.status == 'ACTIVE':
                updates.append((port, {'binding_host_id': '', 'status': 'DOWN'}))
                down.add(port.id)
        updates += self._floating_ips_up(topology) + self._floating_ips_down(down)
        if self._update(updates):
            self._retry_ports_at, self._retry_pause = float('inf'), BACKOFF[0]
            return
        # Retried with the cache's newer versions, backing off while they keep changing.
        self._retry_ports_at = self.clock() + self._retry_pause
        self._retry_pause = min(self._retry_pause * 2, BACKOFF[1])
        with self._lock:
            self._confirmed = self._confirmed or topology

    def _floating_ips_up(self, topology) -> list[tuple[FloatingIP, dict]]:
        """The local floating IPs whose flows are all in (the gateway's MAC known), in the
        version the cache has now if it is still the one those flows are for."""
        updates = []
        with self.cache.lock:
            cached = self.cache.objects[FloatingIP.table]
            for fip in topology.local_floating_ips():
                current = cached.get(fip.floating_ip.id)
                if fip.gateway_mac and current is not None and current.status != 'ACTIVE' \
                        and current.status_source == STATUS_BY_CHASSIS \
                        and _association(current) == _association(fip.floating_ip):
                    updates.append((current, {'status': 'ACTIVE'}))
        return updates

    def _floating_ips_down(self, port_ids: set[str]) -> list[tuple[FloatingIP, dict]]:
        """The floating IPs of ports this chassis reports DOWN (unplugged here): nothing NATs
        them until the port's next chassis has their flows in (and writes ACTIVE)."""
        if not port_ids:
            return []
        with self.cache.lock:
            return [(fip, {'status': 'DOWN'})
                    for fip in self.cache.objects[FloatingIP.table].values()
                    if fip.port_id in port_ids and fip.status != 'DOWN'
                    and fip.status_source == STATUS_BY_CHASSIS]

    def _update(self, updates: list[tuple[Model, dict]]) -> bool:
        """One commit for all (ports, floating IPs), each conditional on the object not having
        changed; if some did, the others are written one by one, and the changed ones are left
        to the next round (the watcher brings their new version into the cache): False then.
        The cache keeps what was written at once."""
        if not updates:
            return True
        puts = {}
        for obj, changes in updates:
            new = obj.model_copy(update=changes)
            puts[obj.table, obj.id] = (new, api.Put(obj.table, obj.id, new.to_doc(),
                                                    expect=obj.revision))
        written = {}
        try:
            revision = self.store.commit([put for _, put in puts.values()])
            written = {key: new.model_copy(update={'revision': revision})
                       for key, (new, _) in puts.items()}
        except api.Conflict:
            for key, (new, put) in puts.items():
                try:
                    written[key] = new.model_copy(
                        update={'revision': self.store.commit([put])})
                except api.Conflict:
                    pass
        with self.cache.lock:
            narrowed = [self.cache.written(obj) for obj in written.values()]
        if any(narrowed):
            self.wake_loop()
        return len(written) == len(puts)

    # Under Neutron: status reports

    def _report_status(self) -> None:
        """Write the reports that differ from what this chassis last said (the cache keeps
        its own reports, so a restart does not repeat them), delete the ones that no longer
        stand. One commit, each write conditional on the report not having changed; a
        conflict (the driver's worker deleted one) leaves the rest to the next round."""
        with self._lock:
            topology = self._latest
        if topology is None:
            return
        with self.cache.lock:
            if not self.cache.loaded:
                return
            desired = desired_reports(topology, self.cache.objects, self.chassis.id)
            said = dict(self.cache.objects[StatusReport.table])
        ops, written = [], {}
        for report_id, report in desired.items():
            old = said.get(report_id)
            if report is KEEP or old is not None and \
                    (old.status, old.object_revision) == (report.status, report.object_revision):
                continue
            ops.append(api.Put(StatusReport.table, report_id, report.to_doc(),
                               expect=api.MUST_NOT_EXIST if old is None else old.revision))
            written[report_id] = report
        gone = [i for i in said if i not in desired]
        ops += [api.Delete(StatusReport.table, i, expect=said[i].revision) for i in gone]
        if not ops:
            return
        try:
            revision = self.store.commit(ops)
        except api.Conflict:
            self._wake.set()  # the watcher brings the store's version: decided again on it
            LOG.info('status reports changed meanwhile, reporting again')
            self._resync_reports(list(written) + gone)
            return
        with self.cache.lock:
            rows = self.cache.objects[StatusReport.table]
            for report_id, report in written.items():
                rows[report_id] = report.model_copy(update={'revision': revision})
            for report_id in gone:
                rows.pop(report_id, None)

    def _resync_reports(self, report_ids: list[str]) -> None:
        """Read back the reports a conflicting commit named, into the cache."""
        records = {i: self.store.get(StatusReport.table, i) for i in report_ids}
        with self.cache.lock:
            rows = self.cache.objects[StatusReport.table]
            for report_id, record in records.items():
                if record is None:
                    rows.pop(report_id, None)
                else:
                    rows[report_id] = StatusReport.from_doc(record.value, record.revision)


KEEP = object()  # a report left as it is: the flows of the object's newest version are not in


def desired_reports(topology, objects: dict, me: str) -> dict:
    """What this chassis should say, by report id, of the ports and floating IPs whose
    status_source is 'report', from the confirmed ``topology`` and the cache's ``objects``.

    A port bound here (Neutron binds, Nova plugs): ACTIVE once plugged and its flows are in,
    with the revision of the cache's version if that says the same to the data plane as the
    version the flows were built from (the report then speaks of the current version);
    KEEP if a newer version's flows are not in yet; DOWN if unplugged after a report. A
    floating IP of a port plugged here: ACTIVE once its flows are in, the gateway's MAC
    learnt, for the association the flows are for; DOWN otherwise after a report. What is
    absent from the result (gone, bound elsewhere, out of scope) is to be deleted."""
    ports, fips = objects[Port.table], objects[FloatingIP.table]
    said = objects[StatusReport.table]
    desired = {}

    def report(resource, obj, status):
        report_id = StatusReport.make_id(resource, obj.id, me)
        if status == 'DOWN' and report_id not in said:
            return  # nothing said yet: Neutron's DOWN stands
        desired[report_id] = StatusReport(
            id=report_id, resource=resource, resource_id=obj.id, chassis=me, status=status,
            object_revision=obj.revision)

    for port in ports.values():
        if port.status_source != STATUS_BY_REPORT or port.binding_host_id != me or \
                not port.is_plugged_kind:
            continue
        built = topology.ports.get(port.id)
        if port.id not in topology.ofports or built is None:
            report(Port.table, port, 'DOWN')
        elif same_for_data_plane(built, port):
            report(Port.table, port, 'ACTIVE')
        else:
            desired[StatusReport.make_id(Port.table, port.id, me)] = KEEP
    ready = {f.floating_ip.id: f for f in topology.local_floating_ips() if f.gateway_mac}
    for fip in fips.values():
        port = ports.get(fip.port_id)
        if fip.status_source != STATUS_BY_REPORT or port is None or \
                port.binding_host_id != me and port.id not in topology.ofports:
            continue
        flows = ready.get(fip.id)
        up = flows is not None and fip.port_id in topology.ofports and \
            _association(flows.floating_ip) == _association(fip)
        report(FloatingIP.table, fip, 'ACTIVE' if up else 'DOWN')
    return desired



def active_gateways(topology) -> list[str]:
    """The routers whose gateway this chassis holds, as it sees its peers' liveness."""
    return sorted(router.id for router in topology.routers.values()
                  if topology.active_gateway(router) == topology.chassis_id)


def _association(fip: FloatingIP) -> tuple:
    return (fip.port_id, fip.fixed_ip_address, fip.router_id, fip.floating_ip_address,
            fip.floating_port_id)
