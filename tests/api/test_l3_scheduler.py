"""Routers' gateway chassis and distributed SNAT ports, scheduled by a real df-api (from its INI,
as an operator runs it) over a store where the chassis records are written directly, as
controllers write them (and their heartbeats, as their reporters send them)."""
import collections
import threading
import uuid

import pytest

from dragonflow import conf as df_conf
from dragonflow import store as df_store
from dragonflow.api import l3_scheduler
from dragonflow.api.context import Context
from dragonflow.api.service import Service
from dragonflow.lab.cloud import wait_for
from dragonflow.model import Chassis, ChassisStatus, Port
from dragonflow.model.objects import DEVICE_OWNER_CHASSIS_SNAT

from .conftest import ML2_CONFIG, connect, neutron_error, raw, unique

L3 = {'schedule_interval': '0.5'}
WAIT = 20  # seconds for the scheduler to act on a change (it follows the log: ~1 s)


class Deployment:
    """A df-api over a new store, an admin and a user of it, chassis written as controllers
    write theirs."""

    def __init__(self, server):
        self.server = server
        self.store = df_store.connect(f'sqlite://{server.config.parent / "nb.sqlite"}')
        self.admin = connect(server.url, project='ops', admin=True)
        self.user = connect(server.url, project=unique('project'))

    def chassis(self, name: str, physnets=('physnet1',), gateway=True, live=True,
                ttl: float = 600) -> None:
        record = Chassis(id=name, tunnel_ip=f'172.31.0.{len(self.store.list("chassis")) + 1}',
                         physical_networks=sorted(physnets), gateway=gateway)
        self.store.put(Chassis.table, name, record.to_doc())
        if live:
            self.store.heartbeat(name, ChassisStatus().model_dump(), ttl=ttl)

    def external(self, physnet='physnet1', cidr='203.0.113.0/24'):
        net = self.admin.network.create_network(
            name=unique('public'), is_router_external=True, provider_network_type='flat',
            provider_physical_network=physnet)
        self.admin.network.create_subnet(network_id=net.id, cidr=cidr, ip_version=4)
        return net

    def router(self, network, conn=None, **gateway):
        conn = conn or self.user
        return conn.network.create_router(name=unique('r'), external_gateway_info={
            'network_id': network.id, **gateway})

    def gateway_chassis(self, router_id: str) -> list:
        """As an admin sees it."""
        status, body = raw(self.admin, 'get', f'/routers/{router_id}')
        assert status == 200, body
        return body['router']['gateway_chassis']

    def snat_ports(self, router_id: str) -> dict:
        """The router's chassis SNAT ports, by chassis, as an admin lists them."""
        ports = self.admin.network.ports(device_id=router_id,
                                         device_owner=DEVICE_OWNER_CHASSIS_SNAT)
        by_chassis = collections.defaultdict(list)
        for port in ports:
            by_chassis[port.binding_host_id].append(port)
        return dict(by_chassis)

    def close(self) -> None:
        self.store.close()
        assert not self.server.errors_logged(), self.server.errors_logged()


@pytest.fixture
def cloud(start_apis):
    server, = start_apis(1, {**ML2_CONFIG, 'l3': L3})
    deployment = Deployment(server)
    yield deployment
    deployment.close()


@pytest.fixture
def distributed(start_apis):
    server, = start_apis(1, {**ML2_CONFIG, 'l3': {**L3, 'snat_mode': 'distributed'}})
    deployment = Deployment(server)
    yield deployment
    deployment.close()


def test_routers_spread_over_the_gateway_chassis(cloud):
    """Least-loaded first, live before silent; chassis that are no gateway, or lack the
    external network's physnet, are no candidates."""
    for name in ('gw-a', 'gw-b'):
        cloud.chassis(name)
    cloud.chassis('gw-0', live=False)   # first by name, but no heartbeat
    cloud.chassis('compute', gateway=False)
    cloud.chassis('gw-elsewhere', physnets=('physnet3',))
    public = cloud.external()
    first, second = cloud.router(public), cloud.router(public)
    assert cloud.gateway_chassis(first.id) == ['gw-a', 'gw-b', 'gw-0']
    assert cloud.gateway_chassis(second.id) == ['gw-b', 'gw-a', 'gw-0']
    # Each holds one first: the third goes by how many list them, then by name.
    assert cloud.gateway_chassis(cloud.router(public).id)[0] == 'gw-a'
    elsewhere = cloud.router(cloud.external('physnet3', '198.51.100.0/24'))
    assert cloud.gateway_chassis(elsewhere.id) == ['gw-elsewhere']


def test_new_candidates_are_appended_and_lists_never_reordered(cloud):
    cloud.chassis('gw-a', ttl=1)   # it goes silent soon
    cloud.chassis('gw-b')
    public = cloud.external()
    first, second = cloud.router(public), cloud.router(public)
    assert (cloud.gateway_chassis(first.id), cloud.gateway_chassis(second.id)) == (
        ['gw-a', 'gw-b'], ['gw-b', 'gw-a'])
    cloud.chassis('gw-c')
    wait_for(lambda: cloud.gateway_chassis(first.id) == ['gw-a', 'gw-b', 'gw-c'] and
             cloud.gateway_chassis(second.id) == ['gw-b', 'gw-a', 'gw-c'], WAIT,
             what='gw-c appended to both lists')
    # gw-a silent: still where it was (BFD, not the store, decides who holds the gateway).
    wait_for(lambda: 'gw-a' not in cloud.store.heartbeats(), 10, what='gw-a silent')
    cloud.chassis('gw-d')
    wait_for(lambda: cloud.gateway_chassis(first.id) == ['gw-a', 'gw-b', 'gw-c', 'gw-d'],
             WAIT, what='gw-d appended')
    # Updates that keep the external network keep the list (the load would order it anew).
    cloud.user.network.update_router(first.id, name='renamed')
    cloud.user.network.update_router(first.id, external_gateway_info={'network_id': public.id})
    assert cloud.gateway_chassis(first.id) == ['gw-a', 'gw-b', 'gw-c', 'gw-d']
    # A chassis that can no longer hold it leaves the lists; the others keep their order.
    cloud.chassis('gw-b', gateway=False)
    wait_for(lambda: cloud.gateway_chassis(second.id) == ['gw-a', 'gw-c', 'gw-d'], WAIT,
             what='gw-b dropped')
    assert cloud.gateway_chassis(first.id) == ['gw-a', 'gw-c', 'gw-d']


def test_the_list_goes_with_the_gateway(cloud):
    cloud.chassis('gw-a')
    cloud.chassis('gw-3', physnets=('physnet1', 'physnet3'))
    public, other = cloud.external(), cloud.external('physnet3', '198.51.100.0/24')
    router = cloud.user.network.create_router(name=unique('r'))
    assert cloud.gateway_chassis(router.id) == []
    cloud.user.network.update_router(router.id, external_gateway_info={'network_id': public.id})
    assert sorted(cloud.gateway_chassis(router.id)) == ['gw-3', 'gw-a']
    cloud.user.network.update_router(router.id, external_gateway_info={'network_id': other.id})
    assert cloud.gateway_chassis(router.id) == ['gw-3']
    cloud.user.network.update_router(router.id, external_gateway_info=None)
    assert cloud.gateway_chassis(router.id) == []


def test_gateway_chassis_is_admin_only_and_read_only(cloud):
    cloud.chassis('gw-a')
    router = cloud.router(cloud.external())
    status, body = raw(cloud.user, 'get', f'/routers/{router.id}')
    assert status == 200 and 'gateway_chassis' not in body['router']
    status, body = raw(cloud.user, 'get', '/routers')
    assert [r for r in body['routers'] if 'gateway_chassis' in r] == []
    status, body = raw(cloud.admin, 'get', '/routers', params={'id': router.id})
    assert [r['gateway_chassis'] for r in body['routers']] == [['gw-a']]
    # Neutron's answers for a read-only attribute, as for status.
    for conn in (cloud.user, cloud.admin):
        for name, value in (('gateway_chassis', ['gw-a']), ('status', 'DOWN')):
            status, body = raw(conn, 'post', '/routers', json={'router': {name: value}})
            assert (status, body['NeutronError']['type'], body['NeutronError']['message']) == (
                400, 'HTTPBadRequest', f"Attribute '{name}' not allowed in POST")
            status, body = raw(conn, 'put', f'/routers/{router.id}',
                               json={'router': {name: value}})
            assert (status, body['NeutronError']['type'], body['NeutronError']['message']) == (
                400, 'HTTPBadRequest', f'Cannot update read-only attribute {name}')
    assert cloud.gateway_chassis(router.id) == ['gw-a']


def _inside(cloud, router):
    """A user network behind the router."""
    net = cloud.user.network.create_network(name=unique('inside'))
    subnet = cloud.user.network.create_subnet(network_id=net.id, cidr='10.7.0.0/24',
                                              ip_version=4)
    cloud.user.network.add_interface_to_router(router, subnet=subnet.id)
    return net, subnet


def _vm(cloud, net, chassis: str):
    port = cloud.user.network.create_port(network_id=net.id, name=unique('vm'))
    return cloud.admin.network.update_port(port.id, binding_host_id=chassis)


def test_distributed_snat_ports_follow_the_vms(distributed):
    cloud = distributed
    for name in ('c1', 'c2'):
        cloud.chassis(name, gateway=False)
    cloud.chassis('c-elsewhere', physnets=('physnet3',), gateway=False)
    public = cloud.external()
    router = cloud.router(public)
    net, _ = _inside(cloud, router)
    vm1 = _vm(cloud, net, 'c1')
    ports = wait_for(lambda: cloud.snat_ports(router.id).get('c1'), WAIT,
                     what='a SNAT port on c1')
    (port,) = ports
    assert port.id == l3_scheduler.snat_port_id(router.id, 'c1') == str(
        uuid.uuid5(l3_scheduler.SNAT_PORT_NAMESPACE, f'{router.id}/c1'))
    assert (port.network_id, port.device_id, port.project_id) == (public.id, router.id, '')
    (fixed,) = port.fixed_ips
    gateway_ips = {f['ip_address'] for f in router.external_gateway_info['external_fixed_ips']}
    assert fixed['ip_address'].startswith('203.0.113.') and fixed['ip_address'] not in gateway_ips
    # Its address is taken (IPAM), and it is the router's: neither may delete it.
    status, error = neutron_error(cloud.admin.network.create_port, network_id=public.id,
                                  fixed_ips=[{'ip_address': fixed['ip_address']}])
    assert (status, error['type']) == (409, 'IpAddressAlreadyAllocated')
    status, error = neutron_error(cloud.admin.network.delete_port, port.id)
    assert (status, error['type']) == (409, 'ServicePortInUse')
    assert cloud.user.network.find_port(port.id) is None   # no project: hidden from users
    # A VM on a chassis that does not map the external network's physnet: no port there.
    _vm(cloud, net, 'c-elsewhere')
    _vm(cloud, net, 'c2')
    wait_for(lambda: sorted(cloud.snat_ports(router.id)) == ['c1', 'c2'], WAIT,
             what='a SNAT port on c2')
    assert cloud.snat_ports(router.id)['c1'][0].id == port.id   # kept as it was
    cloud.user.network.delete_port(vm1.id)
    wait_for(lambda: sorted(cloud.snat_ports(router.id)) == ['c2'], WAIT,
             what='the SNAT port on c1 gone with its VM')
    assert cloud.admin.network.create_port(network_id=public.id, fixed_ips=[
        {'ip_address': fixed['ip_address']}])   # its address released
    cloud.admin.network.update_router(router.id, external_gateway_info={
        'network_id': public.id, 'enable_snat': False})
    assert cloud.snat_ports(router.id) == {}   # at once
    cloud.admin.network.update_router(router.id, external_gateway_info={
        'network_id': public.id, 'enable_snat': True})
    wait_for(lambda: sorted(cloud.snat_ports(router.id)) == ['c2'], WAIT, what='back on c2')
    cloud.user.network.update_router(router.id, external_gateway_info=None)
    assert cloud.snat_ports(router.id) == {}   # in the commit that clears the gateway


def test_snat_ports_go_with_the_router(distributed):
    cloud = distributed
    cloud.chassis('c1', gateway=False)
    router = cloud.router(cloud.external())
    net, subnet = _inside(cloud, router)
    _vm(cloud, net, 'c1')
    wait_for(lambda: cloud.snat_ports(router.id), WAIT, what='a SNAT port')
    cloud.user.network.remove_interface_from_router(router, subnet=subnet.id)
    wait_for(lambda: not cloud.snat_ports(router.id), WAIT, what='no VM behind it: gone')
    cloud.user.network.add_interface_to_router(router, subnet=subnet.id)
    wait_for(lambda: cloud.snat_ports(router.id), WAIT, what='a SNAT port again')
    cloud.user.network.remove_interface_from_router(router, subnet=subnet.id)
    cloud.user.network.delete_router(router.id)
    wait_for(lambda: not cloud.snat_ports(router.id), WAIT, what='gone with the router')


def test_gateway_mode_makes_no_snat_ports(cloud):
    cloud.chassis('c1', gateway=False)
    cloud.chassis('gw-a')
    router = cloud.router(cloud.external())
    net, _ = _inside(cloud, router)
    _vm(cloud, net, 'c1')
    cloud.chassis('gw-b')   # a change the scheduler sees after the VM's
    wait_for(lambda: cloud.gateway_chassis(router.id) == ['gw-a', 'gw-b'], WAIT,
             what='gw-b appended')
    assert cloud.snat_ports(router.id) == {}


def test_two_df_api_processes_make_no_duplicates(start_apis):
    servers = start_apis(2, {**ML2_CONFIG, 'l3': {**L3, 'snat_mode': 'distributed'}})
    cloud = Deployment(servers[0])
    chassis = [f'c{i}' for i in range(4)]
    for name in chassis:
        cloud.chassis(name)
    public = cloud.external()
    routers = [cloud.router(public) for _ in range(3)]
    for router in routers:
        net, _ = _inside(cloud, router)
        for name in chassis:
            _vm(cloud, net, name)
    wait_for(lambda: all(sorted(cloud.snat_ports(r.id)) == chassis for r in routers), WAIT,
             what='a SNAT port per router and chassis')
    cloud.chassis('c-new')   # both processes append it
    wait_for(lambda: all(cloud.gateway_chassis(r.id)[-1] == 'c-new' for r in routers), WAIT,
             what='c-new appended')
    for router in routers:
        assert all(len(ports) == 1 for ports in cloud.snat_ports(router.id).values())
        listed = cloud.gateway_chassis(router.id)
        assert sorted(listed) == sorted(chassis + ['c-new'])   # each chassis once
    cloud.close()
    assert not servers[1].errors_logged(), servers[1].errors_logged()


def test_two_schedulers_racing_on_stale_views_make_no_duplicates(distributed, tmp_path):
    """Two schedulers that read the store before either wrote both act at once: every write
    is conditional, so the loser of each race finds the work done."""
    cloud = distributed
    cloud.server.stop()   # only the two below schedule
    conf_file = tmp_path / 'l3.ini'
    conf_file.write_text('[l3]\nsnat_mode = distributed\n')
    conf = df_conf.load(['--config-file', str(conf_file)])
    stores = [df_store.connect(f'sqlite://{cloud.server.config.parent / "nb.sqlite"}')
              for _ in range(2)]
    schedulers = [l3_scheduler.Scheduler(store, conf) for store in stores]
    router = _offline_router_with_vms(cloud, ['c1', 'c2', 'c3'])
    for scheduler in schedulers:
        scheduler.resync()
    start = threading.Barrier(2)

    def schedule(scheduler):
        start.wait()
        scheduler.schedule(scheduler.everything())
    threads = [threading.Thread(target=schedule, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    ports = [Port.from_doc(r.value) for r in cloud.store.list(Port.table)]
    snat = collections.Counter(p.binding_host_id for p in ports
                               if p.device_owner == DEVICE_OWNER_CHASSIS_SNAT)
    assert snat == {'c1': 1, 'c2': 1, 'c3': 1}
    assert sum(s.writes for s in schedulers) == 4   # 3 ports and a list, once each
    record = cloud.store.get('routers', router)
    assert record.value['gateway_chassis'] == ['gw-a']
    for store in stores:
        store.close()


def _offline_router_with_vms(cloud, hosts) -> str:
    """A router whose gateway list lacks a candidate and VMs on ``hosts``, written while no
    scheduler runs (the API is down: written as it would)."""
    service = Service(cloud.store, df_conf.load(['--config-file', str(cloud.server.config)]))
    admin = Context(project_id='ops', is_admin=True)
    net = service.create('networks', admin, {'network': {
        'router:external': True, 'provider:network_type': 'flat',
        'provider:physical_network': 'physnet1'}})['network']
    service.create('subnets', admin, {'subnet': {'network_id': net['id'],
                                                 'cidr': '203.0.113.0/24', 'ip_version': 4}})
    router = service.create('routers', admin, {'router': {
        'external_gateway_info': {'network_id': net['id']}}})['router']
    assert router['gateway_chassis'] == []
    cloud.chassis('gw-a')   # a gateway chassis registered since
    inside = service.create('networks', admin, {'network': {}})['network']
    subnet = service.create('subnets', admin, {'subnet': {
        'network_id': inside['id'], 'cidr': '10.7.0.0/24', 'ip_version': 4}})['subnet']
    service.router_interface(admin, router['id'], {'subnet_id': subnet['id']}, add=True)
    for host in hosts:
        cloud.chassis(host, gateway=False)
        service.create('ports', admin, {'port': {'network_id': inside['id'],
                                                 'binding:host_id': host}})
    return router['id']


def test_one_router_that_cannot_be_served_stops_no_other(distributed):
    """No address left for a SNAT port, an unreadable router: logged, the others served."""
    cloud = distributed
    cloud.chassis('c1', physnets=('physnet1', 'physnet3'), gateway=False)
    full = cloud.router(cloud.external(cidr='192.0.2.0/30'))   # the gateway took the last one
    served = cloud.router(cloud.external('physnet3'))
    cloud.store.put('routers', 'unreadable', {'id': 'unreadable', 'gateway_chassis': 'c1'})
    for router in (full, served):
        net, _ = _inside(cloud, router)
        _vm(cloud, net, 'c1')
    wait_for(lambda: cloud.snat_ports(served.id), WAIT, what='the other router served')
    wait_for(lambda: f'a SNAT port of router {full.id} on chassis c1: not now' in
             cloud.server.log.read_text(), WAIT, what='the full one logged')
    assert 'routers/unreadable is unreadable' in cloud.server.log.read_text()
    assert cloud.snat_ports(full.id) == {}
    cloud.store.delete('routers', 'unreadable')


def test_a_store_outage_pauses_the_scheduler_and_it_catches_up(distributed, tmp_path,
                                                               monkeypatch):
    """The store fails the first rounds' reads: the scheduler pauses, then does everything the
    changes it had read asked for (with a full pass)."""
    cloud = distributed
    cloud.server.stop()
    router = _offline_router_with_vms(cloud, ['c1'])
    store = df_store.connect(f'sqlite://{cloud.server.config.parent / "nb.sqlite"}')
    failures = iter(range(3))

    class Flaky:
        """The store, whose heartbeats() (read by every pass) fails three times."""
        def __getattr__(self, name):
            return getattr(store, name)

        def heartbeats(self):
            if next(failures, None) is not None:
                raise df_store.api.Unavailable('the store is down')
            return store.heartbeats()
    conf_file = tmp_path / 'l3.ini'
    conf_file.write_text('[l3]\nsnat_mode = distributed\n')
    stop = threading.Event()
    scheduler = l3_scheduler.Scheduler(Flaky(), df_conf.load(['--config-file', str(conf_file)]))
    monkeypatch.setattr(l3_scheduler, 'BACKOFF', (0.01, 0.01))
    thread = threading.Thread(target=scheduler.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: [p.binding_host_id for p in _snat_ports_in(cloud.store, router)] ==
                 ['c1'], WAIT, what='the SNAT port made after the outage')
        assert next(failures, None) is None   # it did fail
        assert cloud.store.get('routers', router).value['gateway_chassis'] == ['gw-a']
    finally:
        stop.set()
        thread.join(10)
        store.close()


def _snat_ports_in(store, router_id):
    return [p for p in (Port.from_doc(r.value) for r in store.list(Port.table))
            if p.device_owner == DEVICE_OWNER_CHASSIS_SNAT and p.device_id == router_id]
