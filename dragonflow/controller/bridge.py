"""br-int's own settings, kept as the controller wants them: not set once at start-up, but
checked every few seconds and restored when they drift (an operator's hand, another tool, an
ovs-vswitchd restart): fail mode secure, OpenFlow 1.3, this controller as its controller, one
flow-based tunnel port per tunnel type, a patch port pair to the provider bridge of each
bridge_mappings entry, and the switch's packet-in meter. Checking reads the local copy of the
database and one meter request: nothing is written while nothing drifted.

A provider bridge is the operator's to make (with its NIC in it), as with Neutron's OVS agent
and OVN: while it is missing, its physnet has no patch port here, an error says so (once),
and every check looks again.

The BFD ports (ovsdb.py) follow the liveness peers of the topology whose flows the flow loop
last sent: one port per peer, removed when the peer leaves. The loop wakes the keeper when
that set changes and never waits for it; the gateway keeper wakes it when it withdraws this
chassis or comes back (bfd:cpath_down, gateway_keeper.py). Before the first topology the
ports of an earlier run stay (only withdrawn if so decided): a restarted controller keeps its
sessions up.

A switch that starts again (ovs-vswitchd restarted, the machine rebooted) must not be seen
alive before its flows are in: its BFD ports come back from the database as the last run
left them, serving, and its sessions would come up before any controller is there to
withdraw them. So once br-int has confirmed flows, the keeper keeps the Open_vSwitch row's
other_config:flow-restore-wait=true ([controller] flow_restore_wait): nothing to a running
ovs-vswitchd, but the next one starts waiting - no packet in, so no BFD session comes up and
nothing is forwarded, and no controller connection (ovsdb.py has the figures). Whenever the
keeper finds it waiting (the flag set and our Controller row's status empty, which only a
waiting ovs-vswitchd writes - a row we just made, or whose switch we just let start, is not
taken at its word until the switch has had the time to refresh it; or, should an Open
vSwitch not say so, no connection for RESTORE_WAIT_FALLBACK seconds), it tells the gateway
keeper (which withdraws this chassis from every peer at once) and, in one transaction,
writes the BFD ports as decided (withdrawn, on a gateway chassis) and clears the flag: the
switch connects, its sessions come up withdrawn, and the gateway keeper decides once the
flows are in. It looks every RESTORE_WAIT_POLL seconds while a switch may be starting (at
its own start, after a change of the local OVSDB's interfaces, which a new ovs-vswitchd
makes, and while br-int is not connected), else at each check. A controller restarted over
a running switch finds its status showing a connection state: nothing is withdrawn.
Clearing the flag needs only the local OVSDB (no store, no network), so a switch never waits
longer than its controller takes to start; one whose controller is gone for good waits until
the operator clears the flag (docs/architecture.md)."""
import logging
import threading
import time
from typing import Callable, Optional

from dragonflow.controller.openflow import SwitchError

LOG = logging.getLogger(__name__)
CHECK_SECONDS = 2.0
# Seconds with the flag set and no connection after which the switch is taken to wait even
# if its Controller row does not say so: a running switch reconnects well before (ours, with
# its default max_backoff of 8 s, retries every 8 s at worst).
RESTORE_WAIT_FALLBACK = 20.0
RESTORE_WAIT_POLL = 0.2  # seconds between looks with the flag set, while a switch may start
LOOK_SECONDS = 3.0  # how long after a change of the local OVSDB (or a lost connection)


def keep_cpath_down(peer: str, current: Optional[bool]) -> bool:
    """The default for a chassis without a gateway keeper: never withdrawn."""
    return False


def parse_bridge_mappings(entries: list[str]) -> dict[str, str]:
    """[controller] bridge_mappings (physnet:bridge, ...) as physnet -> bridge, in order;
    a malformed entry, or a physnet or bridge given twice, is refused as Neutron's agent
    refuses it."""
    mappings: dict[str, str] = {}
    for entry in entries:
        physnet, sep, bridge = (part.strip() for part in entry.partition(':'))
        if not sep or not physnet or not bridge or ':' in bridge:
            raise ValueError(f'bridge_mappings: {entry!r} is not <physical_network>:<bridge>')
        if physnet in mappings or bridge in mappings.values():
            raise ValueError(f'bridge_mappings: {entry!r} maps a physnet or bridge twice')
        mappings[physnet] = bridge
    return mappings


def _holds(port: dict, options: dict, bfd: dict) -> bool:
    """Whether a BFD port has these settings (others, an operator's, may be there too: a
    write merges into the maps)."""
    return all(port['options'].get(k) == v for k, v in options.items()) and \
        all(port['bfd'].get(k) == v for k, v in bfd.items())


class BridgeKeeper:
    def __init__(self, ovs, switch, datapath_type: str, controller: str,
                 tunnel_types: list[str], tunnel_ip: str, packet_in_limit: tuple[int, int],
                 stop: threading.Event, bridge_mappings: dict[str, str] | None = None,
                 topology: Callable[[], object] = lambda: None, bfd_udp_port: int = 4795,
                 bfd_interval: int = 300,
                 cpath_down: Callable[[str, Optional[bool]], bool] = keep_cpath_down,
                 flow_restore_wait: bool = False,
                 flows_in: Callable[[], bool] = lambda: False,
                 switch_restarted: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic):
        """``topology``: the one whose flows were last sent (None before the first), whose
        liveness_peers() the BFD ports follow; ``cpath_down(peer, current)``: whether the BFD
        port to that peer holds bfd:cpath_down (``current``: what it holds now, None for a
        port to make) - the gateway keeper's decision. ``flow_restore_wait``: keep the flag
        set once ``flows_in()`` (br-int confirmed flows since it started);
        ``switch_restarted()``: called when a waiting switch is let start, before its BFD
        ports are written."""
        self.ovs, self.switch, self.stop = ovs, switch, stop
        self.datapath_type, self.controller = datapath_type, controller
        self.tunnel_types, self.tunnel_ip = list(tunnel_types), tunnel_ip
        self.bridge_mappings = dict(bridge_mappings or {})
        self.packet_in_limit = packet_in_limit
        self.topology, self.cpath_down = topology, cpath_down
        self.bfd_udp_port, self.bfd_interval = bfd_udp_port, bfd_interval
        self.flow_restore_wait, self.flows_in = flow_restore_wait, flows_in
        self.switch_restarted, self.clock = switch_restarted, clock
        self._meter_refused = False
        self._missing: set[str] = set()  # provider bridges said missing, until they appear
        self._wake = threading.Event()
        self._unconnected_since: Optional[float] = clock()  # None: connected
        # When our Controller row's status last said nothing of the switch: we made the row,
        # or let its switch start (both leave it empty until ovs-vswitchd refreshes it).
        self._status_stale_at = float('-inf')
        self._looking_until = clock() + LOOK_SECONDS  # looking often (a switch may start)
        self._look_now = False

    def wake(self) -> None:
        """Bring the BFD ports in line soon (from any thread; returns at once)."""
        self._wake.set()

    def ensure(self) -> None:
        """Make br-int, its tunnel ports and its patch ports as they should be."""
        if self.ovs.ensure_bridge(self.datapath_type, self.controller):
            self._status_stale_at = self.clock()
        for tunnel_type in self.tunnel_types:
            self.ovs.ensure_tunnel_port(tunnel_type, self.tunnel_ip)
        missing = self._missing_bridges()
        for physnet, bridge in self.bridge_mappings.items():
            if bridge not in missing:
                self.ovs.ensure_patch_port(physnet, bridge)
        self.ovs.remove_stale_patch_ports(self.bridge_mappings)

    def keep_forever(self) -> None:
        next_look = self.clock()  # at once: a switch waiting for us starts now
        next_check = next_look + CHECK_SECONDS  # the flow loop limits packet-ins first
        while not self.stop.is_set():
            self._wake.wait(timeout=max(min(next_check, next_look) - self.clock(), 0.0))
            self._wake.clear()
            if self.stop.is_set():
                return
            if self.clock() >= next_look or self._look_now:
                self._look_now = False
                next_look = self.clock() + CHECK_SECONDS
                try:
                    due = self.keep_restore_wait()
                    if due is not None:
                        next_look = min(next_look, due)
                except Exception:  # noqa: BLE001 - looked at again at the next check
                    LOG.exception('cannot tell whether ovs-vswitchd waits for its flows')
            if self.clock() >= next_check:
                next_check = self.clock() + CHECK_SECONDS
                try:
                    self.check()
                except Exception:  # noqa: BLE001 - the next check tries again
                    LOG.exception('cannot check br-int')
            try:
                self.keep_liveness()
            except Exception:  # noqa: BLE001 - the next wake or check tries again
                LOG.exception('cannot keep the BFD ports')

    def keep_restore_wait(self) -> Optional[float]:
        """Let a switch that waits for us start, withdrawn as the gateway keeper decides;
        else keep the flag that makes its next start wait, once br-int has its flows. When
        to look again, if sooner than the next check (see the module docstring)."""
        now = self.clock()
        if self.switch.connected:
            self._unconnected_since = None
        elif self._unconnected_since is None:
            self._unconnected_since = now
            self._looking_until = now + LOOK_SECONDS
        start = self.ovs.switch_start(self.controller)
        if not start.restore_wait:
            if self.flow_restore_wait and self.switch.connected and self.flows_in():
                self.ovs.set_restore_wait()
                LOG.info('flows in: the next start of ovs-vswitchd waits for this controller '
                         '(other_config:flow-restore-wait=true)')
            return None
        # Only a waiting ovs-vswitchd writes the status empty, connected to us or not (our
        # connection to one that died may not have noticed yet); a row we made, or one whose
        # switch we just let start, has it empty until the switch refreshes it.
        says_waiting = start.controller_state == '' and \
            now >= self._status_stale_at + start.refresh_seconds + 1.0
        unconnected = self._unconnected_since is not None
        if not says_waiting and not (unconnected and
                                     now >= self._unconnected_since + RESTORE_WAIT_FALLBACK):
            # Read from the local copy of the database: looking often costs nothing, and a
            # switch that starts while we run is let start a moment after.
            return now + RESTORE_WAIT_POLL if unconnected or now < self._looking_until \
                else None
        self.switch_restarted()
        cpath_down = {port['name']: self.cpath_down(peer, port['bfd'].get('cpath_down') ==
                                                    'true')
                      for peer, port in self.ovs.liveness_ports().items()}
        self.ovs.end_restore_wait(cpath_down)
        LOG.warning('ovs-vswitchd waits for its flows (flow-restore-wait%s): let start, its '
                    'BFD ports %s', '' if says_waiting else
                    f', or it is not running: no connection for {RESTORE_WAIT_FALLBACK:.0f} s',
                    'withdrawn until the flows are in' if any(cpath_down.values()) else
                    'as they were')
        self._status_stale_at = now
        if unconnected:
            self._unconnected_since = now  # a switch that does not start is let start again
        return None

    def ovs_changed(self) -> None:
        """The local OVSDB's interfaces changed (from any thread; returns at once): perhaps
        a new ovs-vswitchd wrote them, so look whether it waits, often for a while."""
        self._looking_until = self.clock() + LOOK_SECONDS
        self._look_now = True
        self._wake.set()

    def keep_liveness(self) -> None:
        """One BFD port per liveness peer of the last topology sent, as it should be; the
        others removed. Nothing is written while nothing differs."""
        topology = self.topology()
        current = self.ovs.liveness_ports()
        if topology is None:  # the ports of an earlier run stay, withdrawn or not as decided
            peers = {peer: port['options'].get('remote_ip') for peer, port in current.items()}
        else:
            peers = topology.liveness_peers()
        wanted = {}
        for peer, tunnel_ip in peers.items():
            port = current.get(peer)
            held = port['bfd'].get('cpath_down') == 'true' if port else None
            settings = (self._bfd_options(tunnel_ip), self._bfd(self.cpath_down(peer, held)))
            if port is None or not port['on_bridge'] or not _holds(port, *settings):
                wanted[peer] = settings
        stale = sorted(set(current) - set(peers))
        if not wanted and not stale:
            return
        self.ovs.set_liveness_ports(wanted, stale)
        for peer, (_, bfd) in sorted(wanted.items()):
            LOG.info('BFD port to %s (%s): %s%s', peer, peers[peer],
                     'made' if peer not in current else 'set',
                     ', withdrawn (cpath_down)' if bfd['cpath_down'] == 'true' else '')
        for peer in stale:
            LOG.info('BFD port to %s removed: no longer a liveness peer', peer)

    def _bfd_options(self, tunnel_ip: str) -> dict:
        return {'remote_ip': tunnel_ip, 'local_ip': self.tunnel_ip,
                'dst_port': str(self.bfd_udp_port), 'key': '0'}

    def _bfd(self, cpath_down: bool) -> dict:
        interval = str(self.bfd_interval)
        return {'enable': 'true', 'min_tx': interval, 'min_rx': interval,
                'cpath_down': 'true' if cpath_down else 'false'}

    def check(self) -> None:
        before = set(self._missing)
        drift = self.ovs.bridge_drift(self.controller, self.tunnel_types, self.tunnel_ip,
                                      self.bridge_mappings)
        appeared = before - set(self._missing_bridges())
        if drift or appeared:
            if drift:
                LOG.warning('br-int drifted (%s): restoring it', '; '.join(drift))
            self.ensure()
        self._check_meter()

    def _missing_bridges(self) -> set[str]:
        """The provider bridges missing now; an error for each newly missing, a line for
        each one back."""
        missing = set(self.ovs.missing_bridges(self.bridge_mappings))
        physnets = {bridge: physnet for physnet, bridge in self.bridge_mappings.items()}
        for bridge in sorted(missing - self._missing):
            LOG.error('bridge %s of bridge_mappings (physnet %s) does not exist: %s has no '
                      'way out to it until the operator creates it (looking again every '
                      '%.0f s)', bridge, physnets[bridge], self.ovs.bridge, CHECK_SECONDS)
        for bridge in sorted(self._missing - missing):
            LOG.info('bridge %s (physnet %s) exists now: patching it to %s', bridge,
                     physnets[bridge], self.ovs.bridge)
        self._missing = missing
        return missing

    def _check_meter(self) -> None:
        if self._meter_refused or not self.switch.connected:
            return
        try:
            if self.switch.packet_in_limit() != self.packet_in_limit:
                LOG.warning('the packet-in meter is not %d/s (burst %d): restoring it',
                            *self.packet_in_limit)
                self.switch.limit_packet_ins(*self.packet_in_limit)
        except SwitchError as e:
            if e.error:  # a datapath without meters: the flow loop warned
                self._meter_refused = True
                LOG.info('not checking the packet-in meter: %s', e)
