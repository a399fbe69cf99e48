"""The SNAT deployments of bench/north_south.py, and their gateway failover.

A VM without a floating IP reaches the internet host (lab/physical.py) through
  - "DF gateway":     Dragonflow's router SNAT on the router's active gateway chassis: the VM on
                      ch1 (no gateway), ch2 and ch3 gateway chassis ([controller] gateway), so
                      the tunnel ch1 -> gateway is part of the path;
  - "DF distributed": Dragonflow with [l3] snat_mode = distributed: the VM's own chassis SNATs
                      to its own address on the external network, no tunnel (a cloud of its
                      own: the mode is df-api's);
  - "namespace":      the legacy L3 agent's router on a network node: a namespace on ch2 of the
                      "DF gateway" cloud, qr- a Dragonflow port (port security off) on the VM's
                      network, so ch1 -> ch2 is a Dragonflow tunnel as for "DF gateway", qg- on
                      ch2's br-ex, iptables MASQUERADE of the VM's subnet out of qg-;
  - "OVN gateway":    OVN's distributed router with its gateway port on an HA chassis group
                      (ch2 priority 20, ch3 priority 10; the VM on ch1) and an snat NAT rule
                      for the tenant subnet, BFD between the chassis as ovn-controller sets it,
                      with Dragonflow's BFD timers (NB_Global bfd-min-rx/min-tx, 3 missed),
                      so failover compares the two takeovers and not their timers.
Each deployment is a Stacked (up until close()) with ``paths``; the ones with two gateways
(Gateways) take failover samples: the gateway that forwards the VM's traffic is found from the
physical switch's counters, its ovs-vswitchd and controller are killed (SIGKILL, as a crash;
the netdev datapath dies with vswitchd), and the VM's pinger (one echo request every 10 ms,
from right after the kill) stops the clock at the first reply; then the gateway is started
again (ovs-vswitchd, then its controller, as lab.cloud.Chassis.revive) under a steady ping
from the VM, watched until its BFD sessions have been up COMEBACK_WATCH: the longest gap
between two replies there, and when it began, says whether the traffic went to it (OVN
preempts: the higher priority takes the gateway back; Dragonflow should not), and the next
sample waits until every BFD session of the deployment is up again, then STEADY more.
"""
import dataclasses
import json
import os
import signal
import time
from typing import Optional

from _ovn import OvnCloud, vm_port
from _probe import Guest, Pinger, log
from _stacked import DragonflowTenants, Stacked

from dragonflow.lab import netns, traffic
from dragonflow.lab.cloud import Cloud, wait_for
from dragonflow.lab.physical import EXTERNAL_CIDR, GATEWAY_IP, INTERNET_IP, Host
from dragonflow.lab.vm import MTU

PHYSNET = 'physnet1'
DF_POOL = ('172.24.4.10', '172.24.4.99')  # df-api's floating IPs, gateway and chassis SNAT ports
NS_GATEWAY_IP, NS_FLOATING_IP = '172.24.4.150', '172.24.4.151'  # the namespace router's: apart
DF_GATEWAY, DF_DISTRIBUTED, NS_SNAT, OVN_SNAT = ('DF gateway', 'DF distributed',
                                                 'namespace SNAT', 'OVN gateway')
GATEWAYS = ('ch2', 'ch3')       # the gateway chassis, in both failover deployments
BFD_INTERVAL = 300              # ms: Dragonflow's default [controller] bfd_interval
PROBE_INTERVAL = 0.01           # s: 100 echo requests a second
FAILOVER_TIMEOUT = 20.0         # s without a reply after a kill: the sample has none
READY_TIMEOUT = 60.0            # s for a revived gateway's BFD sessions to come up
# s after every BFD session is up before a kill: a deployment in its steady state. OVN's
# takeover from a gateway that came back (and took the traffic back) a few seconds before
# is slower (seen: 1.20-1.37 s 2 s after its BFD sessions were up, 0.82-0.88 s 10 s after;
# the sessions are at their 300 ms timers within 2 s, so it is not BFD).
STEADY = 10.0
COMEBACK_WATCH = 4.0            # s the steady ping goes on after a revived gateway's BFD is up


@dataclasses.dataclass
class Path:
    """What a throughput/RTT sample needs: ``client`` runs iperf3 -c and ping toward
    ``address``, the iperf3 server runs in ``server``'s namespace."""
    name: str
    client: netns.Machine
    server: netns.Machine
    address: str


def reach(host: netns.Machine, address: str, what: str) -> None:
    """Wait until ``host`` pings ``address`` (ARP and the datapath warmed), or fail."""
    wait_for(lambda: host.ping(address, count=1, timeout=0.5), 30, interval=0.2, what=what)
    host.ping(address, count=3)


def open_port_options(sdk, secure: bool) -> dict:
    """Port options for a VM: with ``secure`` a security group allowing ingress ICMP and
    TCP from anywhere (stateful; egress is open in every group), else no port security."""
    if not secure:
        return {'port_security_enabled': False, 'security_group_ids': []}
    group = sdk.create_security_group(name='open')
    for protocol in ('icmp', 'tcp'):
        sdk.create_security_group_rule(security_group_id=group.id, direction='ingress',
                                       ethertype='IPv4', protocol=protocol,
                                       remote_ip_prefix='0.0.0.0/0')
    return {'security_group_ids': [group.id]}


def external_network(sdk):
    """The flat external network on physnet1 with the upstream router as its gateway."""
    public = sdk.create_network(name='public', is_router_external=True,
                                provider_network_type='flat', provider_physical_network=PHYSNET)
    sdk.create_subnet(network_id=public.id, ip_version=4, cidr=EXTERNAL_CIDR,
                      gateway_ip=GATEWAY_IP, enable_dhcp=False,
                      allocation_pools=[{'start': DF_POOL[0], 'end': DF_POOL[1]}])
    return public


def namespace_router(cloud, subnet, chassis: str = 'ch1', vm_ip: Optional[str] = None) -> str:
    """A qrouter-like namespace on ``chassis``: qr-0 on br-int (a Dragonflow port on
    ``subnet``, port security off as Neutron's router ports: they forward other hosts'
    packets), qg-0 on br-ex with NS_GATEWAY_IP, a default route via the upstream router, and
    iptables rules as the legacy L3 agent writes them: with ``vm_ip``, NS_FLOATING_IP (a /32
    on qg-0) DNATed to it and its packets SNATed to it; without, the subnet MASQUERADEd out
    of qg-0 (the router's gateway SNAT). Named with the cloud's prefix: Cloud.close()
    removes it. Returns qr-0's address (the VMs' gateway)."""
    sdk, host = cloud.sdk.network, cloud.chassis[chassis]
    name = f'{cloud.prefix}-qrouter'
    netns.add(name)

    def run(*args):
        netns.run(*args, netns=name)

    for scope in ('all', 'default'):
        run('sysctl', '-q', '-w', f'net.ipv6.conf.{scope}.disable_ipv6=1')
    port = sdk.create_port(network_id=subnet.network_id, name='qr-0',
                           port_security_enabled=False)
    qr_ip, tap = port.fixed_ips[0]['ip_address'], 'qr' + port.id[:11]
    netns.veth('qr-0', name, tap, host.netns)
    run('ip', 'link', 'set', 'qr-0', 'address', port.mac_address)
    run('ip', 'link', 'set', 'qr-0', 'mtu', MTU)
    run('ip', 'addr', 'add', f'{qr_ip}/{subnet.cidr.split("/")[1]}', 'dev', 'qr-0')
    host.ovs.vsctl('add-port', 'br-int', tap, '--', 'set', 'Interface', tap,
                   f'external_ids:iface-id={port.id}',
                   f'external_ids:attached-mac={port.mac_address}')
    netns.veth('qg-0', name, 'qg-peer', host.netns)
    run('ip', 'addr', 'add', f'{NS_GATEWAY_IP}/{EXTERNAL_CIDR.split("/")[1]}', 'dev', 'qg-0')
    if vm_ip:
        run('ip', 'addr', 'add', f'{NS_FLOATING_IP}/32', 'dev', 'qg-0')
    host.ovs.vsctl('add-port', 'br-ex', 'qg-peer')
    for leg in ('qr-0', 'qg-0'):  # partial checksums are not completed on the AF_PACKET path
        run('ethtool', '-K', leg, 'tx', 'off')
    run('ip', 'route', 'replace', 'default', 'via', GATEWAY_IP)
    run('sysctl', '-q', '-w', 'net.ipv4.ip_forward=1')
    if vm_ip:
        run('iptables', '-t', 'nat', '-A', 'PREROUTING', '-d', f'{NS_FLOATING_IP}/32', '-j',
            'DNAT', '--to-destination', vm_ip)
        run('iptables', '-t', 'nat', '-A', 'POSTROUTING', '-s', f'{vm_ip}/32', '-j', 'SNAT',
            '--to-source', NS_FLOATING_IP)
    else:
        run('iptables', '-t', 'nat', '-A', 'POSTROUTING', '-s', subnet.cidr, '-o', 'qg-0',
            '-j', 'MASQUERADE')
    cloud.wait_port_active(port.id)
    return qr_ip


class Gateways(Stacked):
    """A deployment whose router has two gateway chassis (GATEWAYS), a VM on ch1 behind it
    and that VM's pinger: failover samples. Subclasses set ``physical``, ``vm`` (a Machine),
    ``chassis`` (name -> lab chassis: its ``ovs``, ``netns``) and kill/revive."""

    name = ''

    def __init__(self):
        self.paths: list[Path] = []
        self.failovers: list[Optional[float]] = []  # kill -> first reply, s; None: no reply
        self.killed: list[str] = []                 # which gateway, per sample
        # While the killed gateway comes back: the longest gap between two replies of a
        # steady ping (s), when it began (s after the revival started) and the echo
        # requests lost; a gateway that took its traffic back shows here.
        self.comebacks: list[tuple[float, float, int]] = []
        self.pinger: Optional[Pinger] = None
        self.bfd_seen: list[str] = []  # the BFD timers found, once
        super().__init__()

    def kill(self, gateway: str) -> None:
        """ovs-vswitchd and the controller of ``gateway`` die; returns once vswitchd is gone."""
        raise NotImplementedError

    def revive(self, gateway: str) -> None:
        """``gateway``'s ovs-vswitchd and controller started again."""
        raise NotImplementedError

    def start_pinger(self) -> None:
        self.pinger = Pinger(self.vm.name)
        self._stack.callback(self.pinger.close)

    def failover_sample(self) -> None:
        """Kill the forwarding gateway, time the first echo reply after it, revive it."""
        active = self.wait_ready()
        if self.pinger.go(INTERNET_IP, PROBE_INTERVAL, 5.0)[0] is None:
            raise RuntimeError(f'{self.name}: the VM does not reach the internet host')
        t0 = time.monotonic()
        self.kill(active)
        at, _ = self.pinger.go(INTERNET_IP, PROBE_INTERVAL, FAILOVER_TIMEOUT)
        self.failovers.append(at and at - t0)
        self.killed.append(active)
        log(f'  {self.name}: {active} killed, first reply after '
            + (f'{(at - t0) * 1000:.0f} ms' if at else f'none in {FAILOVER_TIMEOUT:g} s'))
        with traffic.Pinger(self.vm, INTERNET_IP, PROBE_INTERVAL) as steady:
            wait_for(lambda: steady.replies, 5, what=f'{self.name}: replies again')
            since = time.time()
            self.revive(active)
            wait_for(self._bfd_up, READY_TIMEOUT, interval=0.2, what=f'{self.name}: BFD up')
            time.sleep(COMEBACK_WATCH)
            steady.stop()
        self.comebacks.append(comeback(steady, since))

    def wait_ready(self) -> str:
        """Every BFD session of every chassis up, then the gateway forwarding now."""
        wait_for(self._bfd_up, READY_TIMEOUT, interval=0.2, what=f'{self.name}: BFD up')
        time.sleep(STEADY)
        return wait_for(self.forwarding_gateway, READY_TIMEOUT, interval=0.5,
                        what=f'{self.name}: a gateway forwarding')

    def _bfd_up(self) -> bool:
        sessions = [s for c in self.chassis.values() for s in bfd_sessions(c.ovs)]
        if sessions and not self.bfd_seen:
            self.bfd_seen = sorted({f'min_rx={s.min_rx} min_tx={s.min_tx}' for s in sessions})
            log(f'  {self.name}: {len(sessions)} BFD sessions, {", ".join(self.bfd_seen)}')
        return bool(sessions) and all(s.forwarding for s in sessions)

    def forwarding_gateway(self) -> Optional[str]:
        """The gateway whose port of the physical switch took the VM's echo requests."""
        count = 30
        before = {g: self._sent(g) for g in GATEWAYS}
        self.vm.exec('ping', '-n', '-q', '-c', count, '-i', PROBE_INTERVAL, '-W', '1',
                     INTERNET_IP, check=False)
        rose = [g for g in GATEWAYS if self._sent(g) - before[g] >= count]
        return rose[0] if len(rose) == 1 else None

    def _sent(self, gateway: str) -> int:
        """Frames the gateway sent into the physical switch (its switch port's rx)."""
        out = netns.run('ip', '-s', '-j', 'link', 'show', 'dev',
                        self.physical.port_of(gateway), netns=self.physical.netns)
        return json.loads(out)[0]['stats64']['rx']['packets']


def comeback(ping: traffic.Pinger, since: float) -> tuple[float, float, int]:
    """(longest gap between two replies ending after ``since``, its start - ``since``,
    echo requests lost) of a stopped steady ping."""
    times = [at for at, _ in ping.reply_times]
    gaps = [(b - a, a - since) for a, b in zip(times[:-1], times[1:], strict=True)
            if b >= since]
    gap, start = max(gaps, default=(0.0, 0.0))
    return gap, start, ping.lost()


@dataclasses.dataclass
class BfdSession:
    forwarding: bool
    min_rx: str  # ms, as configured ('' for OVS's default)
    min_tx: str


def bfd_sessions(ovs) -> list[BfdSession]:
    """Every interface of this OVS with BFD enabled."""
    out = json.loads(ovs.vsctl('--format=json', '--columns=bfd,bfd_status', 'list',
                               'Interface'))
    sessions = []
    for bfd, status in out['data']:
        bfd = dict(bfd[1])
        if bfd.get('enable') == 'true':
            sessions.append(BfdSession(dict(status[1]).get('forwarding') == 'true',
                                       bfd.get('min_rx', ''), bfd.get('min_tx', '')))
    return sessions


def readdress_underlay(chassis) -> None:
    """After ovs-vswitchd starts again, br-phy's tap is new: the underlay address back."""
    wait_for(lambda: 'br-phy' in netns.run('ip', '-o', 'link', netns=chassis.netns), 10,
             what=f'{chassis.name} br-phy back')
    netns.run('ip', 'addr', 'replace', f'{chassis.tunnel_ip}/24', 'dev', 'br-phy',
              netns=chassis.netns)
    netns.run('ip', 'link', 'set', 'br-phy', 'up', netns=chassis.netns)


class DragonflowGateways(DragonflowTenants, Gateways):
    """Dragonflow with ch1 (the VMs) and ch2, ch3 (gateway chassis): with ``gateway`` a
    router with SNAT and its VM on ch1 (DF gateway), with ``namespace`` the legacy router's
    namespace on ch2 and its VM on ch1 (namespace router)."""
    name = 'Dragonflow'

    def __init__(self, workdir: str, secure: bool, gateway: bool, namespace: bool):
        self.workdir, self.secure = workdir, secure
        self.with_gateway, self.with_namespace = gateway, namespace
        super().__init__()

    def _start(self) -> None:
        cloud = self._stack.enter_context(Cloud(
            self.workdir, physical_networks=(PHYSNET,),
            gateways=GATEWAYS if self.with_gateway else ()))
        cloud.start(chassis=3)
        self.cloud, self.sdk, self.chassis = cloud, cloud.sdk.network, cloud.chassis
        self.physical, internet = cloud.physical, cloud.physical.internet
        self.port_options = open_port_options(self.sdk, self.secure)
        if self.with_namespace:
            log('Dragonflow: the namespace router on ch2')
            subnet = self._tenant('legacy', '10.53.1.0/24')
            vm = self._vm(subnet, 'vm-ns', gateway=False)
            vm.exec('ip', 'route', 'replace', 'default', 'via', namespace_router(
                cloud, subnet, 'ch2'))
            self.paths.append(Path(NS_SNAT, vm, internet, INTERNET_IP))
        if self.with_gateway:
            log('Dragonflow: a router with SNAT on gateway chassis ch2, ch3')
            router = self.sdk.create_router(name='router', external_gateway_info={
                'network_id': external_network(self.sdk).id})
            subnet = self._tenant('tenant', '10.52.1.0/24')
            self.sdk.add_interface_to_router(router, subnet=subnet.id)
            self.vm = self._vm(subnet, 'vm-snat')
            self.paths.append(Path(DF_GATEWAY, self.vm, internet, INTERNET_IP))
            self.start_pinger()
        for path in self.paths:
            reach(path.client, INTERNET_IP, f'{path.name}: the VM reaches the internet host')

    def kill(self, gateway: str) -> None:
        self.chassis[gateway].kill()

    def revive(self, gateway: str) -> None:
        self.chassis[gateway].revive()


class DragonflowDistributed(Stacked):
    """Dragonflow with [l3] snat_mode = distributed: one chassis, a router with SNAT, its VM."""
    name = 'Dragonflow distributed'

    def __init__(self, workdir: str, secure: bool):
        self.workdir, self.secure = workdir, secure
        self.paths: list[Path] = []
        super().__init__()

    def _start(self) -> None:
        cloud = self._stack.enter_context(Cloud(
            self.workdir, physical_networks=(PHYSNET,),
            extra_config={'l3': {'snat_mode': 'distributed'}}))
        cloud.start(chassis=1)
        sdk = cloud.sdk.network
        router = sdk.create_router(name='router', external_gateway_info={
            'network_id': external_network(sdk).id})
        network = sdk.create_network(name='tenant')
        subnet = sdk.create_subnet(network_id=network.id, ip_version=4, cidr='10.54.1.0/24')
        sdk.add_interface_to_router(router, subnet=subnet.id)
        port = sdk.create_port(network_id=network.id, **open_port_options(sdk, self.secure))
        vm = cloud.vm('ch1', port, name='vm-dist')
        cloud.wait_port_active(port.id)
        reach(vm, INTERNET_IP, f'{DF_DISTRIBUTED}: the VM reaches the internet host')
        self.paths.append(Path(DF_DISTRIBUTED, vm, cloud.physical.internet, INTERNET_IP))


class OvnGateways(Gateways):
    """OVN: ch1 with the VM, ch2 and ch3 in an HA chassis group for the router's gateway
    port (priorities 20, 10), an snat rule for the tenant subnet to the gateway address."""
    name = 'OVN'
    gateway_ip, vm_ip, vm_mac = '172.24.4.2', '10.62.1.10', '00:00:00:62:01:0a'

    def __init__(self, workdir: str, secure: bool, bfd_interval: int = BFD_INTERVAL):
        self.workdir, self.secure, self.bfd_interval = workdir, secure, bfd_interval
        super().__init__()

    def _start(self) -> None:
        cloud = self._stack.enter_context(OvnCloud(self.workdir, physical_networks=(PHYSNET,)))
        cloud.start(chassis=3)
        self.cloud, self.chassis, self.physical = cloud, cloud.chassis, cloud.physical
        nbctl = cloud.nbctl
        if self.bfd_interval:  # else OVS's defaults (min_tx 100 ms, min_rx 1000 ms)
            nbctl('set', 'NB_Global', '.', f'options:bfd-min-rx={self.bfd_interval}',
                  f'options:bfd-min-tx={self.bfd_interval}', 'options:bfd-mult=3')
        nbctl('ls-add', 'public', '--', 'lsp-add', 'public', 'public-ln',
              '--', 'lsp-set-type', 'public-ln', 'localnet',
              '--', 'lsp-set-addresses', 'public-ln', 'unknown',
              '--', 'lsp-set-options', 'public-ln', f'network_name={PHYSNET}')
        nbctl('ls-add', 'tenant', '--', 'lr-add', 'router')
        for switch, mac, cidr in (('public', '00:00:00:62:ff:01', f'{self.gateway_ip}/24'),
                                  ('tenant', '00:00:00:62:ff:02', '10.62.1.1/24')):
            nbctl('lrp-add', 'router', f'router-{switch}', mac, cidr,
                  '--', 'lsp-add', switch, f'{switch}-router',
                  '--', 'lsp-set-type', f'{switch}-router', 'router',
                  '--', 'lsp-set-addresses', f'{switch}-router', 'router',
                  '--', 'lsp-set-options', f'{switch}-router', f'router-port=router-{switch}')
        # As the Neutron OVN driver schedules a router's gateway: an HA chassis group.
        nbctl('ha-chassis-group-add', 'gateway')
        for name, priority in zip(GATEWAYS, (20, 10), strict=True):
            nbctl('ha-chassis-group-add-chassis', 'gateway', name, str(priority))
        group = nbctl('--bare', '--columns=_uuid', 'find', 'HA_Chassis_Group',
                      'name=gateway').strip()
        nbctl('set', 'Logical_Router_Port', 'router-public', f'ha_chassis_group={group}')
        nbctl('lr-route-add', 'router', '0.0.0.0/0', GATEWAY_IP)
        nbctl('lr-nat-add', 'router', 'snat', self.gateway_ip, '10.62.1.0/24')
        vm_port(nbctl, self.vm_mac, self.vm_ip, self.secure)
        guest = Guest(f'{cloud.prefix}-vm', self.chassis['ch1'].netns,
                      self.chassis['ch1'].ovs.vsctl, self.vm_mac, self.vm_ip, 24,
                      '10.62.1.1').make()
        self._stack.callback(guest.destroy)
        guest.attach('vm')
        self.vm = Host(guest.name)
        nbctl('--wait=hv', 'sync')
        self.start_pinger()
        reach(self.vm, INTERNET_IP, f'{OVN_SNAT}: the VM reaches the internet host')
        self.paths.append(Path(OVN_SNAT, self.vm, cloud.physical.internet, INTERNET_IP))

    def kill(self, gateway: str) -> None:
        """As lab.cloud.Chassis.kill: the controller, then ovs-vswitchd."""
        chassis = self.chassis[gateway]
        pid = chassis.controller_pid
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        chassis.ovs.kill_switch()

    def revive(self, gateway: str) -> None:
        chassis = self.chassis[gateway]
        chassis.ovs.start_switch()
        readdress_underlay(chassis)
        chassis.start_controller()

