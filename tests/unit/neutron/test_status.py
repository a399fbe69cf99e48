"""The status worker tells Neutron what the chassis report, over a real sqlite store and a
Neutron that records what it is told: only reports of the NB object's current version count,
whatever order they come in, and outages of the store or of Neutron only delay them."""
import pytest

from dragonflow import store as df_store
from dragonflow.lab.cloud import wait_for
from dragonflow.model import FixedIP, FloatingIP, Port, StatusReport
from dragonflow.model.objects import STATUS_BY_REPORT
from dragonflow.neutron import status
from dragonflow.store import api
from tests.unit.test_controller import Outage

HOST = 'chassis-1'


class FakeNeutron:
    """What the worker told Neutron, in order; ``fail`` makes the next call raise."""

    def __init__(self):
        self.told, self.has, self.fail = [], set(), None

    def _tell(self, *what):
        if self.fail:
            error, self.fail = self.fail, None
            raise error
        self.told.append(what)

    def port_active(self, port_id):
        self._tell('port', port_id, 'ACTIVE')

    def port_down(self, port_id):
        self._tell('port', port_id, 'DOWN')

    def floatingip_status(self, floatingip_id, state):
        self._tell('floatingip', floatingip_id, state)

    def exists(self, resource, id):
        return (resource, id) in self.has


@pytest.fixture
def store(tmp_path):
    s = Outage(df_store.connect(f'sqlite:///{tmp_path}/nb.db'))
    yield s
    s.close()


@pytest.fixture
def neutron():
    return FakeNeutron()


@pytest.fixture
def follower(store, neutron):
    f = status.StatusFollower(store, neutron)
    f.step()  # the start: no report yet
    return f


def put_port(store, host=HOST, ip='10.0.0.5'):
    port = Port(id='vm', key=3, network_id='n', mac_address='fa:16:3e:00:00:03',
                fixed_ips=[FixedIP(subnet_id='s', ip_address=ip)], status_source=STATUS_BY_REPORT,
                **{'binding:host_id': host})
    return store.put(Port.table, port.id, port.to_doc())


def put_fip(store):
    fip = FloatingIP(id='fip', floating_network_id='public', floating_ip_address='172.24.4.9',
                     floating_port_id='fp', port_id='vm', status_source=STATUS_BY_REPORT)
    return store.put(FloatingIP.table, fip.id, fip.to_doc())


def report(store, revision, state='ACTIVE', resource='ports', id='vm', chassis=HOST):
    r = StatusReport(id=StatusReport.make_id(resource, id, chassis), resource=resource,
                     resource_id=id, chassis=chassis, status=state, object_revision=revision)
    store.put(r.table, r.id, r.to_doc())
    return r.id


def test_a_report_of_the_current_version_completes_the_port_and_an_old_one_is_ignored(
        store, neutron, follower):
    first = put_port(store)
    current = put_port(store, ip='10.0.0.6')
    report(store, first)  # the flows of a version Neutron has since changed
    follower.step()
    assert neutron.told == []
    report(store, current)
    follower.step()
    assert neutron.told == [('port', 'vm', 'ACTIVE')]


def test_a_down_report_makes_the_port_down(store, neutron, follower):
    report(store, put_port(store), 'DOWN')
    follower.step()
    assert neutron.told == [('port', 'vm', 'DOWN')]


def test_a_report_from_a_chassis_the_port_is_not_bound_to_is_ignored(store, neutron, follower):
    revision = put_port(store, host='chassis-2')
    report(store, revision, 'DOWN')
    follower.step()
    assert neutron.told == []


def test_floating_ips_take_the_status_reported(store, neutron, follower):
    revision = put_fip(store)
    report(store, revision, 'ACTIVE', resource='floatingips', id='fip')
    follower.step()
    report(store, revision, 'DOWN', resource='floatingips', id='fip')
    follower.step()
    assert neutron.told == [('floatingip', 'fip', 'ACTIVE'), ('floatingip', 'fip', 'DOWN')]


def test_the_reports_written_before_the_start_are_read(store, neutron):
    report(store, put_port(store))
    status.StatusFollower(store, neutron).step()
    assert neutron.told == [('port', 'vm', 'ACTIVE')]


def test_only_the_newest_version_of_a_report_in_a_page_counts(store, neutron, follower):
    revision = put_port(store)
    report(store, revision, 'ACTIVE')
    report(store, revision, 'DOWN')
    follower.step()
    assert neutron.told == [('port', 'vm', 'DOWN')]


def test_a_report_of_an_object_neutron_no_longer_has_is_deleted(store, neutron, follower):
    gone = report(store, 7)
    neutron.has.add(('floatingips', 'fip'))  # not in the store yet: the mirror is behind
    behind = report(store, 8, resource='floatingips', id='fip')
    follower.step()
    assert store.get(StatusReport.table, gone) is None
    assert store.get(StatusReport.table, behind) is not None
    assert neutron.told == []


def test_a_compacted_change_log_makes_it_read_every_report_again(store, neutron, follower):
    report(store, put_port(store))
    store.compact(store.revision())
    follower.step()  # compacted: the reports are read again at the next step
    follower.step()
    assert neutron.told == [('port', 'vm', 'ACTIVE')]


def test_a_store_outage_delays_the_reports(store, neutron, follower):
    report(store, put_port(store))
    store.down = True
    with pytest.raises(api.StoreError):
        follower.step()
    store.down = False
    follower.step()
    assert neutron.told == [('port', 'vm', 'ACTIVE')]


def test_a_neutron_error_leaves_the_report_to_be_told_again(store, neutron, follower):
    report(store, put_port(store))
    neutron.fail = RuntimeError('database went away')
    with pytest.raises(RuntimeError):
        follower.step()
    follower.step()
    assert neutron.told == [('port', 'vm', 'ACTIVE')]


def test_the_worker_follows_the_reports_in_its_thread_and_survives_errors(store, neutron):
    worker = status.StatusWorker(connect=lambda: store, neutron=lambda: neutron)
    neutron.fail = RuntimeError('database went away')
    report(store, put_port(store))
    worker.start()
    try:
        assert wait_for(lambda: neutron.told, timeout=10)
        revision = put_port(store, ip='10.0.0.6')
        report(store, revision, 'DOWN')
        assert wait_for(lambda: len(neutron.told) == 2, timeout=10)
    finally:
        worker.stop()
        worker.wait()
    assert neutron.told == [('port', 'vm', 'ACTIVE'), ('port', 'vm', 'DOWN')]
