"""Distributed stores under the data plane: routing over etcd and redis, a store outage that
the data plane does not notice, and an etcd leader lost during a burst of API calls."""
import sqlite3
import time

import pytest
import requests

from dragonflow import store as df_store
from dragonflow.lab.cloud import Cloud, wait_for
from tests.dataplane.conftest import Pinger, Topo
from tests.dataplane.test_routing import reachable_within


@pytest.fixture(scope='module', params=['etcd', 'redis'])
def store_cloud(request, tmp_path_factory):
    cloud = Cloud(str(tmp_path_factory.mktemp(f'cloud-{request.param}')), store=request.param)
    with cloud:
        cloud.start(chassis=2)
        yield cloud


def test_routing_across_chassis_over_each_store(store_cloud):
    topo = Topo(store_cloud)
    s1, s2 = topo.subnet('10.31.1.0/24'), topo.subnet('10.31.2.0/24')
    topo.router(s1, s2)
    a, b = topo.vm(s1, 'ch1'), topo.vm(s2, 'ch2')
    assert reachable_within(a, b.ip, 3)
    assert a.ping_ttl(b.ip) == 63


def test_a_store_outage_loses_no_packet_and_changes_made_after_it_apply(store_cloud):
    topo = Topo(store_cloud)
    s1, s2 = topo.subnet('10.32.1.0/24'), topo.subnet('10.32.2.0/24')
    topo.router(s1, s2)
    a, b = topo.vm(s1, 'ch1'), topo.vm(s2, 'ch2')
    assert reachable_within(a, b.ip, 3)
    with Pinger(a, b.ip, interval=0.01) as ping:
        wait_for(lambda: ping.replies >= 20, 5, what='the ping under way')
        for server in store_cloud.store_servers:
            server.kill()
        try:
            replies = ping.replies
            wait_for(lambda: ping.replies >= replies + 300, 10,
                     what='3 s of ping through the outage')
        finally:
            for server in store_cloud.store_servers:
                server.start()
        ping.stop()
    assert ping.lost() == 0, ping.lines[-3:]  # the request in flight at the stop is no loss
    port = wait_for(lambda: _try(lambda: topo.port(s2)), 10, what='the API back')
    late = store_cloud.vm('ch2', port)
    start = time.monotonic()
    assert reachable_within(a, late.ip, 2.0)
    assert time.monotonic() - start <= 2.0


OUTAGES = {'refusing': ('kill', 'start'), 'hung': ('freeze', 'thaw')}


@pytest.mark.parametrize('outage', OUTAGES)
def test_a_vm_plugged_and_another_unplugged_during_an_outage(store_cloud, outage):
    """Both take effect in the data plane during the outage, whether the store refuses
    connections (killed) or accepts them and never answers (SIGSTOP): the cache knows both
    ports (their network is served on that chassis). Both are reported once it is back."""
    begin, end = OUTAGES[outage]
    topo = Topo(store_cloud)
    subnet = topo.subnet(f'10.34.{list(OUTAGES).index(outage)}.0/24')
    a, leaving = topo.vm(subnet, 'ch1'), topo.vm(subnet, 'ch2')
    arriving = topo.port(subnet)
    chassis = store_cloud.chassis['ch2']
    store = df_store.connect(store_cloud.store_url)
    revision = store.revision()
    wait_for(lambda: store.heartbeats()['ch2']['revision_seen'] >= revision, 5,
             what='ch2 to have the new port in its cache')
    ofport = chassis.ovs.vsctl('get', 'Interface', leaving.tap, 'ofport').strip()
    assert reachable_within(a, leaving.ip, 3)
    vm = store_cloud.vm('ch2', arriving, attach=False)
    for server in store_cloud.store_servers:
        getattr(server, begin)()
    try:
        vm.attach()
        assert reachable_within(a, vm.ip, 3)
        leaving.detach()
        wait_for(lambda: f'output:{ofport}' not in chassis.dump_flows(), 3,
                 what='the flows of the unplugged VM to go')
    finally:
        for server in store_cloud.store_servers:
            getattr(server, end)()
    wait_for(lambda: _try(lambda: _status(store, arriving.id)) == ('ch2', 'ACTIVE'), 15,
             what='the VM plugged during the outage reported ACTIVE')
    wait_for(lambda: _try(lambda: _status(store, leaving.port.id)) == ('', 'DOWN'), 15,
             what='the VM unplugged during the outage reported DOWN')
    assert reachable_within(a, vm.ip, 2)


def test_an_ovs_restart_during_an_outage_gets_br_int_back_from_the_cache(store_cloud):
    topo = Topo(store_cloud)
    s1, s2 = topo.subnet('10.36.1.0/24'), topo.subnet('10.36.2.0/24')
    topo.router(s1, s2)
    a, b = topo.vm(s1, 'ch1'), topo.vm(s2, 'ch2')
    assert reachable_within(a, b.ip, 3)
    chassis = store_cloud.chassis['ch2']
    flows = len(chassis.dump_flows().splitlines())
    for server in store_cloud.store_servers:
        server.kill()
    try:
        chassis.restart_switch()
        assert reachable_within(a, b.ip, 10)
        assert len(chassis.dump_flows().splitlines()) == flows
    finally:
        for server in store_cloud.store_servers:
            server.start()


def test_sqlite_held_by_another_writer_delays_reports_not_flows(cloud):
    """The embedded store hangs the way sqlite does: another process holds the write lock
    (readers go on, in WAL mode). A VM plugged meanwhile for a port the chassis knows (a VM
    of its network is there already) is reachable at once; it is reported once the lock is
    let go."""
    topo = Topo(cloud)
    subnet = topo.subnet('10.35.0.0/24')
    a, _ = topo.vm(subnet, 'ch1'), topo.vm(subnet, 'ch2')
    arriving = topo.port(subnet)
    vm = cloud.vm('ch2', arriving, attach=False)
    store = df_store.connect(cloud.store_url, timeout=0.2)
    assert _status(store, arriving.id) == ('', 'DOWN')  # its connection opened, to read
    lock = sqlite3.connect(cloud.store_url.removeprefix('sqlite:///'), isolation_level=None)
    try:
        lock.execute('BEGIN EXCLUSIVE')
        vm.attach()
        assert reachable_within(a, vm.ip, 3)
        assert _status(store, arriving.id) == ('', 'DOWN')
    finally:
        lock.rollback()
        lock.close()
    cloud.wait_port_active(arriving.id, timeout=15)


def _status(store, port_id):
    port = store.get('ports', port_id).value
    return port['binding:host_id'], port['status']


def _try(call):
    try:
        return call()
    except Exception:  # noqa: BLE001 - the API answers 503 until the store is back
        return None


def test_etcd_leader_lost_during_a_burst_of_port_creates(tmp_path_factory):
    with Cloud(str(tmp_path_factory.mktemp('cloud-etcd3')), store='etcd-cluster') as cloud:
        cloud.start(chassis=1)
        topo = Topo(cloud)
        subnet = topo.subnet('10.33.0.0/22')
        url = f'{cloud.api_url}/v2.0/ports'
        outcomes = []
        for i in range(200):
            if i == 50:
                _leader(cloud).kill()
            reply = requests.post(url, json={'port': {'network_id': subnet.network_id}},
                                  timeout=30)
            assert reply.status_code in (201, 503), reply.text
            if reply.status_code == 503:
                assert reply.json()['NeutronError']['type']
            outcomes.append(reply)
        created = {r.json()['port']['id'] for r in outcomes if r.status_code == 201}
        assert len(created) >= 150
        store = df_store.connect(cloud.store_url)
        ports = {r.id: r.value for r in store.list('ports')
                 if r.value['network_id'] == subnet.network_id}
        assert set(ports) == created
        ips = [p['fixed_ips'][0]['ip_address'] for p in ports.values()]
        keys = [p['key'] for p in ports.values()]
        assert len(set(ips)) == len(ips) and len(set(keys)) == len(keys)
        # The controller follows the surviving members: a new VM works.
        a, b = topo.vm(subnet, 'ch1'), topo.vm(subnet, 'ch1')
        assert reachable_within(a, b.ip, 3)


def _leader(cloud):
    """The etcd member that is the cluster's leader now."""
    for member in cloud.store_servers:
        status = requests.post(f'http://{member.address}/v3/maintenance/status', json={},
                               timeout=2).json()
        if status['leader'] == status['header']['member_id']:
            return member
    raise AssertionError('no etcd leader')
