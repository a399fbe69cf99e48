"""Stateful security groups with real traffic across chassis (conntrack in each port's zone)."""
import itertools
import re
import time

import pytest

from dragonflow.lab.cloud import wait_for
from tests.dataplane.conftest import caught_up
from tests.dataplane.test_routing import reachable_within


def connects(vm, ip, port, udp=False) -> bool:
    """A TCP connection (or a UDP exchange) from the VM to ip:port succeeds."""
    if udp:
        out = vm.exec('sh', '-c', f'echo ping | timeout 2 nc -u -w 1 {ip} {port}', check=False)
        return 'pong' in out
    return vm.popen('nc', '-z', '-w', '1', ip, str(port)).wait(10) == 0


LAB_NUMBERS = itertools.count(1)


@pytest.fixture
def lab(topo):
    """t (groups default + guarded) on ch1; a, b (default) and x, y (group solo: egress
    only) spread over ch2 and ch3; t listens on tcp 22 and 23 and answers udp 5353."""
    sdk = topo.sdk
    # A CIDR of its own: the labs of earlier tests stay, in the same project and default
    # group, and a remote-group rule means addresses (as in Neutron), so a VM here reusing
    # an address of an earlier lab's member would count as that member.
    subnet = topo.subnet(f'10.41.{next(LAB_NUMBERS)}.0/24')
    solo = sdk.network.create_security_group(name='solo')  # a new group: egress rules only
    guarded = sdk.network.create_security_group(name='guarded')
    default = next(g for g in sdk.network.security_groups(name='default'))

    def vm(chassis, groups):
        port = sdk.network.create_port(network_id=subnet.network_id,
                                       fixed_ips=[{'subnet_id': subnet.id}],
                                       security_groups=[g.id for g in groups])
        return topo.plug(port, chassis)

    t = vm('ch1', [default, guarded])
    a, b = vm('ch2', [default]), vm('ch3', [default])
    x, y = vm('ch2', [solo]), vm('ch3', [solo])
    for port in (22, 23):
        t.popen('nc', '-l', '-k', str(port))
    t.popen('sh', '-c', 'while true; do echo pong | nc -u -l -w 1 5353; done')
    wait_for(lambda: {':22 ', ':23 ', ':5353 '} <= set(re.findall(
        r':\d+ ', t.exec('ss', '-ltun'))), 5, what='the listeners up')
    return sdk, t, a, b, x, y, guarded, solo


def test_default_group_talks_to_itself_and_keeps_others_out(lab):
    sdk, t, a, b, x, y, guarded, solo = lab
    assert reachable_within(a, b.ip, 3) and reachable_within(b, t.ip, 3)
    assert not x.ping(a.ip, count=2, timeout=0.5)   # a takes no ingress from solo
    assert not a.ping(x.ip, count=2, timeout=0.5)   # x takes no ingress at all
    assert not x.ping(t.ip, count=2, timeout=0.5)


def test_tcp_22_from_one_address_icmp_udp_and_rule_removal(lab):
    sdk, t, a, b, x, y, guarded, solo = lab
    ssh = sdk.network.create_security_group_rule(
        security_group_id=guarded.id, direction='ingress', ethertype='IPv4', protocol='tcp',
        port_range_min=22, port_range_max=22, remote_ip_prefix=f'{x.ip}/32')
    wait_for(lambda: connects(x, t.ip, 22), 5, what='tcp/22 opened for x')
    assert not connects(x, t.ip, 23)
    assert not connects(y, t.ip, 22)
    assert not x.ping(t.ip, count=2, timeout=0.5)
    sdk.network.create_security_group_rule(security_group_id=guarded.id, direction='ingress',
                                           ethertype='IPv4', protocol='icmp')
    assert reachable_within(x, t.ip, 3)
    assert not connects(y, t.ip, 5353, udp=True)
    sdk.network.create_security_group_rule(
        security_group_id=guarded.id, direction='ingress', ethertype='IPv4', protocol='udp',
        port_range_min=5353, port_range_max=5353)
    wait_for(lambda: connects(y, t.ip, 5353, udp=True), 5, what='udp/5353 and its reply')
    sdk.network.delete_security_group_rule(ssh)
    start = time.monotonic()
    wait_for(lambda: not connects(x, t.ip, 22), 3, what='tcp/22 closed again')
    assert time.monotonic() - start < 1.0 + 1.5  # the rule is gone within 1 s (+ nc's wait)


def test_a_remote_group_rule_follows_a_port_that_joins_the_group(lab):
    sdk, t, a, b, x, y, guarded, solo = lab
    friends = sdk.network.create_security_group(name='friends')
    sdk.network.create_security_group_rule(
        security_group_id=guarded.id, direction='ingress', ethertype='IPv4', protocol='tcp',
        port_range_min=23, port_range_max=23, remote_group_id=friends.id)
    caught_up(t.chassis.cloud, 'ch1')  # its flows are in: the check below means something
    assert not connects(y, t.ip, 23)
    sdk.network.update_port(y.port.id, security_groups=[solo.id, friends.id])
    wait_for(lambda: connects(y, t.ip, 23), 5, what='y let in once it joined friends')
