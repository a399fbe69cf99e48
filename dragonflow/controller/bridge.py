"""br-int's own settings, kept as the controller wants them: not set once at start-up, but
checked every few seconds and restored when they drift (an operator's hand, another tool, an
ovs-vswitchd restart): fail mode secure, OpenFlow 1.3, this controller as its controller, one
flow-based tunnel port per tunnel type, a patch port pair to the provider bridge of each
bridge_mappings entry, and the switch's packet-in meter. Checking reads the local copy of the
database and one meter request: nothing is written while nothing drifted.

A provider bridge is the operator's to make (with its NIC in it), as with Neutron's OVS agent
and OVN: while it is missing, its physnet has no patch port here, an error says so (once),
and every check looks again."""
import logging
import threading

from dragonflow.controller.openflow import SwitchError

LOG = logging.getLogger(__name__)
CHECK_SECONDS = 2.0


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


class BridgeKeeper:
    def __init__(self, ovs, switch, datapath_type: str, controller: str,
                 tunnel_types: list[str], tunnel_ip: str, packet_in_limit: tuple[int, int],
                 stop: threading.Event, bridge_mappings: dict[str, str] | None = None):
        self.ovs, self.switch, self.stop = ovs, switch, stop
        self.datapath_type, self.controller = datapath_type, controller
        self.tunnel_types, self.tunnel_ip = list(tunnel_types), tunnel_ip
        self.bridge_mappings = dict(bridge_mappings or {})
        self.packet_in_limit = packet_in_limit
        self._meter_refused = False
        self._missing: set[str] = set()  # provider bridges said missing, until they appear

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
        while not self.stop.wait(CHECK_SECONDS):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the next check tries again
                LOG.exception('cannot check br-int')

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
