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
sessions up."""
import logging
import threading
import time
from typing import Callable, Optional

from dragonflow.controller.openflow import SwitchError

LOG = logging.getLogger(__name__)
CHECK_SECONDS = 2.0


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
                 cpath_down: Callable[[str, Optional[bool]], bool] = keep_cpath_down):
        """``topology``: the one whose flows were last sent (None before the first), whose
        liveness_peers() the BFD ports follow; ``cpath_down(peer, current)``: whether the BFD
        port to that peer holds bfd:cpath_down (``current``: what it holds now, None for a
        port to make) - the gateway keeper's decision."""
        self.ovs, self.switch, self.stop = ovs, switch, stop
        self.datapath_type, self.controller = datapath_type, controller
        self.tunnel_types, self.tunnel_ip = list(tunnel_types), tunnel_ip
        self.bridge_mappings = dict(bridge_mappings or {})
        self.packet_in_limit = packet_in_limit
        self.topology, self.cpath_down = topology, cpath_down
        self.bfd_udp_port, self.bfd_interval = bfd_udp_port, bfd_interval
        self._meter_refused = False
        self._missing: set[str] = set()  # provider bridges said missing, until they appear
        self._wake = threading.Event()

    def wake(self) -> None:
        """Bring the BFD ports in line soon (from any thread; returns at once)."""
        self._wake.set()

    def ensure(self) -> None:
        """Make br-int, its tunnel ports and its patch ports as they should be."""
        self.ovs.ensure_bridge(self.datapath_type, self.controller)
        for tunnel_type in self.tunnel_types:
            self.ovs.ensure_tunnel_port(tunnel_type, self.tunnel_ip)
        missing = self._missing_bridges()
        for physnet, bridge in self.bridge_mappings.items():
            if bridge not in missing:
                self.ovs.ensure_patch_port(physnet, bridge)
        self.ovs.remove_stale_patch_ports(self.bridge_mappings)

    def keep_forever(self) -> None:
        next_check = time.monotonic() + CHECK_SECONDS
        while not self.stop.is_set():
            self._wake.wait(timeout=max(next_check - time.monotonic(), 0.0))
            self._wake.clear()
            if self.stop.is_set():
                return
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + CHECK_SECONDS
                try:
                    self.check()
                except Exception:  # noqa: BLE001 - the next check tries again
                    LOG.exception('cannot check br-int')
            try:
                self.keep_liveness()
            except Exception:  # noqa: BLE001 - the next wake or check tries again
                LOG.exception('cannot keep the BFD ports')

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
