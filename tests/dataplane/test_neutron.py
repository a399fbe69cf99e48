"""Real packets through a topology made in a real Neutron: the cloud's API is Neutron with
Dragonflow's ``df`` driver and ``df-l3`` plugin (lab/neutron.py), the chassis' controllers
unchanged. Ports go ACTIVE in Neutron only once their chassis has their flows in (its
StatusReport, turned into Neutron's status by the driver's worker) and DOWN again when
unplugged; VMs on two chassis ping
across a Neutron router, and the internet host pings a VM's floating IP."""
import os

import pytest

from dragonflow import store as df_store
from dragonflow.lab import physical
from dragonflow.lab.cloud import Cloud, wait_for
from tests.dataplane.conftest import caught_up

PHYSNET = 'physnet1'


@pytest.fixture(scope='module')
def cloud(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail('the data-plane tests need root (network namespaces and Open vSwitch)')
    with Cloud(str(tmp_path_factory.mktemp('cloud-neutron')), api='neutron',
               physical_networks=(PHYSNET,)) as c:
        c.start(chassis=2)
        yield c
        errors = c.neutron.errors_logged()
    assert not errors, errors


def _subnet(net, name: str, cidr: str):
    network = net.create_network(name=name)
    return net.create_subnet(network_id=network.id, ip_version=4, cidr=cidr,
                             name=f'{name}-subnet')


def _port(net, subnet, **extra):
    return net.create_port(network_id=subnet.network_id,
                           fixed_ips=[{'subnet_id': subnet.id}], **extra)


def _nb(cloud, table: str) -> list:
    """The documents of a table of the cloud's NB store, as the controllers read them."""
    store = df_store.connect(cloud.store_url)
    try:
        return [record.value for record in store.list(table)]
    finally:
        store.close()


def _reports(cloud, port_id: str, status: str) -> list:
    return [r for r in _nb(cloud, 'status_reports')
            if r.get('resource_id') == port_id and r.get('status') == status]


def _plug_and_wait_active(cloud, chassis: str, port):
    """Bound to ``chassis`` but off br-int, the port stays DOWN once the chassis has caught up
    with the binding; attached, it goes ACTIVE, and by then the chassis has its flows."""
    vm = cloud.vm(chassis, port, attach=False)
    net = cloud.sdk.network
    assert net.get_port(port.id).binding_host_id == chassis
    caught_up(cloud, *cloud.chassis)
    assert net.get_port(port.id).status == 'DOWN'
    assert not _reports(cloud, port.id, 'ACTIVE')
    vm.attach()
    cloud.wait_port_active(port.id)
    assert port.mac_address in cloud.chassis[chassis].dump_flows()
    # Neutron's status came from the chassis' report; the chassis left the NB port alone.
    assert [r['chassis'] for r in _reports(cloud, port.id, 'ACTIVE')] == [chassis]
    nb_port = next(p for p in _nb(cloud, 'ports') if p['id'] == port.id)
    assert nb_port['status_source'] == 'report'
    vm.port = port
    return vm


def test_vms_on_two_chassis_reach_each_other_across_a_neutron_router(cloud):
    net = cloud.sdk.network
    s1, s2 = _subnet(net, 'left', '10.81.1.0/24'), _subnet(net, 'right', '10.81.2.0/24')
    router = net.create_router(name='across')
    for subnet in (s1, s2):
        net.add_interface_to_router(router, subnet=subnet.id)
    a = _plug_and_wait_active(cloud, 'ch1', _port(net, s1))
    b = _plug_and_wait_active(cloud, 'ch2', _port(net, s2))
    assert a.ping(b.ip, count=3)
    assert b.ping(a.ip, count=3)
    assert a.ping_ttl(b.ip) == 63  # one router hop: routed, not bridged


def test_an_unplugged_port_goes_down_in_neutron_and_active_again_when_plugged(cloud):
    net = cloud.sdk.network
    subnet = _subnet(net, 'replug', '10.83.1.0/24')
    a = _plug_and_wait_active(cloud, 'ch1', _port(net, subnet))
    b = _plug_and_wait_active(cloud, 'ch2', _port(net, subnet))
    assert a.ping(b.ip, count=2)
    b.detach()
    wait_for(lambda: net.get_port(b.port.id).status == 'DOWN', 10,
             what='the unplugged port DOWN in Neutron')
    assert not a.ping(b.ip, count=1, timeout=0.5)
    b.attach()
    cloud.wait_port_active(b.port.id)
    assert a.ping(b.ip, count=2)


def test_the_internet_host_pings_a_floating_ip_made_in_neutron(cloud):
    admin = cloud.sdk.network
    public = physical.create_external_network(admin, PHYSNET)
    group = admin.create_security_group(name='open-icmp')
    admin.create_security_group_rule(security_group_id=group.id, direction='ingress',
                                     ethertype='IPv4', protocol='icmp',
                                     remote_ip_prefix='0.0.0.0/0')
    subnet = _subnet(admin, 'north', '10.82.1.0/24')
    router = admin.create_router(name='north')
    admin.add_interface_to_router(router, subnet=subnet.id)
    admin.update_router(router, external_gateway_info={'network_id': public.id})
    vm = _plug_and_wait_active(cloud, 'ch2', _port(admin, subnet,
                                                   security_group_ids=[group.id]))
    fip = admin.create_ip(floating_network_id=public.id, port_id=vm.port.id)
    cloud.wait_floating_ip_active(fip.id)
    internet = cloud.physical.internet
    assert internet.ping(fip.floating_ip_address, count=3)
    assert vm.ping(physical.INTERNET_IP, count=3)
