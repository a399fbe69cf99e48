"""The controller's loop against a real (sqlite) store and a simulated br-int that answers
only when the test says: a port is reported bound and ACTIVE once the switch has confirmed its
flows, not when they are sent; a refused change makes the controller read the switch back; the
loop never waits on the store, and no error of a pass stops it."""
import concurrent.futures
import threading
import types

import pytest

from dragonflow import conf as df_conf
from dragonflow import store as df_store
from dragonflow.controller import bridge, flow_loop, ovsdb
from dragonflow.controller.bridge import BridgeKeeper, parse_bridge_mappings
from dragonflow.controller.openflow import SwitchError
from dragonflow.controller.ovsdb import LIVENESS_PEER, Interfaces, LivenessPort, liveness_port_name
from dragonflow.controller.service import Controller, router_mac
from dragonflow.model import FixedIP, Network, Port, Subnet
from dragonflow.store import api
from tests.flowsim import FlowTableSimulator
from tests.unit.clock import Clock

ME = 'chassis-1'


class Switch(FlowTableSimulator):
    """Holds each change until the test confirms it (then applies it) or refuses it (then
    drops it); counts read-backs."""

    connected = True

    def __init__(self):
        super().__init__()
        self.pending: list = []  # (confirmation, deletes, adds)
        self.dumps = 0
        self.failing_dumps = 0

    def apply(self, deletes, adds, then=None):
        if then:
            then()
        self.pending.append((concurrent.futures.Future(), deletes, adds))
        return self.pending[-1][0]

    def dump_flows(self):
        self.dumps += 1
        if self.failing_dumps:
            self.failing_dumps -= 1
            raise SwitchError('no reply from br-int in 10 s')
        return super().dump_flows()

    def limit_packet_ins(self, rate, burst):
        pass

    def packet_in_limit(self):
        return None

    def send_packets(self, packets):
        pass

    def confirm(self, error=None):
        for confirmation, deletes, adds in self.pending:
            if confirmation.cancelled():
                continue
            if error:
                confirmation.set_exception(SwitchError(error))
            else:
                super().apply(deletes, adds)
                confirmation.set_result([])
        self.pending.clear()


class Ovs:
    def __init__(self):
        self.plugged: dict[str, int] = {}
        self.liveness: dict = {}  # peer -> LivenessPort
        self.uplinks: dict = {}  # bridge -> carrier of each uplink

    def interfaces(self):
        return Interfaces(dict(self.plugged), {}, {}, dict(self.liveness), dict(self.uplinks))


class Outage:
    """A store that can be taken away: every call raises Unavailable while ``down``."""

    def __init__(self, store):
        self.store, self.down = store, False

    def __getattr__(self, name):
        attribute = getattr(self.store, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            if self.down:
                raise api.Unavailable('the store is down')
            return attribute(*args, **kwargs)
        return call


@pytest.fixture
def cloud(tmp_path):
    store = Outage(df_store.connect(f'sqlite:///{tmp_path}/nb.db'))
    conf = df_conf.load([])
    conf.set_override('chassis_id', ME, 'controller')
    store.put(Network.table, 'net', Network(id='net', key=1).to_doc())
    store.put(Subnet.table, 'subnet', Subnet(id='subnet', network_id='net',
                                             cidr='10.0.0.0/24').to_doc())
    store.put(Port.table, 'vm', Port(id='vm', key=2, network_id='net',
                                     mac_address='fa:16:3e:00:00:02', fixed_ips=[
                                         FixedIP(subnet_id='subnet', ip_address='10.0.0.5')])
              .to_doc())
    switch, ovs = Switch(), Ovs()
    controller = Controller(conf, store, ovs, switch, clock=Clock())
    controller.watcher.refill()
    return controller, store, switch, ovs


def step(controller):
    """One turn of the loop, as run() takes it after a wake; the scope reloaded if the turn
    asked for it, and then the turn the reload wakes; one round of the reporter."""
    controller.loop.turn()
    try:
        if controller.cache.needs_refill:
            controller.watcher.refill()
            controller.loop.turn()
        controller.reporter.report()
    except api.StoreError:
        pass  # retried by their threads


def status(store):
    port = store.get(Port.table, 'vm').value
    return port['binding:host_id'], port['status']


@pytest.fixture
def plugging(cloud):
    """The controller has started, and sent (not yet confirmed) the flows of vm's plug."""
    controller, store, switch, ovs = cloud
    step(controller)
    switch.confirm()
    ovs.plugged['vm'] = 5
    controller.wake()
    step(controller)
    assert switch.pending
    return controller, store, switch


def test_a_plugged_port_is_active_once_the_switch_confirms_its_flows(plugging):
    controller, store, switch = plugging
    assert status(store) == ('', 'DOWN')
    controller.wake()
    step(controller)  # nothing new to send: the port waits for the same confirmation
    assert status(store) == ('', 'DOWN')
    switch.confirm()
    step(controller)
    assert status(store) == (ME, 'ACTIVE')


def test_a_refused_change_reads_the_switch_back_and_sends_again(plugging):
    controller, store, switch = plugging
    dumps = switch.dumps
    switch.confirm(error='OpenFlow error type 17 code 0')
    step(controller)
    assert switch.dumps == dumps + 1 and status(store) == ('', 'DOWN')
    switch.confirm()
    step(controller)
    assert status(store) == (ME, 'ACTIVE')


def test_a_failed_read_back_is_tried_again_before_anything_is_reported(plugging):
    """The mirror still holds the refused change: reconciling against it would send nothing
    and report the port ACTIVE without its flows."""
    controller, store, switch = plugging
    switch.confirm(error='OpenFlow error type 17 code 0')
    switch.failing_dumps = 1
    with pytest.raises(SwitchError):
        step(controller)
    controller.wake()  # as run() does after a failed pass
    step(controller)
    assert switch.pending and status(store) == ('', 'DOWN')
    switch.confirm()
    step(controller)
    assert status(store) == (ME, 'ACTIVE') and 5 in {
        a.port for f in switch.flows.values() for a in f.actions if hasattr(a, 'port')}


def test_a_change_never_answered_is_given_up(plugging):
    controller, store, switch = plugging
    dumps = switch.dumps
    [(confirmation, _, _)] = controller.loop.unconfirmed._changes
    controller.loop.unconfirmed.clock.now += 10.0  # its time is up
    step(controller)
    assert switch.dumps == dumps + 1 and confirmation.cancelled()
    assert status(store) == ('', 'DOWN')


def test_a_vm_plugged_during_a_store_outage_gets_its_flows_and_is_reported_after(cloud):
    """Nova bound the port here before the outage, so the cache knows it."""
    controller, store, switch, ovs = cloud
    record = store.get(Port.table, 'vm')
    store.put(Port.table, 'vm', {**record.value, 'binding:host_id': ME})
    controller.watcher.watch_once()
    step(controller)
    switch.confirm()
    store.down = True
    ovs.plugged['vm'] = 5
    controller.wake()
    step(controller)  # neither the loop nor the reporter waits for the store
    switch.confirm()
    step(controller)
    assert 5 in {a.port for f in switch.flows.values() for a in f.actions if hasattr(a, 'port')}
    store.down = False
    assert status(store) == (ME, 'DOWN')
    controller.reporter.report()
    assert status(store) == (ME, 'ACTIVE')


def test_the_loop_does_not_touch_the_store(cloud):
    """Not even to reload the scope for a VM the cache does not know: the refiller does."""
    controller, store, switch, ovs = cloud
    store.down = True
    ovs.plugged['unknown'] = 7
    controller.wake()
    controller.loop.turn()
    assert controller.cache.needs_refill


def test_a_heartbeat_is_liveness_not_a_change(cloud):
    controller, store, switch, _ = cloud
    revision = store.revision()
    controller.reporter.report()
    assert store.revision() == revision + 1  # the chassis registered, once
    assert store.heartbeats()[ME]['revision_seen'] == 0  # no flows confirmed yet
    step(controller)
    switch.confirm()
    step(controller)
    controller.reporter.clock.now += 60
    controller.reporter.report()
    assert store.revision() == revision + 1
    beat = store.heartbeats()[ME]
    assert beat['networks'] == [] and beat['revision_seen'] == controller.cache.revision > 0


def test_a_failing_pass_is_retried_then_started_from_scratch_then_the_process_exits(
        cloud, monkeypatch):
    controller, _, _, _ = cloud
    loop = controller.loop
    monkeypatch.setattr(flow_loop, 'FAILURE_BACKOFF', (0.0, 0.0))
    refills = []
    monkeypatch.setattr(controller.watcher, 'ask_refill', lambda: refills.append(1))

    def broken():
        raise KeyError('a bug outside the apps')
    monkeypatch.setattr(loop, 'topology', broken)
    for failure in range(1, flow_loop.FAILURES_BEFORE_EXIT):
        loop.contained_turn()  # it wakes itself again
        assert controller.supervisor.exit_code == 0 and not controller.stop_event.is_set()
        assert len(refills) == failure // flow_loop.FAILURES_BEFORE_RESYNC
    loop.contained_turn()
    assert controller.supervisor.exit_code == 1 and controller.stop_event.is_set()


def test_run_exits_non_zero_when_a_thread_dies(cloud, monkeypatch):
    controller, _, _, _ = cloud

    def dies():
        raise RuntimeError('a bug in the reporter')
    monkeypatch.setattr(controller.reporter, 'run', dies)
    result = []
    runner = threading.Thread(target=lambda: result.append(controller.run()))
    runner.start()
    runner.join(timeout=10)
    assert result == [1]


def test_a_change_that_changes_no_flow_is_applied_at_once(cloud):
    """The heartbeat's revision follows the store past changes this chassis does not serve,
    and stays behind one whose flows the switch has not confirmed."""
    controller, store, switch, ovs = cloud
    step(controller)
    switch.confirm()
    step(controller)
    store.put(Network.table, 'elsewhere', Network(id='elsewhere', key=9).to_doc())
    controller.watcher.watch_once()
    controller.reporter.clock.now += 60
    step(controller)
    assert store.heartbeats()[ME]['revision_seen'] == store.revision()
    ovs.plugged['vm'] = 5
    controller.wake()
    step(controller)
    switch.confirm()
    step(controller)
    record = store.get(Port.table, 'vm')
    store.put(Port.table, 'vm', {**record.value, 'mac_address': 'fa:16:3e:00:00:99'},
              expect=record.revision)  # flows to change, not confirmed yet
    controller.watcher.watch_once()
    controller.reporter.clock.now += 60
    step(controller)
    assert store.heartbeats()[ME]['revision_seen'] < store.revision()
    switch.confirm()
    controller.reporter.clock.now += 60
    step(controller)
    assert store.heartbeats()[ME]['revision_seen'] == store.revision()


def test_a_deleted_chassis_record_is_registered_again(cloud):
    controller, store, _, _ = cloud
    controller.reporter.report()
    store.delete('chassis', ME)
    controller.watcher.watch_once()
    controller.reporter.report()
    assert store.get('chassis', ME).value['tunnel_ip'] == '127.0.0.1'


# Bridge mappings: the chassis record says what this chassis maps; the bridge keeper patches
# each provider bridge once it exists and never makes one.
def test_the_chassis_record_carries_its_physnets_and_router_mac(tmp_path):
    conf = df_conf.load([])
    conf.set_override('chassis_id', ME, 'controller')
    conf.set_override('bridge_mappings', ['physnet2:br-vlan', 'physnet1:br-ex'], 'controller')
    conf.set_override('tunnel_types', ['gre', 'vxlan'], 'controller')
    store = df_store.connect(f'sqlite:///{tmp_path}/nb.db')
    controller = Controller(conf, store, Ovs(), Switch(), clock=Clock())
    controller.reporter.report()
    record = store.get('chassis', ME).value
    assert record['physical_networks'] == ['physnet1', 'physnet2']
    assert record['router_mac'] == router_mac(ME) != router_mac('chassis-2')
    assert record['tunnel_types'] == ['gre', 'vxlan']
    assert controller.bridge.bridge_mappings == {'physnet2': 'br-vlan', 'physnet1': 'br-ex'}


def test_a_router_mac_is_locally_administered_unicast_and_stable():
    mac = router_mac('compute-17')
    first = int(mac[:2], 16)
    assert mac.startswith('fa:16:3f:') and first & 2 and not first & 1
    assert router_mac('compute-17') == mac and len(mac.split(':')) == 6


@pytest.mark.parametrize('entries', [['physnet1'], ['physnet1:'], [':br-ex'],
                                     ['physnet1:br-ex', 'physnet1:br-vlan'],
                                     ['physnet1:br-ex', 'physnet2:br-ex']])
def test_malformed_bridge_mappings_are_refused(entries):
    with pytest.raises(ValueError, match='bridge_mappings'):
        parse_bridge_mappings(entries)


class MappedOvs:
    """The OVSDB side of the bridge keeper: bridges that exist, and what it made."""

    bridge = 'br-int'

    def __init__(self, bridges=()):
        self.bridges, self.made = set(bridges), []

    def bridge_drift(self, controller, tunnel_types, local_ip, mappings):
        return [f'patch of {physnet}' for physnet, bridge in mappings.items()
                if bridge in self.bridges and ('patch', physnet, bridge) not in self.made]

    def missing_bridges(self, mappings):
        return [bridge for bridge in mappings.values() if bridge not in self.bridges]

    def ensure_bridge(self, datapath_type, controller):
        self.made.append(('bridge',))

    def ensure_tunnel_port(self, tunnel_type, local_ip):
        self.made.append(('tunnel', tunnel_type))

    def ensure_patch_port(self, physnet, bridge):
        self.made.append(('patch', physnet, bridge))

    def remove_stale_patch_ports(self, mappings):
        pass


def test_a_missing_provider_bridge_is_said_once_and_patched_once_it_exists(caplog):
    ovs = MappedOvs()
    keeper = BridgeKeeper(ovs, Switch(), 'netdev', 'tcp:127.0.0.1:6653', ['vxlan', 'gre'],
                          '172.31.0.11', (500, 100), threading.Event(), {'physnet1': 'br-ex'})
    keeper.ensure()
    assert ovs.made == [('bridge',), ('tunnel', 'vxlan'), ('tunnel', 'gre')]  # never br-ex
    keeper.check()
    keeper.check()
    assert [r.message for r in caplog.records].count(next(
        r.message for r in caplog.records if 'br-ex' in r.message)) == 1
    assert ('patch', 'physnet1', 'br-ex') not in ovs.made
    ovs.bridges.add('br-ex')  # the operator made it
    keeper.check()
    assert ('patch', 'physnet1', 'br-ex') in ovs.made
    made = len(ovs.made)
    keeper.check()
    assert len(ovs.made) == made  # nothing drifted: nothing written


class LivenessOvs:
    """The BFD ports of the local OVSDB as the bridge keeper reads and writes them."""

    def __init__(self, ports=None):
        self.ports = dict(ports or {})  # peer -> {'name', 'options', 'bfd', 'on_bridge'}
        self.writes = 0

    def liveness_ports(self):
        return {peer: dict(port) for peer, port in self.ports.items()}

    def set_liveness_ports(self, ports, stale):
        self.writes += 1
        for peer, (options, bfd) in ports.items():
            self.ports[peer] = {'name': liveness_port_name(peer), 'options': options,
                                'bfd': bfd, 'on_bridge': True}
        for peer in stale:
            del self.ports[peer]


class Peers:
    """The topology the flow loop sent, as far as the bridge keeper reads it."""

    def __init__(self, **peers):
        self.peers = peers

    def liveness_peers(self):
        return dict(self.peers)


def liveness_keeper(ovs, topology, cpath_down=lambda peer, current: False):
    return BridgeKeeper(ovs, Switch(), 'netdev', 'tcp:127.0.0.1:6653', ['vxlan'],
                        '172.31.0.11', (500, 100), threading.Event(), {},
                        topology=lambda: topology[0], bfd_udp_port=4795, bfd_interval=300,
                        cpath_down=cpath_down)


def test_one_bfd_port_per_liveness_peer_made_once_and_removed_when_it_leaves():
    ovs, sent = LivenessOvs(), [Peers(**{'gw-2': '172.31.0.12', 'compute-3': '172.31.0.13'})]
    keeper = liveness_keeper(ovs, sent)
    keeper.keep_liveness()
    assert ovs.ports['gw-2']['options'] == {'remote_ip': '172.31.0.12',
                                            'local_ip': '172.31.0.11', 'dst_port': '4795',
                                            'key': '0'}
    assert ovs.ports['gw-2']['bfd'] == {'enable': 'true', 'min_tx': '300', 'min_rx': '300',
                                        'cpath_down': 'false'}
    assert set(ovs.ports) == {'gw-2', 'compute-3'}
    keeper.keep_liveness()
    assert ovs.writes == 1  # nothing differs: nothing written
    ovs.ports['gw-2']['bfd'] = {**ovs.ports['gw-2']['bfd'], 'forwarding_if_rx': 'true'}
    keeper.keep_liveness()
    assert ovs.writes == 1  # an operator's own setting is no drift
    sent[0] = Peers(**{'gw-2': '172.31.0.12'})
    keeper.keep_liveness()
    assert set(ovs.ports) == {'gw-2'}


def test_bfd_ports_of_an_earlier_run_stay_until_the_first_topology_but_follow_cpath_down():
    earlier = {'name': liveness_port_name('gw-2'),
               'options': {'remote_ip': '172.31.0.12', 'local_ip': '172.31.0.11',
                           'dst_port': '4795', 'key': '0'},
               'bfd': {'enable': 'true', 'min_tx': '300', 'min_rx': '300',
                       'cpath_down': 'false'}, 'on_bridge': True}
    ovs, sent, held = LivenessOvs({'gw-2': earlier}), [None], [False]
    keeper = liveness_keeper(ovs, sent, cpath_down=lambda peer, current: held[0])
    keeper.keep_liveness()
    assert ovs.writes == 0 and set(ovs.ports) == {'gw-2'}
    held[0] = True  # the gateway keeper withdraws this chassis (br-int came back empty)
    keeper.keep_liveness()
    assert ovs.ports['gw-2']['bfd']['cpath_down'] == 'true'
    assert ovs.ports['gw-2']['options']['remote_ip'] == '172.31.0.12'


class RestartingOvs(LivenessOvs):
    """The local OVSDB of a switch that may be waiting for its flows (flow-restore-wait)."""

    def __init__(self, ports=None, restore_wait=False, controller_state='ACTIVE'):
        super().__init__(ports)
        self.restore_wait, self.controller_state = restore_wait, controller_state
        self.transactions: list = []  # what end_restore_wait wrote, in one transaction each

    def switch_start(self, controller):
        return ovsdb.SwitchStart(self.restore_wait, self.controller_state, 5.0)

    def set_restore_wait(self):
        self.restore_wait = True

    def end_restore_wait(self, cpath_down):
        self.transactions.append(dict(cpath_down))
        for port in self.ports.values():
            held = cpath_down[port['name']]
            port['bfd'] = {**port['bfd'], 'cpath_down': 'true' if held else 'false'}
        self.restore_wait = False

    def ensure_bridge(self, datapath_type, controller):
        return True  # a new Controller row: no status until ovs-vswitchd refreshes it

    def ensure_tunnel_port(self, tunnel_type, local_ip):
        pass

    def missing_bridges(self, mappings):
        return []

    def remove_stale_patch_ports(self, mappings):
        pass


def _bfd_port(peer, held=False):
    return {'name': liveness_port_name(peer), 'options': {},
            'bfd': {'enable': 'true', 'cpath_down': 'true' if held else 'false'},
            'on_bridge': True}


def restart_keeper(ovs, connected=False, flows_in=False, flow_restore_wait=True,
                   cpath_down=None):
    """A bridge keeper with a gateway keeper's withdrawal: once told the switch restarted,
    every port holds cpath_down."""
    switch, clock, told = Switch(), Clock(), []
    switch.connected = connected
    if cpath_down is None:
        def cpath_down(peer, current):
            return bool(told) or bool(current)
    keeper = BridgeKeeper(ovs, switch, 'netdev', 'tcp:127.0.0.1:6653', ['vxlan'],
                          '172.31.0.11', (500, 100), threading.Event(), {},
                          cpath_down=cpath_down, flow_restore_wait=flow_restore_wait,
                          flows_in=lambda: flows_in, switch_restarted=lambda: told.append(1),
                          clock=clock)
    return keeper, switch, clock, told


def test_a_switch_waiting_for_its_flows_starts_with_its_bfd_ports_withdrawn():
    ovs = RestartingOvs({'gw-2': _bfd_port('gw-2'), 'compute-3': _bfd_port('compute-3')},
                        restore_wait=True, controller_state='')  # as a waiting switch has it
    keeper, _, _, told = restart_keeper(ovs)
    assert keeper.keep_restore_wait() is None
    assert told  # the gateway keeper withdrew this chassis before the ports were written
    assert ovs.transactions == [{liveness_port_name('gw-2'): True,
                                 liveness_port_name('compute-3'): True}]
    assert not ovs.restore_wait


def test_a_chassis_that_is_no_gateway_lets_its_waiting_switch_start_serving():
    ovs = RestartingOvs({'gw-2': _bfd_port('gw-2')}, restore_wait=True, controller_state='')
    keeper, *_ = restart_keeper(ovs, cpath_down=lambda peer, current: False)
    keeper.keep_restore_wait()
    assert ovs.transactions == [{liveness_port_name('gw-2'): False}] and not ovs.restore_wait


def test_a_running_switch_is_not_withdrawn_while_it_reconnects():
    """A controller restarted over a running switch: the flag set, not connected yet, but
    its Controller row has a connection state."""
    ovs = RestartingOvs({'gw-2': _bfd_port('gw-2')}, restore_wait=True,
                        controller_state='BACKOFF')
    keeper, switch, clock, told = restart_keeper(ovs)
    started = clock.now
    due = keeper.keep_restore_wait()
    assert not told and not ovs.transactions and ovs.restore_wait
    assert due == started + bridge.RESTORE_WAIT_POLL  # looked at again soon
    clock.now += 5
    switch.connected = True
    keeper.keep_restore_wait()
    clock.now += 60
    keeper.keep_restore_wait()
    assert not told and not ovs.transactions and ovs.restore_wait


def test_a_switch_that_never_connects_is_let_start_after_a_while():
    """An Open vSwitch whose Controller row would not say it waits, or one not running:
    no connection for RESTORE_WAIT_FALLBACK seconds."""
    ovs = RestartingOvs({'gw-2': _bfd_port('gw-2')}, restore_wait=True,
                        controller_state='ACTIVE')  # a dead switch's last word
    keeper, _, clock, told = restart_keeper(ovs)
    keeper.keep_restore_wait()
    clock.now += bridge.RESTORE_WAIT_FALLBACK - 0.1
    keeper.keep_restore_wait()
    assert not ovs.transactions
    clock.now += 0.1
    keeper.keep_restore_wait()
    assert told and ovs.transactions == [{liveness_port_name('gw-2'): True}]


def test_a_controller_row_just_made_says_nothing_until_the_switch_refreshed_it():
    ovs = RestartingOvs({'gw-2': _bfd_port('gw-2')}, restore_wait=True, controller_state='')
    keeper, _, clock, _ = restart_keeper(ovs)
    keeper.ensure()  # a new row: empty status on a running switch too, for up to 5 s
    made = clock.now
    keeper.keep_restore_wait()
    clock.now = made + 5.0 + 0.9
    keeper.keep_restore_wait()
    assert not ovs.transactions
    clock.now = made + 5.0 + 1.0
    keeper.keep_restore_wait()
    assert len(ovs.transactions) == 1


def test_a_new_switch_waiting_is_let_start_before_the_old_connection_is_seen_lost():
    """Our connection to the ovs-vswitchd that died may look up for a second more: the
    status only a waiting one writes is enough."""
    ovs = RestartingOvs({'gw-2': _bfd_port('gw-2')}, restore_wait=True,
                        controller_state='ACTIVE')
    keeper, switch, clock, told = restart_keeper(ovs, connected=True)
    clock.now += bridge.LOOK_SECONDS  # looked at often after its start only
    assert keeper.keep_restore_wait() is None  # running: nothing to look at often
    ovs.controller_state = ''  # a new ovs-vswitchd wrote its rows, waiting
    keeper.ovs_changed()
    keeper.keep_restore_wait()
    assert told and len(ovs.transactions) == 1


def test_a_switch_let_start_is_not_let_start_again_before_its_status_is_refreshed():
    ovs = RestartingOvs({'gw-2': _bfd_port('gw-2')}, restore_wait=True, controller_state='')
    keeper, switch, clock, told = restart_keeper(ovs, flows_in=True)
    keeper.keep_restore_wait()
    assert len(ovs.transactions) == 1
    switch.connected = True  # it connects; its status says nothing for up to 5 s more
    clock.now += 1
    keeper.keep_restore_wait()
    assert ovs.restore_wait  # flows in: the next start waits again
    clock.now += 4.9
    keeper.ovs_changed()
    keeper.keep_restore_wait()
    assert len(ovs.transactions) == 1


def test_the_flag_is_kept_once_the_flows_are_in_and_only_then():
    ovs = RestartingOvs()
    keeper, switch, _, _ = restart_keeper(ovs, connected=True, flows_in=False)
    keeper.keep_restore_wait()
    assert not ovs.restore_wait  # a start now would wait for flows never confirmed
    keeper.flows_in = lambda: True
    keeper.keep_restore_wait()
    assert ovs.restore_wait
    assert not ovs.transactions  # connected: a running switch, nothing to let start
    ovs.restore_wait = False  # ovs-ctl's restart ends with removing it
    keeper.keep_restore_wait()
    assert ovs.restore_wait


def test_without_flow_restore_wait_the_flag_is_never_set():
    ovs = RestartingOvs()
    keeper, *_ = restart_keeper(ovs, connected=True, flows_in=True, flow_restore_wait=False)
    keeper.keep_restore_wait()
    assert not ovs.restore_wait


def test_a_bfd_port_name_is_short_stable_and_distinct():
    names = {liveness_port_name(f'compute-node-{i}.example.org') for i in range(1000)}
    assert len(names) == 1000 and all(len(name) <= 15 for name in names)
    assert liveness_port_name('gw-2') == liveness_port_name('gw-2')


def _row(name, type='', ofport=1, external_ids=None, bfd=None, bfd_status=None,
         link_state=('up',)):
    return types.SimpleNamespace(name=name, type=type, ofport=[ofport],
                                 external_ids=external_ids or {}, bfd=bfd or {},
                                 bfd_status=bfd_status or {}, link_state=list(link_state),
                                 options={})


def test_the_local_ovsdb_says_which_peers_are_alive_and_which_uplinks_have_carrier():
    bfd = [_row('bfd-a', 'vxlan', 7, {LIVENESS_PEER: 'gw-2'}, {'cpath_down': 'true'},
                {'forwarding': 'true', 'state': 'up', 'diagnostic': 'Concatenated Path Down'}),
           _row('bfd-b', 'vxlan', 8, {LIVENESS_PEER: 'gw-3'}, {},
                {'forwarding': 'false', 'state': 'up',
                 'remote_diagnostic': 'Concatenated Path Down'})]
    ex = types.SimpleNamespace(name='br-ex', ports=[
        types.SimpleNamespace(interfaces=[_row('br-ex', 'internal', link_state=('down',))]),
        types.SimpleNamespace(interfaces=[_row('ex0', link_state=('down',))]),
        types.SimpleNamespace(interfaces=[_row('patch-physnet1-ex', 'patch')])])
    vlan = types.SimpleNamespace(name='br-vlan', ports=[
        types.SimpleNamespace(interfaces=[_row('eth1', link_state=('down',))]),
        types.SimpleNamespace(interfaces=[_row('eth2')])])
    lab = types.SimpleNamespace(name='br-lab', ports=[])
    found = ovsdb._plugged(bfd, [ex, vlan, lab])
    # Held by us (cpath_down), our session to gw-2 still says forwarding: gw-2 is alive.
    assert found.liveness == {'gw-2': LivenessPort(7, True, True),
                              'gw-3': LivenessPort(8, False, False)}
    assert found.tunnels == {}  # a BFD port is no tunnel port for the flows
    assert ovsdb.uplinks_down(found.uplinks, {'physnet1': 'br-ex', 'physnet2': 'br-vlan',
                                              'physnet3': 'br-lab'}) == {'physnet1'}


def test_the_topology_has_this_chassis_liveness_and_the_bfd_ports_follow_its_peers(tmp_path):
    store = df_store.connect(f'sqlite:///{tmp_path}/nb.db')
    conf = df_conf.load([])
    conf.set_override('chassis_id', ME, 'controller')
    conf.set_override('gateway', True, 'controller')
    conf.set_override('bridge_mappings', ['physnet1:br-ex'], 'controller')
    ovs = Ovs()
    ovs.liveness = {'gw-2': LivenessPort(7, True, False), 'gw-3': LivenessPort(8, False, True)}
    ovs.uplinks = {'br-ex': (False,)}
    controller = Controller(conf, store, ovs, Switch(), clock=Clock())
    woken = []
    controller.bridge.wake = lambda: woken.append(1)
    controller.watcher.refill()
    step(controller)
    sent = controller.loop.sent
    assert sent.liveness_ofports == {'gw-2': 7, 'gw-3': 8}
    assert sent.live_peers == {'gw-2'} and sent.is_gateway
    assert sent.withdrawn_from == {'gw-3'}  # its port to gw-3 holds cpath_down
    assert sent.uplinks_down == {'physnet1'}
    assert woken  # the first topology: the BFD ports follow its liveness peers
    woken.clear()
    controller.wake()
    step(controller)
    assert not woken  # the same peers: nothing to do
    assert store.get('chassis', ME).value['gateway'] is True
