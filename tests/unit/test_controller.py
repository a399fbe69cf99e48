"""The controller's loop against a real (sqlite) store and a simulated br-int that answers
only when the test says: a port is reported bound and ACTIVE once the switch has confirmed its
flows, not when they are sent; a refused change makes the controller read the switch back."""
import concurrent.futures

import pytest

from dragonflow import conf as df_conf
from dragonflow import store as df_store
from dragonflow.controller.openflow import SwitchError
from dragonflow.controller.service import Controller
from dragonflow.model import FixedIP, Network, Port, Subnet
from tests.flowsim import FlowTableSimulator

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
        return dict(self.plugged), {}


@pytest.fixture
def cloud(tmp_path):
    store = df_store.connect(f'sqlite:///{tmp_path}/nb.db')
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
    controller = Controller(conf, store, ovs, switch)
    return controller, store, switch, ovs


def step(controller):
    """One turn of the loop, as run() takes it after a wake."""
    controller._turn()


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
    confirmation, _, topology = controller._unconfirmed[0]
    controller._unconfirmed[0] = (confirmation, 0.0, topology)  # its time is up
    step(controller)
    assert switch.dumps == dumps + 1 and confirmation.cancelled()
    assert status(store) == ('', 'DOWN')
