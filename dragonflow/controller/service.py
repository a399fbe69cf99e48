"""df-controller: one per chassis. This module puts the parts together and runs them, each
job in a thread of its own (supervisor.py says what happens when one dies):

| thread | job | module |
|---|---|---|
| flow-loop | compute br-int's flows and send the difference | flow_loop.py, confirmations.py |
| store-watcher, store-refill | keep the cache current from the store | store_watcher.py |
| reporter | chassis record, heartbeats, port status to the store | reports.py |
| dhcp | answer DHCP requests from local ports | packet_ins.py |
| neighbours | external gateways' MACs by ARP; gratuitous ARPs of floating IPs | neighbours.py |
| bridge-keeper | keep br-int's settings, tunnel, patch and BFD ports, meter; restarts | bridge.py |
| gateway-keeper | withdraw a gateway chassis (BFD) while it cannot serve | gateway_keeper.py |
| os-ken's, ovsdbapp's | the OpenFlow connection, the local OVSDB | openflow.py, ovsdb.py |

While the store is unreachable the data plane stays as it is, and still follows the VM
interfaces plugged and unplugged for the ports the cache knows, and the gateway chassis'
liveness (BFD, in the data plane); reports and failback records wait for the store.
"""
import hashlib
import logging
import os
import signal
import socket
import sys
import time

from dragonflow import conf as df_conf
from dragonflow import store as df_store
from dragonflow.controller import flow_loop
from dragonflow.controller.apps import dhcp, units
from dragonflow.controller.bridge import BridgeKeeper, parse_bridge_mappings
from dragonflow.controller.cache import Cache
from dragonflow.controller.flow_loop import FlowLoop
from dragonflow.controller.gateway_keeper import GatewayKeeper
from dragonflow.controller.neighbours import Neighbours
from dragonflow.controller.openflow import OpenFlowSwitch, PacketIn
from dragonflow.controller.ovsdb import LocalOvs
from dragonflow.controller.packet_ins import PacketIns
from dragonflow.controller.reports import Reporter
from dragonflow.controller.store_watcher import StoreWatcher
from dragonflow.controller.supervisor import Supervisor
from dragonflow.model import Chassis
from dragonflow.store import api

LOG = logging.getLogger(__name__)
FAULT_ENV = 'DRAGONFLOW_INJECT_FAULT'  # a test hook: <app>:<object id> (apps/units.py)


class Controller:
    def __init__(self, conf, store: api.Store, ovs: LocalOvs, switch: OpenFlowSwitch,
                 clock=time.monotonic):
        c = conf.controller
        self.chassis_id = c.chassis_id or socket.gethostname()
        self.supervisor = Supervisor()
        self.stop_event = self.supervisor.stop
        self.cache = Cache(self.chassis_id)
        self.bridge_mappings = parse_bridge_mappings(c.bridge_mappings)
        self.router_mac = router_mac(self.chassis_id)
        self.gateways = GatewayKeeper(
            self.chassis_id, store, c.gateway, self.stop_event,
            wake_bridge=lambda: self.bridge.wake(), liveness=lambda: ovs.interfaces().liveness,
            clock=clock)
        self.watcher = StoreWatcher(store, self.cache, self.stop_event,
                                    on_change=lambda: self.wake())
        self.neighbours = Neighbours(
            switch, conf.l3.external_gateway_refresh, self.stop_event,
            wake_loop=lambda: self.wake(), installed=lambda: self.loop.reconciler.installed,
            cache=self.cache, clock=clock)
        self.reporter = Reporter(
            store, self.cache, Chassis(id=self.chassis_id, tunnel_ip=c.tunnel_ip,
                                       tunnel_types=c.tunnel_types,
                                       physical_networks=sorted(self.bridge_mappings),
                                       router_mac=self.router_mac, gateway=c.gateway,
                                       datapath_type=c.datapath_type),
            c.heartbeat_interval, self.stop_event, wake_loop=lambda: self.wake(), clock=clock,
            on_confirmed=(self.neighbours.confirmed, self.gateways.confirmed))
        self.packet_ins = PacketIns(
            switch, dhcp.Settings(lease_time=conf.dhcp.lease_time,
                                  metadata_ip=conf.dhcp.metadata_ip),
            conf.dhcp.rate_limit, self.stop_event, topology=lambda: self.loop.sent,
            neighbours=self.neighbours)
        self.loop = FlowLoop(self.chassis_id, self.cache, ovs, switch, c.tunnel_types,
                             self.reporter, self.watcher, self.packet_ins, self.supervisor,
                             clock=clock, gateway_macs=self.neighbours.macs,
                             router_mac=self.router_mac, bridge_mappings=self.bridge_mappings,
                             is_gateway=c.gateway,
                             liveness_peers_changed=lambda: self.bridge.wake(),
                             read_back=self.gateways.switch_read)
        self.bridge = BridgeKeeper(
            ovs, switch, c.datapath_type, f'tcp:{c.openflow_listen_host}:{c.openflow_listen_port}',
            c.tunnel_types, c.tunnel_ip,
            (flow_loop.PACKET_IN_RATE, flow_loop.PACKET_IN_BURST), self.stop_event,
            self.bridge_mappings, topology=lambda: self.loop.sent,
            bfd_udp_port=c.bfd_udp_port, bfd_interval=c.bfd_interval,
            cpath_down=self.gateways.cpath_down, flow_restore_wait=c.flow_restore_wait,
            flows_in=self.gateways.flows_in, switch_restarted=self.gateways.switch_restarted,
            clock=clock)

    def wake(self) -> None:
        self.loop.wake()

    def ovs_changed(self) -> None:
        """The local OVSDB's interfaces changed (ovsdbapp's thread)."""
        self.loop.wake()
        self.bridge.ovs_changed()

    def switch_connected(self) -> None:
        self.loop.switch_connected()

    def packet_in(self, packet_in: PacketIn) -> None:
        self.packet_ins.packet_in(packet_in)

    def run(self) -> int:
        """Until stopped (0) or a thread dies (non-zero)."""
        start = self.supervisor.start
        start('store-watcher', self.watcher.watch_forever)
        start('store-refill', self.watcher.refill_forever)
        start('reporter', self.reporter.run)
        start('dhcp', self.packet_ins.serve_dhcp_forever)
        start('neighbours', self.neighbours.run)
        start('bridge-keeper', self.bridge.keep_forever)
        start('gateway-keeper', self.gateways.run)
        loop = start('flow-loop', self.loop.run)
        while not self.stop_event.wait(0.5):  # the main thread takes the signals
            pass
        self.loop.wake()
        loop.join(timeout=5.0)
        return self.supervisor.exit_code


def router_mac(chassis_id: str) -> str:
    """The chassis' own source MAC for the frames its routers send on physical networks:
    locally administered (fa:16:3f, next to Neutron's fa:16:3e ports), the rest a hash of the
    chassis id, so every chassis has its own and keeps it across restarts, and an upstream
    switch never sees one MAC move between chassis."""
    digest = hashlib.sha256(chassis_id.encode()).digest()
    return 'fa:16:3f:' + ':'.join(f'{b:02x}' for b in digest[:3])


def main(argv=None) -> int:
    conf = df_conf.load(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    if os.environ.get(FAULT_ENV):
        app, _, object_id = os.environ[FAULT_ENV].partition(':')
        units.inject_fault(app, object_id)
        LOG.warning('test hook: app %s fails for %s', app, object_id)
    c = conf.controller
    store = df_store.connect(conf.store.url, timeout=conf.store.timeout)
    controller = None
    switch = OpenFlowSwitch(c.openflow_listen_host, c.openflow_listen_port,
                            on_connect=lambda: controller and controller.switch_connected(),
                            on_packet_in=lambda *a: controller and controller.packet_in(*a))
    ovs = LocalOvs(c.ovsdb_connection, c.integration_bridge, on_change=lambda: controller
                   and controller.ovs_changed())
    controller = Controller(conf, store, ovs, switch)
    switch.start()
    controller.bridge.ensure()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: controller.stop_event.set())
    LOG.info('df-controller %s running', controller.chassis_id)
    code = controller.run()
    LOG.info('df-controller %s stopping (status %d); the flows stay in br-int',
             controller.chassis_id, code)
    ovs.stop()
    # os-ken's listener and connection threads are not daemons and cannot be interrupted.
    os._exit(code)
