"""df-controller: one per chassis.

Three sources wake one loop: the store's change log (a watcher thread keeps the cache current),
the local OVSDB (VM interfaces plugged and unplugged) and the OpenFlow connection. The loop is
level-triggered: each pass builds the topology from the current state, asks the apps for the
flows and lets the reconciler send the difference. It does not wait for the switch to confirm
a change: the next change may already be waiting, and the switch handles them in order. Once a
change is confirmed, the ports it brought in are reported bound and ACTIVE to the store; if
the switch refuses one, the flows are read back and reconciled again. While the store is
unreachable the data plane stays as it is.
"""
import collections
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time

from dragonflow import conf as df_conf
from dragonflow import store as df_store
from dragonflow.controller import apps, openflow
from dragonflow.controller import flows as of
from dragonflow.controller import pipeline as p
from dragonflow.controller.apps import dhcp, tunnels
from dragonflow.controller.cache import Cache
from dragonflow.controller.held_packets import HeldPackets
from dragonflow.controller.openflow import REPLY_TIMEOUT, OpenFlowSwitch, PacketIn, SwitchError
from dragonflow.controller.ovsdb import LocalOvs
from dragonflow.controller.reconciler import Reconciler
from dragonflow.controller.topology import Topology
from dragonflow.model import Chassis, Port
from dragonflow.store import api

LOG = logging.getLogger(__name__)
RETRY_SECONDS = 1.0
# Store reconnection: from the first to the longest pause, doubling; short enough that a
# change made right after the store returns is applied within about a second.
STORE_BACKOFF = (0.1, 1.0)
PACKET_IN_BACKLOG = 1000
# DHCP requests and packets held for ports about to be plugged: the switch lets no more through.
PACKET_IN_RATE, PACKET_IN_BURST = 500, 100


class RateLimiter:
    """A token bucket per key: ``rate`` per second, bursts of up to ``rate``."""

    def __init__(self, rate: float, clock=time.monotonic):
        self.rate, self.clock = rate, clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        now = self.clock()
        tokens, last = self._buckets.get(key, (self.rate, now))
        tokens = min(self.rate, tokens + (now - last) * self.rate)
        allowed = tokens >= 1
        self._buckets[key] = (tokens - 1 if allowed else tokens, now)
        return allowed


class Controller:
    def __init__(self, conf, store: api.Store, ovs: LocalOvs, switch: OpenFlowSwitch):
        self.conf = conf.controller
        self.chassis_id = self.conf.chassis_id or socket.gethostname()
        self.store, self.ovs, self.switch = store, ovs, switch
        self.cache = Cache(self.chassis_id)
        self.reconciler = Reconciler(switch)
        self.stop_event = threading.Event()
        self._wake = threading.Event()  # a change to recompute for, or an answer of the switch
        self._recompute = True
        self._recompute_lock = threading.Lock()  # wake() sets it as the loop takes it
        self._lock = threading.Lock()  # guards the cache between watcher and loop
        # One reader of the store at a time: a snapshot loaded while the watcher applies later
        # changes would take the cache back in time, and those changes would never come again.
        self._store_reads = threading.Lock()
        self._switch_resync = True
        self._last_heartbeat = 0.0
        self._published: tuple = ()  # the networks and routers of the last heartbeat
        self._topology: Topology | None = None  # the last one whose flows were sent
        # Changes sent and not confirmed yet, oldest first: (confirmation, give-up time, the
        # topology whose flows the switch holds once it has this change).
        self._unconfirmed: collections.deque = collections.deque()
        self._packet_ins: queue.Queue = queue.Queue(PACKET_IN_BACKLOG)
        self._held = HeldPackets()
        self._dhcp_limiter = RateLimiter(conf.dhcp.rate_limit)
        self._dhcp = dhcp.Settings(lease_time=conf.dhcp.lease_time,
                                   metadata_ip=conf.dhcp.metadata_ip)

    def wake(self) -> None:
        with self._recompute_lock:
            self._recompute = True
        self._wake.set()

    def _take_recompute(self) -> bool:
        with self._recompute_lock:
            recompute, self._recompute = self._recompute, False
        return recompute

    def switch_connected(self) -> None:
        self._ask_resync()

    def _ask_resync(self) -> None:
        """Read the switch's flows back and reconcile against them, at the next pass."""
        self._switch_resync = True
        self.wake()

    def packet_in(self, packet_in: PacketIn) -> None:
        """From os-ken's receiving thread. A packet from a tunnel is held (or sent on) at once:
        a VM's first packets wait on it. A DHCP request queues for the packet-in thread; a
        full backlog drops it (the client retries)."""
        if packet_in.table == p.REMOTE_INGRESS.number:
            self._handle(self._hold, packet_in)
            return
        try:
            self._packet_ins.put_nowait(packet_in)
        except queue.Full:
            LOG.warning('packet-in backlog full: dropped a packet from port %d',
                        packet_in.in_port)

    def run(self) -> None:
        threading.Thread(target=self._watch_store, name='store-watcher', daemon=True).start()
        threading.Thread(target=self._serve_packet_ins, name='packet-in', daemon=True).start()
        while not self.stop_event.is_set():
            self._wake.wait(timeout=self._next_deadline())
            self._wake.clear()
            try:
                self._turn()
            except (SwitchError, api.StoreError) as e:
                LOG.warning('pass failed, retrying: %s', e)
                self.stop_event.wait(RETRY_SECONDS)
                self.wake()

    def _turn(self) -> None:
        """What the loop does each time it is woken or due."""
        self._report_confirmed()
        self._pass(self._take_recompute())

    def _pass(self, recompute: bool) -> None:
        """Heartbeat when due; recompute the flows only when something woke us (a change of
        the store, of the interfaces or of the connection), not on every heartbeat; publish
        at once what this chassis serves when that changed."""
        if time.time() - self._last_heartbeat >= self.conf.heartbeat_interval:
            self._heartbeat()
        if not self.switch.connected or not (recompute or self._switch_resync):
            return
        if self._switch_resync:
            # Cleared first: a reconnection while reading back asks again. If reading back
            # fails, the mirror still holds what was sent, perhaps refused: never reconcile
            # against it.
            self._switch_resync = False
            try:
                self._forget_unconfirmed()
                self.reconciler.resync()
                self._limit_packet_ins()
            except SwitchError:
                self._switch_resync = True
                raise
        topology = self.topology()
        # Held packets go out right behind the bundle that lets them through, not a round
        # trip later: the switch handles them after it.
        change = self.reconciler.reconcile(apps.desired_flows(topology),
                                           then=lambda: self._release_held(topology))
        self._topology = topology
        if change.confirmation:
            change.confirmation.add_done_callback(lambda _: self._wake.set())
            self._unconfirmed.append(
                (change.confirmation, time.monotonic() + REPLY_TIMEOUT, topology))
        elif self._unconfirmed:  # the same flows as the last change sent: confirmed with it
            confirmation, deadline, _ = self._unconfirmed[-1]
            self._unconfirmed[-1] = (confirmation, deadline, topology)
        else:
            self._report_ports(topology)
        if self._served() != self._published:
            self._heartbeat()

    def _report_confirmed(self) -> None:
        """Report the ports of the newest topology the switch has confirmed all flows of.
        A change refused or not answered in time: read the switch back and reconcile."""
        confirmed = None
        while self._unconfirmed:
            confirmation, deadline, topology = self._unconfirmed[0]
            if not confirmation.done() and time.monotonic() < deadline:
                break
            self._unconfirmed.popleft()
            try:
                openflow.wait(confirmation, 0)
            except SwitchError as e:
                LOG.warning('br-int did not take a change (%s): reading its flows back', e)
                self._forget_unconfirmed()
                self._ask_resync()
                return
            confirmed = topology
        if confirmed:
            self._report_ports(confirmed)

    def _forget_unconfirmed(self) -> None:
        """Give up on the changes not confirmed yet: reading the switch back tells what it
        took."""
        for confirmation, _, _ in self._unconfirmed:
            confirmation.cancel()
        self._unconfirmed.clear()

    def _next_deadline(self) -> float:
        """Seconds until the loop must look again without being woken: the next heartbeat,
        or giving up on a change the switch has not answered."""
        due = self._last_heartbeat + self.conf.heartbeat_interval - time.time()
        if self._unconfirmed:
            due = min(due, self._unconfirmed[0][1] - time.monotonic())
        return max(due, 0.0)

    def _limit_packet_ins(self) -> None:
        """A datapath without meters (an old kernel's) refuses the meter: the flows matter
        more than the limit, so go on without it."""
        try:
            self.switch.limit_packet_ins(PACKET_IN_RATE, PACKET_IN_BURST)
        except SwitchError as e:
            if not self.switch.connected:
                raise
            LOG.warning('packet-ins are not limited: the switch refused the meter (%s)', e)

    def topology(self) -> Topology:
        ofports, tunnels = self.ovs.interfaces()
        with self._lock:
            self.cache.set_local_ports(set(ofports))
        if self.cache.needs_refill:
            self._refill()
        with self._lock:
            return Topology.from_objects(self.chassis_id, self.cache.objects, ofports,
                                         tunnels.get(self.conf.tunnel_types[0]))

    def _report_ports(self, topology: Topology) -> None:
        """Bind plugged ports to this chassis (ACTIVE: their flows are in); unplugged ones go
        DOWN and unbound."""
        updates = []
        for port in topology.ports.values():
            plugged = port.id in topology.ofports
            if plugged and (port.binding_host_id != self.chassis_id or port.status != 'ACTIVE'):
                updates.append((port, {'binding_host_id': self.chassis_id, 'status': 'ACTIVE'}))
            elif not plugged and port.binding_host_id == self.chassis_id and \
                    port.status == 'ACTIVE':
                updates.append((port, {'binding_host_id': '', 'status': 'DOWN'}))
        self._update_ports(updates)

    def _update_ports(self, updates: list[tuple[Port, dict]]) -> None:
        """One commit for all, each conditional on the port not having changed; if some did,
        the others are written one by one (the watcher brings the changed ones and a later
        pass retries them). The cache keeps what was written at once."""
        if not updates:
            return
        puts = {}
        for port, changes in updates:
            new = port.model_copy(update=changes)
            puts[port.id] = (new, api.Put(Port.table, port.id, new.to_doc(), expect=port.revision))
        written = {}
        try:
            revision = self.store.commit([put for _, put in puts.values()])
            written = {port_id: new.model_copy(update={'revision': revision})
                       for port_id, (new, _) in puts.items()}
        except api.Conflict:
            for port_id, (new, put) in puts.items():
                try:
                    written[port_id] = new.model_copy(
                        update={'revision': self.store.commit([put])})
                except api.Conflict:
                    pass
        with self._lock:
            narrowed = [self.cache.written(port) for port in written.values()]
        if any(narrowed):
            self.wake()

    def _served(self) -> tuple[list[str], list[str]]:
        with self._lock:
            return sorted(self.cache.objects['networks']), sorted(self.cache.objects['routers'])

    def _heartbeat(self) -> None:
        networks, routers = served = self._served()
        chassis = Chassis(id=self.chassis_id, tunnel_ip=self.conf.tunnel_ip,
                          tunnel_types=self.conf.tunnel_types, heartbeat=time.time(),
                          revision_seen=self.cache.revision, networks=networks, routers=routers)
        self.store.put(Chassis.table, chassis.id, chassis.to_doc())
        self._last_heartbeat, self._published = chassis.heartbeat, served

    def _serve_packet_ins(self) -> None:
        """DHCP requests from local ports."""
        while not self.stop_event.is_set():
            try:
                packet_in = self._packet_ins.get(timeout=1.0)
            except queue.Empty:
                continue
            if packet_in.table == p.DHCP.number:
                self._handle(self._answer_dhcp, packet_in)

    @staticmethod
    def _handle(handler, packet_in: PacketIn) -> None:
        try:
            handler(packet_in)
        except SwitchError as e:
            LOG.warning('cannot send a packet: %s', e)
        except Exception:  # noqa: BLE001 - one bad packet must not stop the service
            LOG.exception('cannot handle a packet from port %d (table %d)',
                          packet_in.in_port, packet_in.table)

    def _answer_dhcp(self, packet_in: PacketIn) -> None:
        """Each port within its rate limit."""
        topology = self._topology
        port = topology.port_at(packet_in.in_port) if topology else None
        if port is None or not self._dhcp_limiter.allow(port.id):
            return
        reply = dhcp.answer(topology, port, packet_in.data, self._dhcp)
        if reply:
            self.switch.send_packets([([of.Output(packet_in.in_port)], reply)])

    def _hold(self, packet_in: PacketIn) -> None:
        """Held by network (the flow's cookie) and destination MAC."""
        destination = ':'.join(f'{byte:02x}' for byte in packet_in.data[:6])
        key = (packet_in.cookie & of.COOKIE_OBJECT_MASK, destination)
        actions = self._held.hold(key, packet_in.data)
        if actions:  # its port's flows came in meanwhile
            self.switch.send_packets([(actions, packet_in.data)])

    def _release_held(self, topology: Topology) -> None:
        """Send on what was held for the ports whose flows this pass has just sent. A
        failure here loses these packets, not the pass."""
        plugged = {}
        for port, _ in topology.local_ports():
            network = topology.network_of(port)
            plugged[network.key, port.mac_address] = tunnels.release_actions(network, port)
        try:
            released = self._held.plugged(plugged)
            if released:
                self.switch.send_packets(released)
        except Exception:  # noqa: BLE001 - see above
            LOG.exception('cannot send on the packets held for ports plugged here')

    def _refill(self) -> None:
        """Reload the scope from a snapshot: start-up, a wider scope, or a compacted log."""
        with self._store_reads:
            revision, records = self.store.snapshot()
            with self._lock:
                self.cache.load(revision, records)
                kept = sum(len(rows) for rows in self.cache.objects.values())
                unknown = len(self.cache.unknown_port_ids)
        LOG.info('scope reloaded at revision %d: %d objects kept; %d plugged interfaces name '
                 'ports the store does not have (yet)', revision, kept, unknown)
        self._fetch_missing_chassis()

    def _fetch_missing_chassis(self) -> None:
        with self._lock:
            missing = self.cache.missing_chassis()
        for chassis_id in missing:
            record = self.store.get(Chassis.table, chassis_id)
            if record is not None:
                with self._lock:
                    self.cache.add(Chassis.from_doc(record.value, record.revision))

    def _watch_store(self) -> None:
        """Keep the cache current from the change log, resuming after errors; reload the
        scope when it widens or the log was compacted under us."""
        pause = STORE_BACKOFF[0]
        while not self.stop_event.is_set():
            try:
                if self.cache.needs_refill:
                    self._refill()
                    self.wake()
                with self._store_reads:
                    after = self.cache.revision
                    batch = self.store.changes(after)
                    if batch:
                        with self._lock:
                            changed = self.cache.apply(batch)
                pause = STORE_BACKOFF[0]
                if not batch:
                    self.store.wait(after, timeout=1.0)
                    continue
                self._fetch_missing_chassis()
                if changed:
                    self.wake()
            except api.Compacted:
                LOG.warning('change log compacted past revision %d: resync', self.cache.revision)
                self.cache.needs_refill = True
            except api.StoreError as e:
                LOG.warning('store unavailable, retrying in %.1f s: %s', pause, e)
                self.stop_event.wait(pause)
                pause = min(pause * 2, STORE_BACKOFF[1])
            except Exception:  # noqa: BLE001 - e.g. a record this version cannot read
                # The watcher must outlive it: the data plane stays, the log says why, and
                # the batch is retried (an operator may fix the record or upgrade us).
                LOG.exception('cannot apply changes after revision %d, retrying in %.1f s',
                              self.cache.revision, STORE_BACKOFF[1])
                self.stop_event.wait(STORE_BACKOFF[1])


def main(argv=None) -> int:
    conf = df_conf.load(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    c = conf.controller
    store = df_store.connect(conf.store.url, timeout=conf.store.timeout)
    controller = None
    switch = OpenFlowSwitch(c.openflow_listen_host, c.openflow_listen_port,
                            on_connect=lambda: controller and controller.switch_connected(),
                            on_packet_in=lambda *a: controller and controller.packet_in(*a))
    ovs = LocalOvs(c.ovsdb_connection, c.integration_bridge, on_change=lambda: controller
                   and controller.wake())
    controller = Controller(conf, store, ovs, switch)
    switch.start()
    ovs.ensure_bridge(c.datapath_type,
                      f'tcp:{c.openflow_listen_host}:{c.openflow_listen_port}')
    ovs.ensure_tunnel_port(c.tunnel_types[0], c.tunnel_ip)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: controller.stop_event.set())
    LOG.info('df-controller %s running', controller.chassis_id)
    controller.run()
    LOG.info('df-controller %s stopping; the flows stay in br-int', controller.chassis_id)
    ovs.stop()
    # os-ken's listener and connection threads are not daemons and cannot be interrupted.
    os._exit(0)
