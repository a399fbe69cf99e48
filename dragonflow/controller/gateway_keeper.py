"""Whether peers may see this gateway chassis alive: readiness and failback, in a thread of
its own.

Every chassis runs a BFD session with each liveness peer (ovsdb.py, bridge.py), and each
decides alone, from the sessions, which gateway chassis of a router is active: the first of
its gateway_chassis that is alive (Topology.active_gateway). A gateway chassis that cannot
serve withdraws by holding bfd:cpath_down=true on its BFD ports: every peer's session then
says it does not forward, so they skip it, and the next chassis of each list takes over,
with no store involved. It cannot serve:
- when its switch starts again (ovs-vswitchd restarted, the machine rebooted): from the
  moment the bridge keeper ends the switch's flow-restore-wait (bridge.py: the switch
  waited for us, its sessions down for every peer, and comes up withdrawn) or a read-back
  finds br-int empty, until the switch confirms a topology's flows: peers must not send to
  a gateway without its flows;
- while the physnet of a router it is a gateway chassis of has lost every uplink (the
  provider bridge's NICs have no carrier): it could not reach the outside.

Failback: no preemption. A chassis that was away - withdrawn from a router's senders, as it
is after either of those - while a peer later in the router's gateway_chassis was alive
finds that peer holding the router's NATed connections (their conntrack entries are on that
peer); taking the router back would break every one of them a second time, for nothing. So
before it comes back for such a router, it rewrites the router's gateway_chassis with itself
moved to the end - compare-and-swap on the router's revision in the store, retried on
conflict - and stays withdrawn from that router's peers until its own cache shows the new
order (the peers' caches follow the same change log). Then it clears cpath_down and stays
the backup. Routers with no live peer have nothing to disturb: it comes back for them at
once. While the store cannot be reached it stays withdrawn where a peer serves (the peer
keeps serving; data-plane liveness does not depend on the store), except from the peers of
routers with no live gateway at all: serving those matters more. A router served by a peer
that shares such a peer (a chassis hosting VMs of both) then comes back too, from all its
peers at once: withdrawn from some and not others, two chassis would hold its gateway.

A chassis that serves is never reordered: a router that is new, or a peer whose session is
new (a VM on a new chassis, a new gateway chassis), finds it serving, and its new BFD ports
start as serving too (the senders' bundles pick it once its session is up, and its flows for
the router come with its cache like everyone's). Only a router some of whose senders it is
withdrawn from is decided by the rules above.

Withdrawal is per BFD port (per peer), not per router: the peers that would move a router
back to this chassis are the router's other gateway chassis and the chassis hosting its VMs;
a peer that is neither is never held once this chassis can serve.

A new session takes about 1.5 s to come up (OVS sends once a second until it is up), so when
a chassis comes back, a peer whose session has existed less than SETTLE_SECONDS and is not
up yet may still be alive: no router it was away from is decided from it before then. Before
the first decision the BFD ports of an earlier run are left as they are (a restarted
controller over a running switch keeps serving, or stays withdrawn).
"""
import dataclasses
import logging
import threading
import time
from typing import Callable, Mapping, Optional

from dragonflow.controller.ovsdb import LivenessPort
from dragonflow.model import Router
from dragonflow.store import api

LOG = logging.getLogger(__name__)
SETTLE_SECONDS = 3.0
BACKOFF = (0.1, 2.0)  # seconds: after the first failed store write, the longest
CONFLICT_RETRIES = 5  # compare-and-swap attempts in a row before trying again later
IDLE_SECONDS = 1.0  # the longest wait, so a stop is noticed


@dataclasses.dataclass(frozen=True)
class Decision:
    """Which BFD ports hold cpath_down, and the routers to move this chassis to the end of."""
    hold_all: bool  # this chassis cannot serve: withdrawn from every peer
    held: frozenset = frozenset()  # else the peers it stays withdrawn from
    failback: tuple = ()  # router ids: rewrite their order before coming back for them
    due: Optional[float] = None  # when a settling session has had its time: decide again
    why: str = ''

    def holds(self, peer: str) -> bool:
        return self.hold_all or peer in self.held

    def same_hold(self, other: Optional['Decision']) -> bool:
        return other is not None and (self.hold_all, self.held) == (other.hold_all,
                                                                    other.held)


SERVING = Decision(hold_all=False)


def decide(topology, liveness: Mapping[str, LivenessPort], ready: bool,
           first_seen: Mapping[str, float], now: float, store_down: bool = False,
           settle: float = SETTLE_SECONDS) -> Decision:
    """The decision for a gateway chassis, from the topology of its last confirmed flows,
    its BFD ports as the switch has them now (alive, held), whether its flows are in, when
    each port was first seen and whether the store was just found unreachable."""
    me = topology.chassis_id
    if not ready:
        return Decision(hold_all=True, why='its flows are not in br-int yet')
    mine = [r for r in sorted(topology.routers.values(), key=lambda r: r.id)
            if me in r.gateway_chassis and r.external_gateway_info is not None]
    down = sorted(_physnet(topology, r) for r in mine
                  if _physnet(topology, r) in topology.uplinks_down)
    if down:
        return Decision(hold_all=True, why=f'{", ".join(down)}: every uplink is down')
    held, orphaned, failback, dues = set(), set(), {}, []
    peers = topology.liveness_peers()
    for router in mine:
        senders = _senders(topology, router) & set(peers)
        if not any(liveness[p].held for p in senders if p in liveness):
            continue  # serving it (a new router, a peer without a port yet: as it is)
        active = next((c for c in router.gateway_chassis
                       if c != me and c in liveness and liveness[c].alive), None)
        if active is not None:
            order = router.gateway_chassis
            if order.index(active) > order.index(me):
                failback[router.id] = senders
                held |= senders
            continue  # else the peer ahead keeps it whether we come back or not
        settling = [first_seen.get(c) for c in router.gateway_chassis
                    if c != me and c in peers
                    and (c not in first_seen or now - first_seen[c] < settle)]
        if settling:
            held |= senders
            dues += [seen + settle for seen in settling if seen is not None]
        else:
            orphaned |= senders
    if store_down:
        held -= _coming_back(orphaned, failback)
    return Decision(hold_all=False, held=frozenset(held), failback=tuple(failback),
                    due=min(dues, default=None),
                    why='until the failback of ' + ', '.join(failback) if failback else
                    'until its peers\' sessions settle' if held else '')


def _coming_back(orphaned: set[str], failback: dict[str, set]) -> set[str]:
    """The peers to clear with the store unreachable: those of routers with no live gateway,
    and then every peer of a router one of those peers also sends (it moves back here from
    them anyway: held from its other peers, its active peer would hold it too)."""
    cleared, pending = set(orphaned), dict(failback)
    while True:
        joined = [r for r, senders in pending.items() if senders & cleared]
        if not joined:
            return cleared
        for router_id in joined:
            cleared |= pending.pop(router_id)


def _physnet(topology, router: Router) -> Optional[str]:
    network = topology.networks.get(router.external_gateway_info.network_id)
    return network.physical_network if network is not None else None


def _senders(topology, router: Router) -> set[str]:
    """The peers that would send the router's traffic to this chassis once they see it
    alive: its other gateway chassis and the chassis hosting its VMs."""
    peers = set(router.gateway_chassis)
    for interface in topology.router_interfaces(router):
        peers.update(p.binding_host_id for p in topology.vm_ports_on(interface.network.id))
    return peers - {topology.chassis_id, '', None}


def ahead_of_active(order: list[str], me: str, alive: set[str]) -> bool:
    """Whether ``me`` is listed ahead of the first other chassis alive: coming back as it is
    would take the router from that chassis."""
    active = next((c for c in order if c != me and c in alive), None)
    return me in order and active is not None and order.index(me) < order.index(active)


class GatewayKeeper:
    def __init__(self, chassis_id: str, store: api.Store, is_gateway: bool,
                 stop: threading.Event, wake_bridge: Callable[[], None],
                 liveness: Callable[[], Mapping[str, LivenessPort]],
                 clock: Callable[[], float] = time.monotonic, settle: float = SETTLE_SECONDS):
        """``liveness``: this chassis' BFD ports as the switch has them now (ovsdb.py);
        ``wake_bridge``: the bridge keeper, which applies the decision to the ports."""
        self.chassis_id, self.store, self.is_gateway = chassis_id, store, is_gateway
        self.stop, self.wake_bridge, self.liveness = stop, wake_bridge, liveness
        self.clock, self.settle = clock, settle
        self._lock = threading.Lock()  # guards the fields the loop and the bridge keeper touch
        self._wake = threading.Event()
        self._topology = None  # of the flows last confirmed
        self._ready: Optional[bool] = None  # None: not known (no read-back, no confirmation)
        self._decision: Optional[Decision] = None if is_gateway else SERVING
        self._first_seen: dict[str, float] = {}  # peer -> when its BFD port was first seen
        self._written: dict[str, int] = {}  # router id -> revision of the order we wrote
        self._restarts = 0  # switch starts seen: a decision from before one is stale
        self._store_down = False
        self._retry_at = 0.0  # no failback write before it (the store failed: backing off)
        self._pause = BACKOFF[0]

    # From the flow loop's thread: record, wake, return.

    def confirmed(self, topology) -> None:
        """The switch has the flows of ``topology``."""
        with self._lock:
            self._topology, self._ready = topology, True
        self._wake.set()

    def switch_read(self, had_flows: bool) -> None:
        """br-int was read back; empty, it cannot serve until flows are confirmed again, and
        its BFD sessions start anew (ovs-vswitchd restarted)."""
        if not had_flows:
            self.switch_restarted('br-int is empty')

    # From the bridge keeper's thread, or the flow loop's.

    def switch_restarted(self, why: str = 'ovs-vswitchd starts again') -> None:
        """The switch starts with no flows: withdrawn from every peer at once (the BFD ports
        written or made from now on hold cpath_down) until flows are confirmed."""
        with self._lock:
            self._ready = False
            self._first_seen.clear()
            self._restarts += 1
        if self.is_gateway:
            self._publish(Decision(hold_all=True, why=why))
        self._wake.set()

    def flows_in(self) -> bool:
        """Whether the switch has confirmed flows since it last started (or was read back
        empty)."""
        with self._lock:
            return self._ready is True

    # From the bridge keeper's thread.

    def cpath_down(self, peer: str, current: Optional[bool]) -> bool:
        """Whether the BFD port to ``peer`` holds cpath_down (``current``: what it holds
        now, None for a port about to be made)."""
        with self._lock:
            decision = self._decision
        if decision is None:  # nothing decided yet: an earlier run's port stays as it is,
            return bool(current)  # a new one serves (decided before its session is up)
        return decision.holds(peer)

    def decision(self) -> Optional[Decision]:
        with self._lock:
            return self._decision

    # Its own thread.

    def run(self) -> None:
        while not self.stop.is_set():
            due = self._next_due()
            self._wake.wait(timeout=min(max(due - self.clock(), 0.0), IDLE_SECONDS))
            self._wake.clear()
            try:
                self.turn()
            except Exception:  # noqa: BLE001 - decided again at the next wake
                LOG.exception('cannot decide whether this gateway chassis serves')
                self.stop.wait(BACKOFF[1])

    def _next_due(self) -> float:
        decision = self.decision()
        due = decision.due if decision is not None and decision.due is not None else \
            float('inf')
        return min(due, self._retry_at) if self._store_down else due

    def turn(self) -> None:
        """Decide; publish the decision; write the failback orders it needs."""
        if not self.is_gateway:
            return
        with self._lock:
            topology, ready, restarts = self._topology, self._ready, self._restarts
        if topology is None and ready is not False:
            return  # nothing known yet: the ports stay as they are
        now = self.clock()
        liveness = dict(self.liveness())
        with self._lock:
            for peer in set(self._first_seen) - set(liveness):
                del self._first_seen[peer]
            for peer in liveness:
                self._first_seen.setdefault(peer, now)
            first_seen = dict(self._first_seen)
        if topology is None:
            decision = Decision(hold_all=True, why='br-int is empty')
        else:
            decision = decide(topology, liveness, bool(ready), first_seen, now,
                              self._store_down, self.settle)
        if not self._publish(decision, restarts):
            return  # the switch started again meanwhile: decided again at the next wake
        if decision.failback and now >= self._retry_at:
            self._fail_back(topology, decision.failback, liveness)

    def _publish(self, decision: Decision, restarts: Optional[int] = None) -> bool:
        """Make it the decision, unless it was made before the switch's last start
        (``restarts``: the count it was made with); whether it is."""
        with self._lock:
            if restarts is not None and restarts != self._restarts:
                return False
            before, self._decision = self._decision, decision
        if decision.same_hold(before):
            return True
        if decision.hold_all:
            LOG.warning('gateway chassis withdrawn from every peer (BFD cpath_down): %s',
                        decision.why)
        elif decision.held:
            LOG.info('gateway chassis withdrawn from %s %s', ', '.join(sorted(decision.held)),
                     decision.why)
        else:
            LOG.info('gateway chassis serving: seen alive by every peer')
        self.wake_bridge()
        return True

    def _fail_back(self, topology, router_ids: tuple, liveness: Mapping) -> None:
        """Move this chassis to the end of each router's gateway_chassis in the store, unless
        our last write is not in the cache yet."""
        alive = {peer for peer, port in liveness.items() if port.alive}
        try:
            for router_id in router_ids:
                if self._written.get(router_id, 0) > topology.routers[router_id].revision:
                    continue  # written: waiting for the cache to show it
                revision = self._move_to_end(router_id, alive)
                if revision is not None:
                    self._written[router_id] = revision
        except api.StoreError as e:
            if not self._store_down:
                LOG.warning('cannot record the failback of this gateway chassis (%s): staying '
                            'withdrawn where a peer serves, retrying in %.1f s', e, self._pause)
            self._store_down = True
            self._retry_at = self.clock() + self._pause
            self._pause = min(self._pause * 2, BACKOFF[1])
            self._wake.set()  # decided again without the store
            return
        if self._store_down:
            LOG.info('the store is back: failback recorded')
        self._store_down, self._retry_at, self._pause = False, 0.0, BACKOFF[0]

    def _move_to_end(self, router_id: str, alive: set[str]) -> Optional[int]:
        """Compare-and-swap the router's gateway_chassis with this chassis last; the revision
        the store then has (None: the router is gone)."""
        me = self.chassis_id
        for _ in range(CONFLICT_RETRIES):
            record = self.store.get(Router.table, router_id)
            if record is None:
                return None
            order = list(record.value.get('gateway_chassis', []))
            if not ahead_of_active(order, me, alive):
                return record.revision  # reordered already (by us, df-api or an operator)
            new = [c for c in order if c != me] + [me]
            try:
                revision = self.store.put(Router.table, router_id,
                                          {**record.value, 'gateway_chassis': new},
                                          expect=record.revision)
            except api.Conflict:
                continue
            LOG.info('router %s: %s moved to the end of its gateway chassis (%s) before '
                     'coming back: the peer serving it keeps it', router_id, me,
                     ', '.join(new))
            return revision
        raise api.StoreError(f'router {router_id} kept changing ({CONFLICT_RETRIES} '
                              'conflicts in a row)')
