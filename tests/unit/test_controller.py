"""The controller's loop against a real (sqlite) store and a simulated br-int that answers
only when the test says: a port is reported bound and ACTIVE once the switch has confirmed its
flows, not when they are sent; a refused change makes the controller read the switch back; the
loop never waits on the store, and no error of a pass stops it."""
import concurrent.futures
import threading

import pytest

from dragonflow import conf as df_conf
from dragonflow import store as df_store
from dragonflow.controller import flow_loop
from dragonflow.controller.bridge import BridgeKeeper, parse_bridge_mappings
from dragonflow.controller.openflow import SwitchError
from dragonflow.controller.ovsdb import Interfaces
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

    def interfaces(self):
        return Interfaces(dict(self.plugged), {}, {})


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
