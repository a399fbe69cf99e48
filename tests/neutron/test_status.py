"""Real Neutron with the ``df`` driver: a port bound to a chassis goes ACTIVE only once that
chassis reports the flows of its current version in (a StatusReport in the NB store, read by
the driver's status worker in neutron-periodic-workers), and DOWN once it reports it
unplugged. The chassis is a record in the store; the test writes its reports."""

import pytest

from dragonflow.lab.cloud import wait_for
from dragonflow.model import Chassis, FloatingIP, Port, StatusReport
from tests.neutron.conftest import dragonflow_plugins, unique

pytestmark = pytest.mark.skipif(dragonflow_plugins() != ('df', 'df-l3'),
                                reason='the df entry points are not installed')

TIMEOUT = 30.0  # the worker starts with neutron-periodic-workers, then follows at once


@pytest.fixture
def host(neutron_store):
    host = unique('compute')
    neutron_store.put(Chassis.table, host, Chassis(
        id=host, tunnel_ip='192.0.2.9', tunnel_types=['vxlan']).to_doc())
    yield host
    neutron_store.delete(Chassis.table, host)


@pytest.fixture
def network(neutron):
    conn = neutron.sdk()
    network = conn.network.create_network(name=unique('net'))
    conn.network.create_subnet(network_id=network.id, ip_version=4, cidr='10.60.0.0/24')
    yield network
    for port in conn.network.ports(network_id=network.id):
        if not port.device_owner.startswith('network:'):
            conn.network.delete_port(port)
    conn.network.delete_network(network, ignore_missing=True)


def report(store, port_id, host, state, revision):
    r = StatusReport(id=StatusReport.make_id('ports', port_id, host), resource='ports',
                     resource_id=port_id, chassis=host, status=state, object_revision=revision)
    store.put(r.table, r.id, r.to_doc())


def test_a_port_is_active_only_once_its_chassis_reports_its_current_version(
        neutron, network, host, neutron_store):
    conn = neutron.sdk()
    port = conn.network.create_port(network_id=network.id, binding_host_id=host)
    sentinel = conn.network.create_port(network_id=network.id, binding_host_id=host)
    assert port.status == 'DOWN'
    first = neutron_store.get(Port.table, port.id).revision
    conn.network.update_port(port, name='renamed')  # a new version, whose flows are not in
    current = neutron_store.get(Port.table, port.id).revision
    assert current > first
    # The worker reads the reports in the change log's order: once the sentinel's (written
    # after it) is ACTIVE, the stale one has been read, and ignored.
    report(neutron_store, port.id, host, 'ACTIVE', first)
    report(neutron_store, sentinel.id, host, 'ACTIVE',
           neutron_store.get(Port.table, sentinel.id).revision)
    wait_for(lambda: conn.network.get_port(sentinel.id).status == 'ACTIVE', TIMEOUT,
             what='the sentinel port ACTIVE')
    assert conn.network.get_port(port.id).status == 'DOWN'

    report(neutron_store, port.id, host, 'ACTIVE', current)
    wait_for(lambda: conn.network.get_port(port.id).status == 'ACTIVE', TIMEOUT,
             what='the port ACTIVE')

    # Neutron's ACTIVE is mirrored (a new NB revision), which the chassis reports ACTIVE
    # again: that settles, it writes nothing more (no report, write back, report... loop).
    wait_for(lambda: neutron_store.get(Port.table, port.id).value['status'] == 'ACTIVE',
             TIMEOUT, what='the NB port ACTIVE')
    settled = neutron_store.get(Port.table, port.id).revision
    report(neutron_store, port.id, host, 'ACTIVE', settled)
    other = conn.network.create_port(network_id=network.id, binding_host_id=host)
    report(neutron_store, other.id, host, 'ACTIVE',
           neutron_store.get(Port.table, other.id).revision)
    wait_for(lambda: conn.network.get_port(other.id).status == 'ACTIVE', TIMEOUT,
             what='the other port ACTIVE')
    assert neutron_store.get(Port.table, port.id).revision == settled

    # Unplugged: the chassis reports the current version DOWN.
    report(neutron_store, port.id, host, 'DOWN', settled)
    wait_for(lambda: conn.network.get_port(port.id).status == 'DOWN', TIMEOUT,
             what='the port DOWN')


def test_the_reports_of_a_deleted_port_are_deleted(neutron, network, host, neutron_store):
    conn = neutron.sdk()
    port = conn.network.create_port(network_id=network.id, binding_host_id=host)
    revision = neutron_store.get(Port.table, port.id).revision
    conn.network.delete_port(port)
    report(neutron_store, port.id, host, 'ACTIVE', revision)  # a chassis that never heard
    wait_for(lambda: neutron_store.get(StatusReport.table,
                                       StatusReport.make_id('ports', port.id, host)) is None,
             TIMEOUT, what='the report deleted')


def test_a_floating_ip_takes_the_status_its_chassis_reports(neutron, host, neutron_store):
    conn = neutron.sdk()
    # A flat physnet of its own: one flat network per physnet, and other tests have physnet1.
    external = conn.network.create_network(name=unique('ext'), is_router_external=True,
                                           provider_network_type='flat',
                                           provider_physical_network=unique('physnet'))
    conn.network.create_subnet(network_id=external.id, ip_version=4, cidr='172.24.19.0/24')
    inside = conn.network.create_network(name=unique('in'))
    subnet = conn.network.create_subnet(network_id=inside.id, ip_version=4,
                                        cidr='10.61.0.0/24')
    router = conn.network.create_router(name=unique('r'),
                                        external_gateway_info={'network_id': external.id})
    try:
        conn.network.add_interface_to_router(router, subnet=subnet.id)
        vm = conn.network.create_port(network_id=inside.id, binding_host_id=host)
        fip = conn.network.create_ip(floating_network_id=external.id, port_id=vm.id)
        assert fip.status == 'DOWN'
        revision = neutron_store.get(FloatingIP.table, fip.id).revision
        r = StatusReport(id=StatusReport.make_id('floatingips', fip.id, host),
                         resource='floatingips', resource_id=fip.id, chassis=host,
                         status='ACTIVE', object_revision=revision)
        neutron_store.put(r.table, r.id, r.to_doc())
        wait_for(lambda: conn.network.get_ip(fip.id).status == 'ACTIVE', TIMEOUT,
                 what='the floating IP ACTIVE')
        # Neutron's ACTIVE is mirrored after its commit: a report names that version.
        wait_for(lambda: neutron_store.get(FloatingIP.table, fip.id).value['status'] ==
                 'ACTIVE', TIMEOUT, what='the NB floating IP ACTIVE')
        revision = neutron_store.get(FloatingIP.table, fip.id).revision
        neutron_store.put(r.table, r.id, r.model_copy(
            update={'status': 'DOWN', 'object_revision': revision}).to_doc())
        wait_for(lambda: conn.network.get_ip(fip.id).status == 'DOWN', TIMEOUT,
                 what='the floating IP DOWN')
        conn.network.delete_ip(fip)
        conn.network.delete_port(vm)
        conn.network.remove_interface_from_router(router, subnet=subnet.id)
    finally:
        conn.network.delete_router(router, ignore_missing=True)
        conn.network.delete_network(inside)
        conn.network.delete_network(external)
