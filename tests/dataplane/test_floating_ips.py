"""Distributed floating IPs with real packets: the internet host behind the upstream router
reaches VMs through their floating IPs, NATed on the chassis of each VM's port; the FIP
follows its port to another chassis; ICMP errors come back translated; security groups see
the fixed IP."""
import hashlib
import itertools
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from dragonflow.lab import physical
from dragonflow.lab.cloud import Cloud, wait_for
from tests.dataplane.conftest import restart_under_ping

PHYSNET = 'physnet1'
FOLLOW_DEADLINE = 1.0  # seconds from the API call to traffic on the new chassis
_cidrs = itertools.count(1)

# A UDP server answering each datagram with the VM's name: who holds the floating IP now?
WHO_SERVER = '''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7777))
while True:
    data, peer = s.recvfrom(100)
    s.sendto(sys.argv[1].encode(), peer)
'''
WHO_ASK = '''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[2]))
s.sendto(b"?", (sys.argv[1], 7777))
try:
    print(s.recvfrom(100)[0].decode())
except OSError:
    print("-")
'''
# One UDP "connection" (one socket, one source port) asking every 10 ms, printing each answer
# with the monotonic time it came (the system's clock, the same in every namespace).
WHO_STREAM = '''
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
while True:
    s.sendto(b"?", (sys.argv[1], 7777))
    time.sleep(0.01)
    try:
        while True:
            print(f"{time.monotonic():.3f} {s.recv(100).decode()}", flush=True)
    except BlockingIOError:
        pass
'''
# A connected UDP socket learns of an ICMP port unreachable only if the error's quoted packet
# is the one it sent (its own address and port): the NAT must have translated it back.
UDP_REFUSED = '''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((sys.argv[1], 9))
s.send(b"x")
try:
    s.recv(10)
    print("answered")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("nothing", e)
'''


@pytest.fixture(scope='module')
def cloud(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail('the data-plane tests need root (network namespaces and Open vSwitch)')
    with Cloud(str(tmp_path_factory.mktemp('cloud-fip')),
               physical_networks=(PHYSNET,)) as c:
        c.start(chassis=2)
        yield c


@pytest.fixture(scope='module')
def public(cloud):
    """The operator's flat external network on physnet1, the upstream router its gateway."""
    return physical.create_external_network(cloud.sdk.network, PHYSNET)


@pytest.fixture(scope='module')
def open_group(cloud):
    """Lets in ICMP, TCP and UDP from anywhere (the default group lets in only itself)."""
    net = cloud.sdk.network
    group = net.create_security_group(name='open')
    for protocol in ('icmp', 'tcp', 'udp'):
        net.create_security_group_rule(security_group_id=group.id, direction='ingress',
                                       ethertype='IPv4', protocol=protocol,
                                       remote_ip_prefix='0.0.0.0/0')
    return group


class North:
    """A project network behind a router with its gateway on public; VMs with floating IPs."""

    def __init__(self, cloud, public, group):
        self.cloud, self.public, self.group = cloud, public, group
        self.net = cloud.sdk.network
        n = next(_cidrs)
        network = self.net.create_network(name=f'fipnet{n}')
        self.subnet = self.net.create_subnet(network_id=network.id, ip_version=4,
                                             cidr=f'10.60.{n}.0/24', name=f'fipsubnet{n}')
        self.router = self.net.create_router(name=f'fiprouter{n}')
        self.net.add_interface_to_router(self.router, subnet=self.subnet.id)
        self.net.update_router(self.router, external_gateway_info={'network_id': public.id})

    def vm(self, chassis, group=None):
        port = self.net.create_port(network_id=self.subnet.network_id,
                                    fixed_ips=[{'subnet_id': self.subnet.id}],
                                    security_group_ids=[(group or self.group).id])
        vm = self.cloud.vm(chassis, port)
        self.cloud.wait_port_active(port.id)
        vm.port = port
        return vm

    def floating_ip(self, vm=None):
        fip = self.net.create_ip(floating_network_id=self.public.id,
                                 **({'port_id': vm.port.id} if vm else {}))
        if vm:
            self.cloud.wait_floating_ip_active(fip.id)
        return fip


@pytest.fixture
def north(cloud, public, open_group):
    return North(cloud, public, open_group)


@pytest.fixture(scope='module')
def internet(cloud):
    return cloud.physical.internet


@pytest.fixture(scope='module')
def upstream(cloud):
    return cloud.physical.upstream


def flows_for(chassis, fip) -> list[str]:
    """br-int's flows that name the floating IP's address."""
    pattern = re.compile(rf'{re.escape(fip.floating_ip_address)}\b')
    return [line for line in chassis.dump_flows().splitlines() if pattern.search(line)]


def who(host, address, timeout=0.3) -> str:
    """The name the UDP server at ``address`` answers with, '-' if none."""
    return host.exec(sys.executable, '-c', WHO_ASK, address, str(timeout)).strip()


def serve_who(vm, name):
    process = vm.popen(sys.executable, '-c', WHO_SERVER, name)
    wait_for(lambda: ':7777' in vm.exec('ss', '-lun'), 5, what='the UDP server')
    return process


def test_ping_and_tcp_from_the_internet_reach_the_vm(cloud, north, internet, tmp_path):
    vm = north.vm('ch1')
    fip = north.floating_ip(vm)  # ACTIVE: the chassis of the port has its flows in
    address = fip.floating_ip_address
    assert internet.ping(address, count=3)
    assert internet.ping_ttl(address) == 62  # two hops: the upstream router and ours
    sent, received = tmp_path / 'sent', tmp_path / 'received'
    sent.write_bytes(os.urandom(4 * 1024 * 1024))
    with open(received, 'wb') as out:
        listener = vm.popen('nc', '-l', '-N', '5001', stdout=out)
        try:
            wait_for(lambda: ':5001' in vm.exec('ss', '-ltn'), 5, what='nc listening')
            with open(sent, 'rb') as data:
                internet.popen('nc', '-N', address, '5001', stdin=data).wait(60)
            listener.wait(60)
        finally:
            listener.kill()
    assert hashlib.sha256(received.read_bytes()).hexdigest() == \
        hashlib.sha256(sent.read_bytes()).hexdigest()


def test_the_vms_own_traffic_leaves_with_the_fip_as_source(cloud, north, internet):
    vm = north.vm('ch1')
    fip = north.floating_ip(vm)
    with physical.Capture(internet.name, 'eth0', 'icmp') as capture:
        assert vm.ping(physical.INTERNET_IP, count=2)
    requests = [line for line in capture.lines if 'echo request' in line]
    assert requests and all(f'{fip.floating_ip_address} > {physical.INTERNET_IP}' in line
                            for line in requests), capture.lines
    assert not [line for line in capture.lines if vm.ip in line]
    with cloud.physical.capture('icmp', cloud.physical.port_of('ch1')) as wire:
        assert vm.ping(physical.INTERNET_IP, count=1)
    assert wire.lines and not [line for line in wire.lines if vm.ip in line], wire.lines


def test_a_vm_without_a_fip_does_not_get_out(north):
    vm = north.vm('ch1')
    assert not vm.ping(physical.INTERNET_IP, count=2, timeout=0.5)


def test_the_fip_follows_its_reassociation_to_another_chassis(cloud, north, internet,
                                                              upstream):
    first, second = north.vm('ch1'), north.vm('ch2')
    servers = [serve_who(first, 'first'), serve_who(second, 'second')]
    try:
        fip = north.floating_ip(first)
        address = fip.floating_ip_address
        assert who(internet, address, 1.0) == 'first'
        start = time.monotonic()
        north.net.update_ip(fip, port_id=second.port.id)
        wait_for(lambda: who(internet, address, 0.1) == 'second', 5,
                 what='the floating IP answering from the second VM')
        elapsed = time.monotonic() - start
        assert elapsed < FOLLOW_DEADLINE, f'traffic followed after {elapsed:.3f} s'
        cloud.wait_floating_ip_active(fip.id)
        wait_for(lambda: not flows_for(cloud.chassis['ch1'], fip), 2,
                 what='no flow left on the old chassis')
        # The old chassis answers no ARP for it: the upstream router asks again.
        upstream.exec('ip', 'neigh', 'flush', 'dev', 'eth0')
        with cloud.physical.capture('arp', cloud.physical.port_of('ch1')) as old, \
                cloud.physical.capture('arp', cloud.physical.port_of('ch2')) as new:
            assert who(internet, address, 1.0) == 'second'
        assert _arp_requests(old.lines, address), old.lines  # it was asked, as every chassis
        assert not _arp_replies(old.lines, address), old.lines
        assert _arp_replies(new.lines, address), new.lines
        print(f'traffic followed the floating IP to the other chassis in {elapsed:.3f} s')
    finally:
        for server in servers:
            server.kill()


class WhoStream:
    """WHO_STREAM from a host: ``answers`` as (time, name) as they come."""

    def __init__(self, host, address):
        self.process = host.popen(sys.executable, '-c', WHO_STREAM, address,
                                  stdout=subprocess.PIPE, text=True)
        self.answers: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            at, name = line.split()
            self.answers.append((float(at), name))

    def names(self, since: float = 0.0) -> list[str]:
        return [name for at, name in list(self.answers) if at >= since]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait(10)
        self._reader.join(10)


def nat_zones(chassis, fip) -> set[int]:
    """The conntrack zones of the floating IP's DNAT flows on the chassis."""
    return {int(zone, 0) for line in flows_for(chassis, fip) if 'table=50' in line
            for zone in re.findall(r'zone=(\w+)', line)}


def test_an_open_connection_follows_its_fip_reassociated_on_the_same_chassis(
        cloud, north, internet):
    """Re-associated, the floating IP has a NAT zone of its own (flushed first): the next
    packet of a connection open to the old VM is a new connection to the new one."""
    first, second = north.vm('ch1'), north.vm('ch1')
    chassis = cloud.chassis['ch1']
    servers = [serve_who(first, 'first'), serve_who(second, 'second')]
    try:
        fip = north.floating_ip(first)
        with WhoStream(internet, fip.floating_ip_address) as stream:
            wait_for(lambda: len(stream.names()) >= 20, 5, what='the first VM answering')
            old_zones = nat_zones(chassis, fip)
            start = time.monotonic()
            north.net.update_ip(fip, port_id=second.port.id)
            wait_for(lambda: 'second' in stream.names(start), 5,
                     what='the second VM answering the open connection')
            switched = next(at for at, name in stream.answers if at >= start
                            and name == 'second')
            wait_for(lambda: len(stream.names(switched)) >= 50, 5, what='50 answers more')
            assert set(stream.names(start)) <= {'first', 'second'}
            assert set(stream.names(switched)) == {'second'}, stream.names(switched)
            assert stream.names(0)[:20] == ['first'] * 20
        elapsed = switched - start
        assert elapsed < FOLLOW_DEADLINE, f'the connection followed after {elapsed:.3f} s'
        new_zones = nat_zones(chassis, fip)
        assert len(new_zones) == 1 and not new_zones & old_zones, (old_zones, new_zones)
        zone, = new_zones
        entries = chassis.ovs.appctl('dpctl/dump-conntrack', f'zone={zone}')
        assert _sources(entries) >= {second.ip} and first.ip not in _sources(entries), entries
        print(f'the open connection followed the floating IP in {elapsed:.3f} s; zone '
              f'{sorted(old_zones)} -> {zone}')
    finally:
        for server in servers:
            server.kill()


def _sources(conntrack: str) -> set[str]:
    return set(re.findall(r'src=([\d.]+)', conntrack))


def _arp_replies(lines, address) -> list[str]:
    return [line for line in lines if re.search(rf'Reply {re.escape(address)} is-at', line)]


def _arp_requests(lines, address) -> list[str]:
    return [line for line in lines if re.search(rf'Request who-has {re.escape(address)} ', line)]


def test_a_disassociated_fip_stops_answering(cloud, north, internet, upstream):
    vm = north.vm('ch1')
    fip = north.floating_ip(vm)
    address = fip.floating_ip_address
    assert internet.ping(address)
    north.net.update_ip(fip, port_id=None)
    wait_for(lambda: not flows_for(cloud.chassis['ch1'], fip), 2,
             what='the floating IP\'s flows gone')
    upstream.exec('ip', 'neigh', 'flush', 'dev', 'eth0')
    assert not internet.ping(address, count=2, timeout=0.5)
    assert north.net.get_ip(fip.id).status == 'DOWN'
    assert not vm.ping(physical.INTERNET_IP, count=1, timeout=0.5)


def test_fip_to_fip_through_the_upstream_router(north):
    a, b, c = north.vm('ch1'), north.vm('ch2'), north.vm('ch1')
    fa, fb, fc = (north.floating_ip(vm).floating_ip_address for vm in (a, b, c))
    assert a.ping(fb, count=2)   # between chassis
    assert b.ping(fa, count=2)
    assert a.ping(fc, count=2)   # both on one chassis: still out and back


def test_icmp_errors_come_back_through_the_nat_translated(north, internet):
    vm = north.vm('ch1')
    north.floating_ip(vm)
    # TTL 2: one hop here, the next at the upstream router, which answers time exceeded.
    out = vm.exec('ping', '-n', '-c', '1', '-W', '1', '-t', '2', physical.INTERNET_IP,
                  check=False)
    assert 'Time to live exceeded' in out, out
    # UDP to a closed port of the internet host: its port unreachable reaches the socket.
    assert vm.exec(sys.executable, '-c', UDP_REFUSED, physical.INTERNET_IP).strip() == \
        'refused'


def test_a_security_group_without_ingress_icmp_blocks_ping_to_the_fip(cloud, north, internet):
    net = cloud.sdk.network
    ssh_only = net.create_security_group(name='ssh-only')
    net.create_security_group_rule(security_group_id=ssh_only.id, direction='ingress',
                                   ethertype='IPv4', protocol='tcp', port_range_min=22,
                                   port_range_max=22, remote_ip_prefix='0.0.0.0/0')
    vm = north.vm('ch1', group=ssh_only)
    fip = north.floating_ip(vm)
    address = fip.floating_ip_address
    listener = vm.popen('nc', '-l', '-k', '22')
    try:
        wait_for(lambda: ':22 ' in vm.exec('ss', '-ltn'), 5, what='nc listening')
        assert _connects(internet, address, 22)
        assert not internet.ping(address, count=2, timeout=0.5)
        assert not _connects(internet, address, 23)
    finally:
        listener.kill()


def _connects(host, address, port) -> bool:
    result = host.popen('nc', '-z', '-w', '2', address, str(port))
    return result.wait(10) == 0


def test_status_is_active_once_the_flows_are_in_and_down_unassociated(cloud, north):
    vm = north.vm('ch2')
    fip = north.floating_ip()
    assert fip.status == 'DOWN'
    north.net.update_ip(fip, port_id=vm.port.id)
    cloud.wait_floating_ip_active(fip.id)
    assert flows_for(cloud.chassis['ch2'], fip)
    assert not flows_for(cloud.chassis['ch1'], fip)


def test_a_controller_restart_keeps_the_nat_and_rewrites_no_flow(cloud, north, internet):
    """The restarted controller knows no gateway MAC yet: it keeps the one br-int's flows
    have until it learns it again, so the reconcile changes nothing and no packet is lost."""
    vm = north.vm('ch1')
    address = north.floating_ip(vm).floating_ip_address
    chassis = cloud.chassis['ch1']
    restart_under_ping(chassis, internet, address)


def test_a_fip_becoming_local_is_announced_by_three_gratuitous_arps(cloud, north):
    vm = north.vm('ch2')
    fip = north.floating_ip()
    address = fip.floating_ip_address
    announced = subprocess.Popen(
        ['ip', 'netns', 'exec', cloud.physical.netns, 'tcpdump', '-nn', '-l', '-c', '3', '-i',
         cloud.physical.port_of('ch2'), f'arp src host {address} and arp dst host {address}'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        announced.stderr.readline()  # "listening on ...": the capture runs
        north.net.update_ip(fip, port_id=vm.port.id)
        out, _ = announced.communicate(timeout=5)  # tcpdump ends at the third
    finally:
        announced.kill()
    assert len(re.findall(rf'Request who-has {re.escape(address)} tell {re.escape(address)}',
                          out)) == 3, out
