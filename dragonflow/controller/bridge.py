"""br-int's own settings, kept as the controller wants them: not set once at start-up, but
checked every few seconds and restored when they drift (an operator's hand, another tool, an
ovs-vswitchd restart): fail mode secure, OpenFlow 1.3, this controller as its controller, the
flow-based tunnel port, and the switch's packet-in meter. Checking reads the local copy of the
database and one meter request: nothing is written while nothing drifted."""
import logging
import threading

from dragonflow.controller.openflow import SwitchError

LOG = logging.getLogger(__name__)
CHECK_SECONDS = 2.0


class BridgeKeeper:
    def __init__(self, ovs, switch, datapath_type: str, controller: str, tunnel_type: str,
                 tunnel_ip: str, packet_in_limit: tuple[int, int], stop: threading.Event):
        self.ovs, self.switch, self.stop = ovs, switch, stop
        self.datapath_type, self.controller = datapath_type, controller
        self.tunnel_type, self.tunnel_ip = tunnel_type, tunnel_ip
        self.packet_in_limit = packet_in_limit
        self._meter_refused = False

    def ensure(self) -> None:
        """Make br-int and the tunnel port as they should be."""
        self.ovs.ensure_bridge(self.datapath_type, self.controller)
        self.ovs.ensure_tunnel_port(self.tunnel_type, self.tunnel_ip)

    def keep_forever(self) -> None:
        while not self.stop.wait(CHECK_SECONDS):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the next check tries again
                LOG.exception('cannot check br-int')

    def check(self) -> None:
        drift = self.ovs.bridge_drift(self.controller, self.tunnel_type, self.tunnel_ip)
        if drift:
            LOG.warning('br-int drifted (%s): restoring it', '; '.join(drift))
            self.ensure()
        self._check_meter()

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
