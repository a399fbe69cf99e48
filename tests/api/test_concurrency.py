"""Several df-api processes on one store, many clients at once: no address handed out twice.

The processes share nothing but the sqlite store; uniqueness comes from the conditional
commits of the address and MAC reservations (see dragonflow/api/ipam.py).
"""
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import openstack
import pytest

from .conftest import connect, unique

THREADS, PORTS = 8, 400


@pytest.fixture(scope='module')
def two_apis(start_apis):
    apis = start_apis(2)
    yield apis
    for api in apis:
        assert not api.errors_logged(), api.errors_logged()


def _run(apis, count, create):
    """``create(conn, i)`` for i in range(count), from THREADS threads over the processes."""
    local, clients = threading.local(), itertools.count()
    results, failures = [], []

    def one(i):
        if not hasattr(local, 'conn'):  # one client per thread, spread over the processes
            local.conn = connect(apis[next(clients) % len(apis)].url)
        try:
            results.append(create(local.conn, i))
        except openstack.exceptions.HttpException as e:
            failures.append((e.status_code, e.response.json()['NeutronError']['type']))

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, range(count)))
    return results, failures


def test_400_ports_on_a_23_from_two_processes(two_apis):
    conn = connect(two_apis[0].url)
    net = conn.network.create_network(name='crowded')
    subnet = conn.network.create_subnet(network_id=net.id, cidr='10.50.0.0/23', ip_version=4)

    ports, failures = _run(two_apis, PORTS, lambda c, i: c.network.create_port(
        network_id=net.id, name=f'p{i}'))

    assert failures == []
    ips = {p.fixed_ips[0]['ip_address'] for p in ports}
    macs = {p.mac_address for p in ports}
    assert len(ports) == len(ips) == len(macs) == PORTS
    assert subnet.gateway_ip not in ips
    # What the store holds agrees with what the clients were told.
    listed = list(connect(two_apis[1].url).network.ports(network_id=net.id))
    assert {p.fixed_ips[0]['ip_address'] for p in listed} == ips
    assert {p.mac_address for p in listed} == macs


def test_one_address_requested_by_many_goes_to_one(two_apis):
    conn = connect(two_apis[0].url)
    net = conn.network.create_network(name='contested')
    conn.network.create_subnet(network_id=net.id, cidr='10.60.0.0/24', ip_version=4)

    ports, failures = _run(two_apis, 16, lambda c, i: c.network.create_port(
        network_id=net.id, fixed_ips=[{'ip_address': '10.60.0.77'}]))

    assert len(ports) == 1
    assert failures == [(409, 'IpAddressAlreadyAllocated')] * 15


def test_overlapping_interfaces_added_at_once_one_wins(two_apis):
    conn = connect(two_apis[0].url)
    router = conn.network.create_router(name='contested')
    subnets = []
    for i in range(8):
        net = conn.network.create_network(name=f'overlap-{i}')
        subnets.append(conn.network.create_subnet(network_id=net.id, cidr=f'10.70.{i}.0/24'
                                                  if i % 2 else '10.70.0.0/16', ip_version=4))

    added, failures = _run(two_apis, len(subnets), lambda c, i: c.network.add_interface_to_router(
        router, subnet=subnets[i].id))

    # 10.70.0.0/16 overlaps every other subnet: either it alone, or all the /24s.
    assert len(added) in (1, 4)
    assert {f[0] for f in failures} == {400}
    interfaces = list(conn.network.ports(device_id=router.id))
    assert len(interfaces) == len(added)


def test_concurrent_first_use_makes_one_default_group(two_apis):
    """Many first uses of a project at once, from both processes: one default group each."""
    projects = [unique("race") for _ in range(6)]
    uses = [lambda c: list(c.network.security_groups()),
            lambda c: c.network.create_network(name='race'),
            lambda c: c.network.create_security_group(name=unique('race')),
            lambda c: list(c.network.security_group_rules())]
    calls = [(connect(two_apis[i % 2].url, project=project), use)
             for i, (project, use) in enumerate(itertools.product(projects, uses * 2))]
    for conn, _ in calls:
        list(conn.network.extensions())   # version discovery done before the race
    start = threading.Barrier(len(calls))

    def call(conn_and_use):
        conn, use = conn_and_use
        start.wait()
        use(conn)

    with ThreadPoolExecutor(len(calls)) as pool:
        list(pool.map(call, calls))

    admin = connect(two_apis[0].url, admin=True)
    for project in projects:
        defaults = [g for g in admin.network.security_groups(project_id=project)
                    if g.name == 'default']
        assert len(defaults) == 1, project
        assert len(defaults[0].security_group_rules) == 4
