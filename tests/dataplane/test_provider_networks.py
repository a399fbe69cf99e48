"""Provider networks with real packets: a VLAN network spans two chassis over the physical
network (802.1Q with its VLAN id on the wire, nothing on the underlay), a flat network reaches
the upstream router directly, routed frames leave each chassis with its own router MAC, DHCP
works on a VLAN network, and a broadcast crosses the physical network once, never back."""
import os
import re

import pytest

from dragonflow import store as df_store
from dragonflow.lab import physical
from dragonflow.lab.cloud import Cloud, wait_for
from dragonflow.lab.physical import Capture
from tests.dataplane.conftest import log_count
from tests.dataplane.test_routing import reachable_within
from tests.dataplane.test_services import _dhclient

PHYSNET = 'physnet1'
VLAN_ID = 110  # in the lab's network_vlan_ranges (physnet1:100:200)


@pytest.fixture(scope='module')
def cloud(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail('the data-plane tests need root (network namespaces and Open vSwitch)')
    with Cloud(str(tmp_path_factory.mktemp('cloud-provider')),
               physical_networks=(PHYSNET,)) as c:
        c.start(chassis=2)
        yield c


class Provider:
    """The operator's networks: VLAN 110 (10.70.1.0/24) and flat (172.24.4.0/24, the
    upstream router its gateway) on physnet1, and a tenant (tunnel) network 10.70.2.0/24
    routed to the VLAN one."""

    def __init__(self, cloud):
        self.cloud, self.net = cloud, cloud.sdk.network
        self.vlan = self.net.create_network(
            name='vlan110', provider_network_type='vlan', provider_physical_network=PHYSNET,
            provider_segmentation_id=VLAN_ID)
        self.vlan_subnet = self.net.create_subnet(network_id=self.vlan.id, ip_version=4,
                                                  cidr='10.70.1.0/24', name='vlan110-subnet')
        self.flat = self.net.create_network(name='flat', provider_network_type='flat',
                                            provider_physical_network=PHYSNET)
        self.flat_subnet = self.net.create_subnet(
            network_id=self.flat.id, ip_version=4, cidr=physical.EXTERNAL_CIDR,
            gateway_ip=physical.GATEWAY_IP, enable_dhcp=False, name='flat-subnet',
            allocation_pools=[{'start': '172.24.4.100', 'end': '172.24.4.200'}])
        tenant = self.net.create_network(name='tenant')
        self.tenant_subnet = self.net.create_subnet(network_id=tenant.id, ip_version=4,
                                                    cidr='10.70.2.0/24', name='tenant-subnet')
        self.router = self.net.create_router(name='provider-router')
        for subnet in (self.vlan_subnet, self.tenant_subnet):
            self.net.add_interface_to_router(self.router, subnet=subnet.id)

    def vm(self, subnet, chassis, dhcp=False):
        port = self.net.create_port(network_id=subnet.network_id,
                                    fixed_ips=[{'subnet_id': subnet.id}])
        vm = self.cloud.vm(chassis, port, dhcp=dhcp)
        self.cloud.wait_port_active(port.id)
        vm.port = port
        return vm

    def interface_mac(self, subnet) -> str:
        ports = self.net.ports(device_id=self.router.id, network_id=subnet.network_id)
        return next(iter(ports)).mac_address


@pytest.fixture(scope='module')
def provider(cloud):
    return Provider(cloud)


def router_mac(cloud, chassis) -> str:
    return df_store.connect(cloud.store_url).get('chassis', chassis).value['router_mac']


def frames(lines, text) -> list[tuple[str, str]]:
    """(source MAC, destination MAC) of the tcpdump -e lines that contain ``text``."""
    found = []
    for line in lines:
        macs = re.search(r'([0-9a-f:]{17}) > ([0-9a-f:]{17})', line)
        if text in line and macs:
            found.append(macs.group(1, 2))
    return found


def underlay(cloud) -> Capture:
    return Capture(cloud.underlay_ns, 'br0')


def test_a_vlan_network_spans_chassis_over_the_physical_network(cloud, provider):
    a, b = provider.vm(provider.vlan_subnet, 'ch1'), provider.vm(provider.vlan_subnet, 'ch2')
    assert reachable_within(a, b.ip, 5)
    net = cloud.physical
    with underlay(cloud) as tunnels, net.capture(f'vlan {VLAN_ID}',
                                                 net.port_of('ch1')) as wire:
        assert a.ping(b.ip, count=3, interval=0.05)
    requests = frames(wire.lines, f'vlan {VLAN_ID}, p 0, ethertype IPv4')
    assert requests.count((a.mac, b.mac)) == 3, wire.lines  # tagged, the VMs' own MACs
    assert requests.count((b.mac, a.mac)) == 3, wire.lines
    assert not [line for line in tunnels.lines
                if a.ip in line or b.ip in line or a.mac in line], tunnels.lines


def test_a_flat_network_reaches_the_upstream_router_directly(cloud, provider):
    vm = provider.vm(provider.flat_subnet, 'ch2')
    assert reachable_within(vm, physical.GATEWAY_IP, 5)
    with cloud.physical.capture('icmp', cloud.physical.port_of('ch2')) as wire:
        assert vm.ping_ttl(physical.GATEWAY_IP) == 64  # no router between them
    assert any('802.1Q' not in line and f'{vm.ip} > {physical.GATEWAY_IP}' in line
               for line in wire.lines), wire.lines


def test_routed_frames_leave_each_chassis_with_its_own_router_mac(cloud, provider):
    """Routed where they are sent from (tunnel network to VLAN network), the frames reach the
    physical network from each chassis with that chassis' router MAC as source, never the
    router interface's MAC (which would move between the ports of every chassis)."""
    x1, x2 = provider.vm(provider.tenant_subnet, 'ch1'), provider.vm(provider.tenant_subnet,
                                                                    'ch2')
    y1, y2 = provider.vm(provider.vlan_subnet, 'ch1'), provider.vm(provider.vlan_subnet, 'ch2')
    assert reachable_within(x1, y2.ip, 5) and reachable_within(x2, y1.ip, 5)
    interface = provider.interface_mac(provider.vlan_subnet)
    net = cloud.physical
    with net.capture(f'vlan {VLAN_ID}', net.port_of('ch1')) as one, \
            net.capture(f'vlan {VLAN_ID}', net.port_of('ch2')) as two:
        assert x1.ping_ttl(y2.ip) == 63
        assert x2.ping_ttl(y1.ip) == 63
    mac1, mac2 = router_mac(cloud, 'ch1'), router_mac(cloud, 'ch2')
    assert mac1 != mac2
    assert (mac1, y2.mac) in frames(one.lines, f'{x1.ip} > {y2.ip}: ICMP echo request'), \
        one.lines
    assert (mac2, y1.mac) in frames(two.lines, f'{x2.ip} > {y1.ip}: ICMP echo request'), \
        two.lines
    assert not [line for line in one.lines + two.lines if interface in line]


def test_dhcp_works_on_a_vlan_network(cloud, provider, tmp_path):
    other = provider.vm(provider.vlan_subnet, 'ch1')
    vm = provider.vm(provider.vlan_subnet, 'ch2', dhcp=True)
    given = _dhclient(vm, str(tmp_path))
    address = vm.port.fixed_ips[0]['ip_address']
    assert vm.addresses() == [f'{address}/24']
    assert given['new_routers'] == provider.vlan_subnet.gateway_ip
    vm.ip = address
    assert reachable_within(vm, other.ip, 5)


def test_a_broadcast_crosses_the_physical_network_once_and_never_comes_back(cloud, provider):
    """Two pings to the subnet's broadcast address (Ethernet broadcast): each leaves ch1 once
    and reaches ch2 once (a chassis sending one back out would show it twice on both ports),
    never through a tunnel."""
    a = provider.vm(provider.vlan_subnet, 'ch1')
    provider.vm(provider.vlan_subnet, 'ch2')  # ch2 serves the network too
    broadcast = '10.70.1.255'
    net = cloud.physical
    with underlay(cloud) as tunnels, \
            net.capture(f'vlan {VLAN_ID} and icmp', net.port_of('ch1')) as one, \
            net.capture(f'vlan {VLAN_ID} and icmp', net.port_of('ch2')) as two:
        a.exec('ping', '-b', '-n', '-c', '2', '-i', '0.2', '-W', '0.5', broadcast, check=False)
    for capture in (one, two):
        sent = frames(capture.lines, f'{a.ip} > {broadcast}: ICMP echo request')
        assert sent == [(a.mac, 'ff:ff:ff:ff:ff:ff')] * 2, (one.lines, two.lines)
    assert not [line for line in tunnels.lines if broadcast in line], tunnels.lines


def test_the_chassis_record_and_patch_ports_are_kept(cloud, provider):
    """The chassis says what it maps; a patch port deleted by hand comes back, and traffic
    with it."""
    record = df_store.connect(cloud.store_url).get('chassis', 'ch1').value
    assert record['physical_networks'] == [PHYSNET] and record['router_mac'].startswith(
        'fa:16:3f:')
    a, b = provider.vm(provider.vlan_subnet, 'ch1'), provider.vm(provider.vlan_subnet, 'ch2')
    assert reachable_within(a, b.ip, 5)
    ch1 = cloud.chassis['ch1']
    ch1.ovs.vsctl('del-port', 'br-int', f'patch-{PHYSNET}-int')
    wait_for(lambda: f'patch-{PHYSNET}-int' in ch1.ovs.vsctl('list-ports', 'br-int'), 10,
             what='the patch port restored')
    assert reachable_within(a, b.ip, 5)


def test_a_missing_provider_bridge_is_never_made_and_is_patched_once_it_exists(
        cloud, provider):
    a, b = provider.vm(provider.vlan_subnet, 'ch1'), provider.vm(provider.vlan_subnet, 'ch2')
    assert reachable_within(a, b.ip, 5)
    ch2 = cloud.chassis['ch2']
    ch2.ovs.vsctl('del-br', 'br-ex')  # the operator's bridge, NIC and all
    wait_for(lambda: log_count(ch2, 'bridge br-ex of bridge_mappings') > 0, 10,
             what='an error for the missing bridge')
    assert not a.ping(b.ip, count=1, timeout=0.5)
    assert 'br-ex' not in ch2.ovs.vsctl('list-br')  # looked for, never made
    ch2.ovs.add_bridge('br-ex', fail_mode='standalone')  # as the lab's operator made it
    ch2.ovs.vsctl('--may-exist', 'add-port', 'br-ex', 'ex0')
    assert reachable_within(a, b.ip, 10)
    assert log_count(ch2, 'bridge br-ex of bridge_mappings') == 1  # said once


def test_a_patch_port_on_the_wrong_bridge_goes_back_to_the_mapped_one(cloud, provider):
    """As after a remap (physnet1 mapped to another bridge) or a hand on the wrong bridge:
    the provider side of the patch is moved back to the mapped bridge, once."""
    a, b = provider.vm(provider.vlan_subnet, 'ch1'), provider.vm(provider.vlan_subnet, 'ch2')
    assert reachable_within(a, b.ip, 5)
    ch1 = cloud.chassis['ch1']
    outside = f'patch-{PHYSNET}-ex'
    ch1.ovs.add_bridge('br-other', fail_mode='standalone')
    ch1.ovs.vsctl('del-port', 'br-ex', outside, '--', 'add-port', 'br-other', outside,
                  '--', 'set', 'Interface', outside, 'type=patch',
                  f'options:peer=patch-{PHYSNET}-int')
    wait_for(lambda: outside in ch1.ovs.vsctl('list-ports', 'br-ex'), 10,
             what='the patch port back on br-ex')
    assert outside not in ch1.ovs.vsctl('list-ports', 'br-other')
    assert reachable_within(a, b.ip, 5)
