"""Under Neutron (status_source 'report') the chassis never writes a port or floating IP: it
writes its own StatusReport of each, ACTIVE with the store revision of the version whose
flows br-int has confirmed, DOWN once unplugged, and deletes the reports that no longer
stand. The objects here are those of test_reports' world, written as Neutron's mirror would."""
import threading

import pytest

from dragonflow.controller.cache import Cache
from dragonflow.controller.reports import Reporter
from dragonflow.controller.topology import Topology
from dragonflow.model import Chassis, FixedIP, FloatingIP, Port, StatusReport
from dragonflow.model.objects import STATUS_BY_REPORT
from dragonflow.store import api
from tests.unit import test_reports
from tests.unit.clock import Clock
from tests.unit.test_reports import GATEWAY_IP, GATEWAY_MAC, ME

VM_REPORT = StatusReport.make_id('ports', 'vm', ME)
FIP_REPORT = StatusReport.make_id('floatingips', 'fip', ME)


class NeutronWorld(test_reports.World):
    """Ports and floating IPs as the Neutron driver writes them: their status is Neutron's,
    and its ports start DOWN, bound by Neutron to this chassis."""

    def put(self, obj):
        if isinstance(obj, (Port, FloatingIP)):
            obj = obj.model_copy(update={'status_source': STATUS_BY_REPORT, 'status': 'DOWN'})
        super().put(obj)

    def update(self, table, id, **changes):
        record = self.store.get(table, id)
        obj = type(self.cache.objects[table][id]).from_doc(record.value)
        self.put(obj.model_copy(update=changes))
        self.follow()

    def confirm(self, ofports=None, gateway_mac=GATEWAY_MAC):
        """br-int confirms the flows of the cache as it is now; one reporter round."""
        ofports = {'vm': 1, 'vm2': 2} if ofports is None else ofports
        self.reporter.ports_confirmed(Topology.from_objects(
            ME, self.cache.objects, ofports, None, self.cache.revision,
            patch_ofports={'physnet1': 100},
            gateway_macs={('public', GATEWAY_IP): gateway_mac} if gateway_mac else {},
            nat_zones={'fip': 0x8000}))
        self.reporter.report()

    def report(self, report_id):
        record = self.store.get(StatusReport.table, report_id)
        return None if record is None else (record.value['status'],
                                            record.value['object_revision'])

    def revision(self, table, id):
        return self.store.get(table, id).revision


@pytest.fixture
def world(tmp_path):
    return NeutronWorld(tmp_path)


def test_a_plugged_port_is_reported_active_with_the_revision_of_its_flows(world):
    before = world.store.get('ports', 'vm')
    world.confirm()
    assert world.report(VM_REPORT) == ('ACTIVE', before.revision)
    assert world.store.get('ports', 'vm') == before  # Neutron's object: never written
    assert world.store.get('floatingips', 'fip').value['status'] == 'DOWN'


def test_a_report_is_written_once_and_its_echo_changes_nothing(world):
    world.confirm()
    revision = world.store.snapshot()[0]
    assert not world.cache.apply(world.store.changes(world.cache.revision))
    world.confirm()
    world.reporter.report()
    assert world.store.snapshot()[0] == revision


def test_a_new_revision_no_flow_sees_is_reported_without_a_new_pass(world):
    world.confirm()
    world.update('ports', 'vm', status='ACTIVE', name='web')  # Neutron's own write back
    assert world.reporter._wake.is_set()  # the cache woke the reporter
    world.reporter.report()  # no topology confirmed since
    assert world.report(VM_REPORT) == ('ACTIVE', world.revision('ports', 'vm'))


def test_a_version_whose_flows_are_not_in_keeps_the_report_until_they_are(world):
    world.confirm()
    reported = world.report(VM_REPORT)
    world.update('ports', 'vm', fixed_ips=[FixedIP(subnet_id='s', ip_address='10.0.0.7')])
    world.reporter.report()
    assert world.report(VM_REPORT) == reported
    world.confirm()
    assert world.report(VM_REPORT) == ('ACTIVE', world.revision('ports', 'vm'))


def test_an_unplugged_port_is_reported_down_and_its_report_deleted_once_gone(world):
    world.confirm()
    world.confirm(ofports={'vm2': 2})
    assert world.report(VM_REPORT) == ('DOWN', world.revision('ports', 'vm'))
    world.store.delete('ports', 'vm')
    world.follow()
    world.reporter.report()
    assert world.report(VM_REPORT) is None
    assert world.report(StatusReport.make_id('ports', 'vm2', ME))[0] == 'ACTIVE'


def test_a_port_never_reported_is_not_reported_down(world):
    world.confirm(ofports={'vm2': 2})
    assert world.report(VM_REPORT) is None


def test_a_port_neutron_binds_elsewhere_loses_this_chassis_report(world):
    world.confirm()
    world.update('ports', 'vm', **{'binding_host_id': 'chassis-2'})
    world.confirm(ofports={'vm2': 2})
    assert world.report(VM_REPORT) is None


def test_a_floating_ip_is_active_once_its_way_out_is_in_and_down_while_it_moves(world):
    world.confirm(gateway_mac=None)
    assert world.report(FIP_REPORT) is None
    world.confirm()
    assert world.report(FIP_REPORT) == ('ACTIVE', world.revision('floatingips', 'fip'))
    world.update('floatingips', 'fip', port_id='vm2', fixed_ip_address='10.0.0.6')
    world.reporter.report()  # the flows of the new association are not in yet
    assert world.report(FIP_REPORT) == ('DOWN', world.revision('floatingips', 'fip'))
    world.confirm()
    assert world.report(FIP_REPORT) == ('ACTIVE', world.revision('floatingips', 'fip'))
    assert world.store.get('floatingips', 'fip').value['status'] == 'DOWN'


def test_a_restarted_controller_does_not_repeat_its_reports(world):
    world.confirm()
    cache = Cache(ME)
    cache.set_local_ports({'vm', 'vm2'})
    cache.load(*world.store.snapshot())
    assert set(cache.objects['status_reports']) == {
        VM_REPORT, StatusReport.make_id('ports', 'vm2', ME), FIP_REPORT}
    world.cache = cache
    world.reporter = Reporter(world.store, cache, Chassis(id=ME, tunnel_ip='172.31.0.11'),
                              10.0, threading.Event(), wake_loop=lambda: None, clock=Clock())
    world.reporter.report()  # registers the chassis
    revision = world.store.snapshot()[0]
    world.confirm()
    assert world.store.snapshot()[0] == revision


def test_another_chassis_reports_are_neither_kept_nor_touched(world):
    other = StatusReport(id=StatusReport.make_id('ports', 'vm', 'chassis-2'), resource='ports',
                         resource_id='vm', chassis='chassis-2', status='ACTIVE',
                         object_revision=1)
    world.store.put(other.table, other.id, other.to_doc())
    world.follow()
    assert other.id not in world.cache.objects['status_reports']
    world.confirm()
    assert world.report(other.id) == ('ACTIVE', 1)


def test_a_store_outage_delays_the_reports_only(world):
    world.store.down = True
    with pytest.raises(api.StoreError):
        world.confirm()
    world.store.down = False
    world.reporter.report()
    assert world.report(VM_REPORT)[0] == 'ACTIVE'


def test_a_report_deleted_meanwhile_is_written_again(world):
    world.confirm()
    world.update('ports', 'vm', name='web')
    world.store.delete(StatusReport.table, VM_REPORT)  # the worker's, say: not followed yet
    world.reporter.report()  # conflicts: re-read
    world.reporter.report()
    assert world.report(VM_REPORT) == ('ACTIVE', world.revision('ports', 'vm'))


def test_a_chassis_record_from_before_datapath_types_is_registered_again_if_it_differs(
        world):
    old = Chassis(id=ME, tunnel_ip='172.31.0.11').to_doc()
    del old['datapath_type']  # written by a controller that did not know it
    revision = world.store.put(Chassis.table, ME, old)
    world.reporter.report()
    assert world.store.get(Chassis.table, ME).revision == revision  # 'system': the same
    netdev = Reporter(world.store, world.cache, Chassis(id=ME, tunnel_ip='172.31.0.11',
                                                        datapath_type='netdev'),
                      10.0, threading.Event(), wake_loop=lambda: None, clock=Clock())
    netdev.report()
    assert world.store.get(Chassis.table, ME).value['datapath_type'] == 'netdev'
