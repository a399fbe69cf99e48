"""The flow loop: the one thread that computes and sends br-int's flows.

Woken by the store watcher (the cache changed), the local OVSDB (VM interfaces plugged and
unplugged) and the OpenFlow connection. Level-triggered: each pass builds the topology from
the cache as it is now, asks the apps for the flows and lets the reconciler send the
difference. It does not wait for the switch to confirm a change (confirmations.py), and it
never waits on the store: a scope to reload is asked of the store watcher, reports go to the
reporter's worker. It owns the floating IPs' NAT zones (nat_zones.py): each pass assigns
them into the topology, and a zone newly allocated is flushed before the bundle that uses it.

Liveness is local too: each topology carries this chassis' BFD ports, the peers their
sessions say alive, the peers it is withdrawn from (its port to them holds cpath_down: it
holds no gateway they send to) and the physnets whose uplinks are all down (ovsdb.py), as
the local OVSDB has them now; a change of any wakes the loop like a plug. When the liveness
peers of the topology sent change, the bridge keeper is woken to make or remove BFD ports;
after each read-back the gateway keeper hears whether br-int still held flows (an empty one,
after ovs-vswitchd restarted, cannot serve until its flows are in again).

No input stops it. Conflicting flows are resolved by precedence and a failing app or unit is
contained (apps/). Any other error in a pass is logged with what the pass was doing, and the
pass is retried with backoff; after a few failures in a row the controller starts again from
scratch (the scope reloaded, the switch read back, nothing kept from earlier passes); if it
still fails, the process exits non-zero to be restarted (supervisor.py).
"""
import dataclasses
import logging
import threading
import time
from typing import Callable, Optional

from dragonflow.controller import apps, memo
from dragonflow.controller.cache import Cache
from dragonflow.controller.confirmations import Unconfirmed
from dragonflow.controller.nat_zones import NatZones
from dragonflow.controller.openflow import SwitchError
from dragonflow.controller.ovsdb import uplinks_down
from dragonflow.controller.reconciler import Reconciler
from dragonflow.controller.topology import Topology

LOG = logging.getLogger(__name__)
SWITCH_RETRY_SECONDS = 1.0
FAILURE_BACKOFF = (0.1, 5.0)  # seconds: after the first failed pass in a row, the longest
FAILURES_BEFORE_RESYNC = 3
FAILURES_BEFORE_EXIT = 8
LOGGED_FLOWS = 20  # of those a read-back changed: what a restart had to fix
# DHCP requests and packets held for ports about to be plugged: the switch lets no more through.
PACKET_IN_RATE, PACKET_IN_BURST = 500, 100


class FlowLoop:
    def __init__(self, chassis_id: str, cache: Cache, ovs, switch, tunnel_types: list[str],
                 reporter, watcher, packet_ins, supervisor,
                 clock: Callable[[], float] = time.monotonic,
                 gateway_macs: Callable[[], dict] = dict, router_mac: Optional[str] = None,
                 bridge_mappings: Optional[dict] = None, is_gateway: bool = False,
                 liveness_peers_changed: Callable[[], None] = lambda: None,
                 read_back: Callable[[bool], None] = lambda had_flows: None):
        """``gateway_macs``: the external gateways' MACs learnt (neighbours.py).
        ``tunnel_types`` in the order configured (a network of no type crosses in the first
        one's tunnel); ``router_mac``: this chassis' (Chassis.router_mac);
        ``is_gateway``: [controller] gateway. ``liveness_peers_changed`` (the bridge keeper)
        and ``read_back`` (the gateway keeper) are called in the loop's thread and must
        return at once."""
        self.chassis_id, self.cache, self.ovs, self.switch = chassis_id, cache, ovs, switch
        self.gateway_macs = gateway_macs
        self.tunnel_types = list(tunnel_types)
        self.router_mac = router_mac
        self.bridge_mappings = dict(bridge_mappings or {})
        self.is_gateway = is_gateway
        self.liveness_peers_changed, self.read_back = liveness_peers_changed, read_back
        self._live_peers: Optional[frozenset] = None  # as last logged
        self.reporter, self.watcher, self.packet_ins = reporter, watcher, packet_ins
        self.supervisor, self.stop = supervisor, supervisor.stop
        self.reconciler = Reconciler(switch, rank=apps.precedence, owner=apps.owner)
        self.app_flows = apps.AppFlows(installed=lambda: self.reconciler.installed)
        self.nat_zones = NatZones(installed=lambda: self.reconciler.installed)
        self.unconfirmed = Unconfirmed(clock)
        self.sent: Optional[Topology] = None  # the last topology whose flows were sent
        self._wake = threading.Event()  # a change to recompute for, or an answer of the switch
        self._recompute = True
        self._recompute_lock = threading.Lock()  # wake() sets it as the loop takes it
        self._switch_resync = True
        self._read_unreconciled = False  # read back before the cache loaded: reconcile next
        self._failures = 0  # passes failed in a row
        self._stage = 'starting'

    def wake(self) -> None:
        with self._recompute_lock:
            self._recompute = True
        self._wake.set()

    def switch_connected(self) -> None:
        self.ask_resync()

    def ask_resync(self) -> None:
        """Read the switch's flows back and reconcile against them, at the next pass."""
        self._switch_resync = True
        self.wake()

    def run(self) -> None:
        while not self.stop.is_set():
            self._wake.wait(timeout=self.unconfirmed.seconds_left())
            self._wake.clear()
            self.contained_turn()

    def contained_turn(self) -> None:
        """A turn whose errors are contained (see the module docstring)."""
        try:
            self.turn()
        except SwitchError as e:
            if self.switch.connected:  # connected, yet not answering: a failure like any
                self._failed(e)
                return
            LOG.warning('pass failed (br-int), retrying: %s', e)
            self.stop.wait(SWITCH_RETRY_SECONDS)
            self.wake()
        except Exception as e:  # noqa: BLE001 - see the module docstring
            self._failed(e)
        else:
            self._failures = 0

    def turn(self) -> None:
        """What the loop does each time it is woken or due."""
        self._stage = 'settling the changes sent'
        confirmed, refused = self.unconfirmed.settle()
        if confirmed is not None:
            self.reporter.ports_confirmed(confirmed)
        if refused:
            self.ask_resync()
        self._pass(self._take_recompute())

    def _take_recompute(self) -> bool:
        with self._recompute_lock:
            recompute, self._recompute = self._recompute, False
        return recompute

    def _pass(self, recompute: bool) -> None:
        """Recompute the flows when something woke us (a change of the cache, of the
        interfaces or of the connection) and the cache holds a first snapshot: before it,
        the switch's flows are the best there is, and they stay. A gateway chassis reads
        br-int back even before: an empty one (ovs-vswitchd restarted, the machine
        rebooted) cannot serve, and the gateway keeper withdraws it, store or no store."""
        with self.cache.lock:
            loaded = self.cache.loaded
        if not self.switch.connected:
            return
        if not loaded:
            if self.is_gateway and self._switch_resync:
                self._read_switch()
                self._read_unreconciled = True
            return
        read_back = self._switch_resync or self._read_unreconciled
        if not (recompute or read_back):
            return
        if self._switch_resync:
            self._read_switch()
        self._read_unreconciled = False
        self._stage = 'building the topology'
        topology = self.topology()
        self._stage = 'computing the flows'
        desired = self.app_flows(topology)
        self._flush_new_nat_zones()
        self._stage = 'reconciling br-int'
        # Held packets go out right behind the bundle that lets them through, not a round
        # trip later: the switch handles them after it.
        read = self.reconciler.installed
        change = self.reconciler.reconcile(
            desired, then=lambda: self.packet_ins.release_held(topology))
        sent, self.sent = self.sent, topology
        if sent is None or sent.liveness_peers() != topology.liveness_peers():
            self.liveness_peers_changed()
        if read_back:
            LOG.info('br-int read back and reconciled: %d flows wanted, %d deleted, %d added',
                     len(self.reconciler.installed), len(change.deletes), len(change.adds))
            for flow in change.deletes[:LOGGED_FLOWS]:
                LOG.info('deleted %s', flow)
            for flow in change.adds[:LOGGED_FLOWS]:
                LOG.info('added %s, was %s', flow, read.get(flow.key))
        if change.confirmation:
            change.confirmation.add_done_callback(lambda _: self._wake.set())
            self.unconfirmed.sent(change.confirmation, topology)
        elif not self.unconfirmed.same_flows(topology):
            self.reporter.ports_confirmed(topology)
        self.reporter.wake()  # what this chassis serves may have changed

    def _read_switch(self) -> None:
        # Cleared first: a reconnection while reading back asks again. If reading back
        # fails, the mirror still holds what was sent, perhaps refused: never reconcile
        # against it.
        self._switch_resync = False
        self._stage = 'reading br-int back'
        try:
            self.unconfirmed.forget()
            self.reconciler.resync()
            self.read_back(bool(self.reconciler.installed))
            self._limit_packet_ins()
        except SwitchError:
            self._switch_resync = True
            raise

    def topology(self) -> Topology:
        interfaces = self.ovs.interfaces()
        ofports, found, patches = interfaces.vms, interfaces.tunnels, interfaces.patches
        tunnels = {kind: found[kind] for kind in self.tunnel_types if kind in found}
        gateway_macs = self.gateway_macs()  # outside the cache's lock: it may take it
        with self.cache.lock:
            self.cache.set_local_ports(set(ofports))
            refill = self.cache.needs_refill
            topology = Topology.from_objects(
                self.chassis_id, self.cache.objects, ofports, tunnels.get(self.tunnel_types[0]),
                self.cache.revision, gateway_macs=gateway_macs, tunnel_ofports=tunnels,
                patch_ofports=dict(patches), router_mac=self.router_mac,
                **self._liveness(interfaces))
        if refill:  # a VM plugged for a port or network not cached: the watcher wakes us
            self.watcher.ask_refill()
        zones = self.nat_zones.assign(topology.nat_associations())
        return dataclasses.replace(topology, nat_zones=zones)

    def _liveness(self, interfaces) -> dict:
        """The topology's liveness fields, from the local OVSDB's view of now."""
        live = frozenset(peer for peer, port in interfaces.liveness.items() if port.alive)
        if live != self._live_peers:
            self._log_liveness(live)
        return {'liveness_ofports': {peer: port.ofport
                                     for peer, port in interfaces.liveness.items()},
                'live_peers': live, 'is_gateway': self.is_gateway,
                'withdrawn_from': frozenset(peer for peer, port in interfaces.liveness.items()
                                            if port.held),
                'uplinks_down': uplinks_down(interfaces.uplinks, self.bridge_mappings)}

    def _log_liveness(self, live: frozenset) -> None:
        before, self._live_peers = self._live_peers, live
        if before is None:
            LOG.info('BFD: peers alive: %s', ', '.join(sorted(live)) or 'none')
            return
        for peer in sorted(before - live):
            LOG.warning('BFD: peer %s is down', peer)
        for peer in sorted(live - before):
            LOG.info('BFD: peer %s is alive', peer)

    def _flush_new_nat_zones(self) -> None:
        """Before the bundle whose flows first use a NAT zone (on the same connection, so
        the switch handles it first): no entry an earlier holder left is found in it. A
        switch that refuses the flush still gets the flows: a NAT zone is seldom reused
        while its old entries live, and the floating IPs matter more."""
        zones = self.nat_zones.unflushed()
        if not zones:
            return
        self._stage = 'flushing new NAT zones'
        try:
            self.switch.flush_conntrack_zones(zones)
        except SwitchError as e:
            if not self.switch.connected:
                raise
            LOG.warning('br-int refused to flush the conntrack zones %s: %s', zones, e)
        self.nat_zones.flushed(zones)

    def _limit_packet_ins(self) -> None:
        """A datapath without meters (an old kernel's) refuses the meter: the flows matter
        more than the limit, so go on without it."""
        try:
            self.switch.limit_packet_ins(PACKET_IN_RATE, PACKET_IN_BURST)
        except SwitchError as e:
            if not self.switch.connected:
                raise
            LOG.warning('packet-ins are not limited: the switch refused the meter (%s)', e)

    def _failed(self, error: Exception) -> None:
        self._failures += 1
        LOG.error('pass failed while %s (%d in a row)', self._stage, self._failures,
                  exc_info=error)
        if self._failures >= FAILURES_BEFORE_EXIT:
            self.supervisor.fail(f'{self._failures} passes failed in a row', error)
            return
        if self._failures % FAILURES_BEFORE_RESYNC == 0:
            LOG.warning('starting again from scratch: the scope reloaded, br-int read back')
            memo.forget()
            self.watcher.ask_refill()
            self._switch_resync = True
        pause = min(FAILURE_BACKOFF[0] * 2 ** (self._failures - 1), FAILURE_BACKOFF[1])
        self.stop.wait(pause)
        self.wake()
