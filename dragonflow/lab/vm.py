"""A VM = a network namespace whose eth0 is a veth plugged into a chassis' br-int the way
Nova/os-vif plugs one: external_ids:iface-id = the Neutron port id, attached-mac = its MAC."""
import dataclasses
import ipaddress
import json
from typing import Optional

from dragonflow.lab import netns

MTU = 1400  # leaves room for tunnel headers on a 1500-byte underlay


@dataclasses.dataclass(eq=False)  # a VM is itself, not its attributes
class Vm(netns.Machine):
    name: str          # the VM's namespace
    chassis: object    # lab.cloud.Chassis
    port_id: str
    mac: str
    ip: Optional[str] = None
    prefixlen: int = 24
    gateway: Optional[str] = None

    @property
    def tap(self) -> str:
        """The interface on br-int, named like Nova names its taps."""
        return 'tap' + self.port_id[:11]

    def plug(self, attach: bool = True) -> None:
        """Make the VM; ``attach`` its interface to br-int now, or leave that for later."""
        netns.add(self.name)
        # No IPv6 yet (roadmap): keep its router solicitations and MLD off the wire.
        for scope in ('all', 'default'):
            self.exec('sysctl', '-q', '-w', f'net.ipv6.conf.{scope}.disable_ipv6=1')
        netns.veth('eth0', self.name, self.tap, self.chassis.netns)
        self.exec('ip', 'link', 'set', 'eth0', 'address', self.mac)
        self.exec('ip', 'link', 'set', 'eth0', 'mtu', MTU)
        # Partial checksums are not completed on the AF_PACKET path: TCP would stall.
        self.exec('ethtool', '-K', 'eth0', 'tx', 'off')

        if self.ip:
            self.configure(self.ip, self.prefixlen, self.gateway)
        if attach:
            self.attach()

    def attach(self) -> None:
        self.chassis.ovs.vsctl(
            '--may-exist', 'add-port', 'br-int', self.tap, '--', 'set', 'Interface', self.tap,
            f'external_ids:iface-id={self.port_id}', f'external_ids:attached-mac={self.mac}',
            'external_ids:iface-status=active')

    def detach(self) -> None:
        self.chassis.ovs.vsctl('--if-exists', 'del-port', 'br-int', self.tap)

    def configure(self, ip: str, prefixlen: int, gateway: Optional[str]) -> None:
        self.exec('ip', 'addr', 'flush', 'dev', 'eth0')
        self.exec('ip', 'addr', 'add', f'{ip}/{prefixlen}', 'dev', 'eth0')
        if gateway:
            self.exec('ip', 'route', 'replace', 'default', 'via', gateway)
        self.ip, self.prefixlen, self.gateway = ip, prefixlen, gateway

    def destroy(self) -> None:
        try:
            self.detach()
        finally:
            netns.delete(self.name)

    def addresses(self) -> list[str]:
        info = json.loads(self.exec('ip', '-j', 'addr', 'show', 'dev', 'eth0'))
        return [str(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}"))
                for entry in info for a in entry.get('addr_info', []) if a['family'] == 'inet']
