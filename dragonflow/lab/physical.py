"""The lab's physical networks: what an operator's datacentre gives the provider bridges.

A physical network is a namespace holding a Linux bridge (the provider switch, apart from
the underlay) that each chassis' provider bridge (br-ex, made as an operator makes it, NIC
included: a veth into the switch) joins. It passes 802.1Q frames as they are, so VLAN
networks share it. The first physical network also has an upstream router on it, holding
the external subnet's gateway address (untagged), and an internet host behind that router on
another subnet, for north-south tests; ``host`` adds an untagged physical machine. (This
sandbox's kernel has neither VLAN devices nor bridge VLAN filtering, so no lab machine sits
on a VLAN: tagged frames are seen with ``capture`` on the switch's ports.)

tcpdump on the switch itself (br0) sees only what the switch floods to every port; a
chassis' own port (``port_of``) sees every frame that chassis sends or receives.
"""
import contextlib
import dataclasses
import subprocess
import threading
import time
from typing import Optional

from dragonflow.lab import netns

EXTERNAL_CIDR = '172.24.4.0/24'
GATEWAY_IP = '172.24.4.1'            # the upstream router, on the physical network
INTERNET_CIDR = '203.0.113.0/24'
UPSTREAM_INTERNET_IP = '203.0.113.1'  # the upstream router, toward the internet host
INTERNET_IP = '203.0.113.10'


def create_external_network(admin, physical_network: str, name: str = 'public'):
    """The operator's flat external network on ``physical_network``, the upstream router
    its gateway, through ``admin`` (an openstacksdk network proxy with the admin role)."""
    network = admin.create_network(name=name, is_router_external=True,
                                   provider_network_type='flat',
                                   provider_physical_network=physical_network)
    admin.create_subnet(network_id=network.id, name=f'{name}-subnet', ip_version=4,
                        cidr=EXTERNAL_CIDR, gateway_ip=GATEWAY_IP, enable_dhcp=False,
                        allocation_pools=[{'start': '172.24.4.100', 'end': '172.24.4.200'}])
    return network


@dataclasses.dataclass(eq=False)
class Host(netns.Machine):
    """A machine outside the cloud: a namespace with ``eth0`` (and more) configured by us."""
    name: str
    ip: Optional[str] = None


class Capture:
    """tcpdump -e on an interface for the length of a with-block; ``lines`` afterwards."""

    def __init__(self, namespace: str, interface: str, bpf: str = ''):
        self.args = ['ip', 'netns', 'exec', namespace, 'tcpdump', '-e', '-nn', '-l', '-i',
                     interface, *bpf.split()]
        self.lines: list[str] = []

    def __enter__(self):
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.process.stderr.readline()  # "listening on ...": the capture runs
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        # Read as it comes: a full pipe (64 KiB, some 380 lines) would block tcpdump, and
        # the kernel would drop every frame captured from then on.
        for line in self.process.stdout:
            if line.strip():
                self.lines.append(line.rstrip('\n'))

    def __exit__(self, *exc):
        time.sleep(0.3)  # let the last frames of the block reach tcpdump's buffer
        self.process.terminate()
        self.process.wait(10)
        self._reader.join(10)
        self.process.stderr.close()


def _quiet(host: Host) -> None:
    """No IPv6 (not yet in the roadmap's reach): its solicitations stay off the wire."""
    for scope in ('all', 'default'):
        host.exec('sysctl', '-q', '-w', f'net.ipv6.conf.{scope}.disable_ipv6=1')


class PhysicalNetwork:
    def __init__(self, prefix: str, name: str, bridge: str, with_upstream: bool):
        self.name, self.bridge = name, bridge  # the physnet, and the chassis' bridge for it
        self.netns = f'{prefix}-{name}'
        self.with_upstream = with_upstream
        self.upstream = Host(f'{prefix}-upstream', GATEWAY_IP)
        self.internet = Host(f'{prefix}-internet', INTERNET_IP)
        self.hosts: list[Host] = []
        self.ports: dict[str, str] = {}  # chassis name -> its port on the switch

    @property
    def mapping(self) -> str:
        """Its bridge_mappings entry."""
        return f'{self.name}:{self.bridge}'

    def start(self) -> None:
        netns.add(self.netns)
        netns.run('ip', 'link', 'add', 'br0', 'type', 'bridge', netns=self.netns)
        netns.run('ip', 'link', 'set', 'br0', 'up', netns=self.netns)
        if self.with_upstream:
            self._start_upstream()

    def _start_upstream(self) -> None:
        up, inet = self.upstream, self.internet
        netns.add(up.name)
        netns.add(inet.name)
        _quiet(up)
        _quiet(inet)
        self._plug(up, 'up0')
        up.exec('ip', 'addr', 'add', f'{GATEWAY_IP}/24', 'dev', 'eth0')
        netns.veth('eth1', up.name, 'eth0', inet.name)
        up.exec('ip', 'addr', 'add', f'{UPSTREAM_INTERNET_IP}/24', 'dev', 'eth1')
        inet.exec('ip', 'addr', 'add', f'{INTERNET_IP}/24', 'dev', 'eth0')
        inet.exec('ip', 'route', 'add', 'default', 'via', UPSTREAM_INTERNET_IP)
        for host, interface in ((up, 'eth1'), (inet, 'eth0')):
            host.exec('ethtool', '-K', interface, 'tx', 'off')
        up.exec('sysctl', '-q', '-w', 'net.ipv4.ip_forward=1')
        # Traffic between two floating IPs turns around here: forward it without redirects.
        for scope in ('all', 'default', 'eth0'):
            up.exec('sysctl', '-q', '-w', f'net.ipv4.conf.{scope}.send_redirects=0')

    def _plug(self, host: Host, peer: str) -> None:
        """``host``'s eth0 as a port of the switch. The kernel's partial checksums are not
        completed on the netdev datapath's AF_PACKET path (shared notes): tx off."""
        netns.veth('eth0', host.name, peer, self.netns)
        netns.run('ip', 'link', 'set', peer, 'master', 'br0', netns=self.netns)
        host.exec('ethtool', '-K', 'eth0', 'tx', 'off')

    def join(self, chassis) -> None:
        """The chassis' provider bridge, as the operator makes it: a netdev bridge with its
        NIC (ex0, a veth into the switch) as a port. The controller adds the patch ports."""
        peer = f'{chassis.name}-ex'[:15]
        self.ports[chassis.name] = peer
        netns.veth('ex0', chassis.netns, peer, self.netns)
        netns.run('ip', 'link', 'set', peer, 'master', 'br0', netns=self.netns)
        chassis.ovs.add_bridge(self.bridge, fail_mode='standalone')
        chassis.ovs.vsctl('--may-exist', 'add-port', self.bridge, 'ex0')

    def port_of(self, chassis_name: str) -> str:
        """The switch's port to that chassis' provider bridge (for ``capture``)."""
        return self.ports[chassis_name]

    def host(self, name: str, ip: str, prefixlen: int = 24,
             gateway: Optional[str] = None) -> Host:
        """A physical machine on the switch, untagged (on the flat network)."""
        host = Host(name, ip)
        netns.add(name)
        self.hosts.append(host)
        _quiet(host)
        self._plug(host, f'h{len(self.hosts)}')
        host.exec('ip', 'addr', 'add', f'{ip}/{prefixlen}', 'dev', 'eth0')
        if gateway:
            host.exec('ip', 'route', 'add', 'default', 'via', gateway)
        return host

    @contextlib.contextmanager
    def route_back(self, cidr: str, via: str):
        """For the length of a with-block the upstream router routes ``cidr`` (a tenant
        subnet behind a router without SNAT) through ``via`` (that router's gateway address),
        as an operator would configure it; removed after, whatever happened."""
        self.upstream.exec('ip', 'route', 'add', cidr, 'via', via)
        try:
            yield
        finally:
            self.upstream.exec('ip', 'route', 'del', cidr, 'via', via, check=False)

    def capture(self, bpf: str = '', interface: str = 'br0') -> Capture:
        """tcpdump -e (VLAN tags and MACs shown) on a port of the switch (``port_of``) or
        the switch itself: ``with net.capture('vlan 100', net.port_of('ch1')) as c``."""
        return Capture(self.netns, interface, bpf)

    def close(self) -> None:
        for host in self.hosts:
            netns.delete(host.name)
        if self.with_upstream:
            netns.delete(self.internet.name)
            netns.delete(self.upstream.name)
        netns.delete(self.netns)
