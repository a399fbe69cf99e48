"""North-south through a floating IP, one run, side by side: an internet host (behind the
upstream router of a physical network, lab/physical.py) to a VM through its floating IP
  - "flows":     Dragonflow's distributed floating IP (DNAT/SNAT in br-int's flows on the VM's
                 chassis; a flat external network on physnet1, a router with its gateway there),
  - "namespace": a Linux router namespace doing iptables DNAT/SNAT on the same chassis, the
                 legacy Neutron L3 agent's path: its qr- leg is a port (port security off, as
                 Neutron's router ports) on the VM's Dragonflow network on br-int, its qg- leg
                 is on br-ex (as with the agent's external_network_bridge = br-ex; with qg- on
                 br-int, patched to br-ex, the datapath hops are the same, patch ports being
                 resolved in the switch's translation), the floating IP a /32 on qg-, the VM's
                 default route via qr-: only the router differs from "flows",
  - "OVN":       OVN's distributed floating IP (lr-nat-add dnat_and_snat with logical_port
                 and external_mac; a localnet port on the external switch, ovn-bridge-mappings
                 physnet1:br-ex, a distributed gateway port), its chassis' br-ex on a physical
                 network of its own built as Dragonflow's (same upstream router, same internet
                 host), on the same machine.
Every floating IP system has one chassis (a namespace with its own ovs-vswitchd, netdev
datapath); every system is up for the whole run.

Throughput and RTT: TCP (iperf3, internet host -> VM, --seconds a run) and ping RTT (20 echo
requests 50 ms apart, their mean), in rounds: every path once a round, a different one first
each round, so a change in the machine's load falls on all of them alike. Each path's median
over the rounds, with its range; each throughput ratio of medians with a 95 % bootstrap
interval resampling whole rounds (paired). A target counts as met when the whole interval is
on its side, as not met when the whole interval is on the other. The TCP figures are
loss-limited: the kernel of the internet host sends faster than the chassis' single
ovs-vswitchd thread drains the AF_PACKET socket of br-ex's NIC port (208 KB; `ss -0 -a -m` in
the chassis namespace counts its drops), so each run has tens of thousands of
retransmissions, and a path's figure moves with the machine's load: compare ratios, with
their intervals, and prefer more --rounds.

Floating IP associated -> first echo reply (Dragonflow against OVN): the association call is
df-api's PUT /v2.0/floatingips/<id> {port_id} (openstacksdk; it returns once the store has the
change, the flows follow) and OVN's `ovn-nbctl --wait=hv lr-nat-add ...` (it returns once the
chassis has its flows). A pinger in the internet host (a raw socket, one echo request every
--interval, silent until told to go) stops the clock at the first echo reply. Rows:
  - (--ovn-call no-wait: OVN's call returns once NB has the change, as Neutron's OVN driver
    returns, so both calls return before the chassis acts and "from the call's return"
    compares like with like)
  - from the call's return / from the call's start: pinging starts once the call RETURNS
    (the issue's definition); from the start counts each control plane in full and is the
    fair comparison, OVN's call waiting for its chassis and Dragonflow's not;
  - pinged once ACTIVE (Dragonflow only, timed from the call's start): pinging starts once a
    GET loop sees the floating IP's status ACTIVE (its chassis confirmed the flows), the way
    OVN's --wait=hv waits; OVN's cell is its "from the call's start" samples;
  - pinging since before (both, from the call's start): pinging starts PING_LEAD before the
    call, so echo requests reach the switch before the flows do. The datapath caches such a
    drop until it revalidates (shared/notes/harness.md, "a trap"); this row shows what it
    costs each system;
  - the call itself; call start -> status ACTIVE (the GET loop of the ACTIVE samples);
  - call start -> first / last flow naming the floating IP in the chassis' br-int, from
    separate samples without pings (`ovs-ofctl monitor`, watching only then: it costs the
    machine time the pings would wait for); last = no other such flow within FLOW_QUIET.
Between samples the floating IP is disassociated (Dragonflow: until its flows are gone from
br-int; OVN: lr-nat-del --wait=hv), the chassis' datapath flows are purged
(revalidator/purge: no sample inherits a cached flow from the one before) and the upstream
router's neighbour entry for it is set back: --upstream-arp known (the default) leaves the
upstream knowing the floating IP's MAC (STALE, as a router that talked to it before: it
sends at once), flushed makes it resolve the address anew by ARP (Linux retries an
unanswered ARP request after 1 s). In each round every kind of sample is taken once per
system, the systems alternated, the order reversed every other round; p50 and p99 (nearest
rank) and each ratio of p50s with its bootstrap interval, rounds resampled paired. The lines
under the table count the samples without a reply and those slower than SLOW.

Security (--security): "open" (the default) gives each VM port port security and a security
group allowing ingress ICMP and TCP from anywhere (stateful), as one opens a VM behind a
floating IP: Dragonflow's from df-api, OVN's as the Neutron OVN driver writes it
(port_security, a port group with allow-related ACLs above drop ACLs); "off": none anywhere.

SNAT (the snat-* paths; the deployments are bench/_snat.py's, its docstring says how each
is built): a VM without a floating IP to the internet host, side by side in the same rounds
as the floating IP paths (iperf3 VM -> internet host, ping RTT from the VM):
  - "DF gateway":     Dragonflow's SNAT on the router's active gateway chassis, the VM on a
                      chassis of its own (through the tunnel);
  - "DF distributed": [l3] snat_mode = distributed, on the VM's chassis (no tunnel);
  - "namespace SNAT": the legacy L3 agent's router on a network node (iptables MASQUERADE;
                      the VM's chassis reaches it through a Dragonflow tunnel, as for
                      "DF gateway"); target: DF gateway and DF distributed >= 1.15 x it;
  - "OVN gateway":    OVN's router with its gateway port on an HA chassis group and an snat
                      rule, the VM on a chassis of its own.
The TCP figures are loss-limited here too (the VM's kernel outruns the vswitchd thread that
reads its tap), and a path through two chassis has two vswitchd threads on the machine's
two cores where "DF distributed" has one doing all the work: its lower RTT shows the tunnel
it saves, its throughput is the lab's single-threaded datapath more than the design.
Failover (DF gateway against OVN gateway, both with two gateway chassis and BFD every
--ovn-bfd-interval = Dragonflow's bfd_interval, 300 ms): --failovers times each, the systems
alternated, each deployment steady (every BFD session up for 10 s), the forwarding gateway
(the one whose switch port takes the VM's pings) has its controller and ovs-vswitchd
SIGKILLed; from the kill, a ping every 10 ms from the VM stops
the clock at its first reply: p50 / max, the ratio of p50s (target <= 1) with its interval,
and the p50 with its interval against 3 s. Then the killed gateway starts again, under a
steady ping: the longest gap between replies while it comes back (until its BFD sessions
have been up a few seconds) shows whether it took the traffic back.

Run as root: .venv/bin/python bench/north_south.py [--rounds 5] [--seconds 4] [--samples 20]
             [--interval 0.005] [--upstream-arp known|flushed] [--security open|off]
             [--failovers 5] [--ovn-bfd-interval 300]
             [--paths flows,namespace,ovn,snat-gateway,snat-distributed,snat-namespace,snat-ovn]
             [--quick] [--keep-logs] [--json FILE]
Everything it starts (namespaces, daemons, its temporary directories unless --keep-logs) is
removed at the end, after a failure or Ctrl-C too.
"""
import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Optional

from _ovn import OvnCloud, vm_port
from _probe import FlowMonitor, Guest, Pinger, log, percentile, ratio_interval
from _snat import (
    BFD_INTERVAL,
    COMEBACK_WATCH,
    DF_DISTRIBUTED,
    DF_GATEWAY,
    FAILOVER_TIMEOUT,
    NS_FLOATING_IP,
    NS_SNAT,
    OVN_SNAT,
    PHYSNET,
    PROBE_INTERVAL,
    STEADY,
    DragonflowDistributed,
    DragonflowGateways,
    Gateways,
    OvnGateways,
    Path,
    external_network,
    namespace_router,
    open_port_options,
    reach,
)
from _stacked import DragonflowTenants, Stacked
from dataplane_local import ping_rtt

from dragonflow.lab import netns
from dragonflow.lab.cloud import Cloud, wait_for
from dragonflow.lab.physical import GATEWAY_IP, Host

ROUNDS, SECONDS, SAMPLES, FAILOVERS = 5, 4, 20, 5
QUICK = {'rounds': 1, 'seconds': 1, 'samples': 3, 'failovers': 1}
FLOWS, NAMESPACE, OVN = 'Dragonflow flows', 'namespace router', 'OVN'
PATHS = {'flows': FLOWS, 'namespace': NAMESPACE, 'ovn': OVN, 'snat-gateway': DF_GATEWAY,
         'snat-distributed': DF_DISTRIBUTED, 'snat-namespace': NS_SNAT, 'snat-ovn': OVN_SNAT}
FIP_PATHS = (FLOWS, NAMESPACE, OVN)
SNAT_PATHS = (DF_GATEWAY, DF_DISTRIBUTED, NS_SNAT, OVN_SNAT)
SHORT = {FLOWS: 'flows', NAMESPACE: 'namespace', OVN: 'OVN', DF_GATEWAY: 'gateway',
         DF_DISTRIBUTED: 'distributed', NS_SNAT: 'namespace', OVN_SNAT: 'OVN'}
FAILOVER_TARGET = 3.0  # s, kill -> first reply, p50
REPLY_TIMEOUT = 5.0
FLOW_QUIET = 0.5   # no more flow for the floating IP this long: the last one is in
SETTLE = 0.5       # after a disassociation, before the next sample
MIN_SAMPLES = 3    # for a verdict on a target
PING_LEAD = 0.02   # pinging this long before the call: the datapath has seen the address
SLOW = 0.5         # a first reply this late: a drop the datapath had cached held it up

# Association measurements, by row of the table.
FROM_RETURN = 'first reply, from the call\'s return'
FROM_START = 'first reply, from the call\'s start'
CALL = 'the call itself'
AFTER_ACTIVE = 'first reply, from the start, pinged once ACTIVE'
ACTIVE_SEEN = 'call start -> status ACTIVE (a GET loop)'
PINGING_FIRST = 'first reply, from the start, pinging since before'
FIRST_FLOW = 'call start -> first FIP flow in br-int'
LAST_FLOW = 'call start -> last FIP flow in br-int'
PINGED = (FROM_RETURN, FROM_START, CALL)
WAITED = (AFTER_ACTIVE, ACTIVE_SEEN)  # Dragonflow's: OVN's call waits for its chassis
MONITORED = (FIRST_FLOW, LAST_FLOW)
TARGETED = (FROM_RETURN, FROM_START, AFTER_ACTIVE)  # ours <= OVN's


class _System(Stacked):
    """A deployment built by _start() (Stacked: up until close()). Association samples go
    to ``samples``, one list per measurement, a None where no reply came (kept in place, to
    pair rounds)."""

    name = ''
    address = None  # the floating IP the association samples move
    interval = 0.005
    upstream_arp = 'known'

    def __init__(self, workdir: str, secure: bool):
        self.workdir, self.secure = workdir, secure
        self.paths: list[Path] = []
        self.samples: dict[str, list] = {kind: [] for kind in (*PINGED, *WAITED, PINGING_FIRST,
                                                          *MONITORED)}
        self.sent: list[int] = []
        self.pinger: Optional[Pinger] = None
        self.mac = None  # the floating IP's, as the upstream router knows it
        self.upstream: Optional[Host] = None
        super().__init__()

    def _associate(self) -> None:
        raise NotImplementedError

    def _disassociate(self) -> None:
        raise NotImplementedError

    def _bridge(self):
        """The Ovs of the chassis holding the VM."""
        raise NotImplementedError

    def _wait_active(self) -> Optional[float]:
        """When the API first said the association is in the data plane, or None."""
        raise NotImplementedError

    def start_pinger(self, internet: Host) -> None:
        self.pinger = Pinger(internet.name)
        self._stack.callback(self.pinger.close)

    def learn_mac(self) -> None:
        """The floating IP's MAC as the upstream router learnt it (while it was reached)."""
        out = self.upstream.exec('ip', 'neigh', 'show', self.address, 'dev', 'eth0')
        self.mac = out.split('lladdr')[1].split()[0]

    def sample(self, monitor: Optional[FlowMonitor] = None, wait_active: bool = False,
               ping_first: bool = False) -> None:
        """One association, timed to the first echo reply (pinging from the call's return,
        with ``wait_active`` from when the API says ACTIVE, with ``ping_first`` since before
        the call) or, with ``monitor``, to the floating IP's flows in br-int; disassociated
        again afterwards."""
        self._reset_upstream()
        if ping_first:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                reply = pool.submit(self.pinger.go, self.address, self.interval,
                                    REPLY_TIMEOUT + 2)
                time.sleep(PING_LEAD)
                t0 = time.monotonic()
                self._associate()
                at, _ = reply.result()
            self.samples[PINGING_FIRST].append(at and at - t0)
            self.reset()
            return
        t0 = time.monotonic()
        self._associate()
        t1 = time.monotonic()
        if wait_active:
            active = self._wait_active()
            at, _ = self.pinger.go(self.address, self.interval, REPLY_TIMEOUT)
            self.samples[ACTIVE_SEEN].append(active and active - t0)
            self.samples[AFTER_ACTIVE].append(at and active and at - t0)
        elif monitor:
            pattern = re.compile(re.escape(self.address) + r'(?![\d])')
            first = monitor.first(pattern, t0, REPLY_TIMEOUT)
            last = first
            while last is not None:  # the last event before a quiet spell
                later = monitor.first(pattern, last + 1e-6, FLOW_QUIET)
                if later is None:
                    break
                last = later
            self.samples[FIRST_FLOW].append(first and first - t0)
            self.samples[LAST_FLOW].append(last and last - t0)
            monitor.forget()
        else:
            at, sent = self.pinger.go(self.address, self.interval, REPLY_TIMEOUT)
            self.samples[CALL].append(t1 - t0)
            self.samples[FROM_START].append(at and at - t0)
            self.samples[FROM_RETURN].append(at and at - t1)
            if at:
                self.sent.append(sent)
        self.reset()

    def reset(self) -> None:
        """Disassociated, and no datapath flow cached from before: a cached flow that still
        forwarded to the VM (seen: the first echo request of the next sample answered before
        its association call) would not wait for the association."""
        self._disassociate()
        self._bridge().appctl('revalidator/purge')
        time.sleep(SETTLE)

    def monitor(self) -> FlowMonitor:
        bridge = self._bridge()
        return FlowMonitor(f'{bridge.rundir}/br-int.mgmt', bridge.rundir, self.name)

    def _reset_upstream(self) -> None:
        if self.upstream_arp == 'known':
            self.upstream.exec('ip', 'neigh', 'replace', self.address, 'lladdr', self.mac,
                               'dev', 'eth0', 'nud', 'stale')
        else:
            self.upstream.exec('ip', 'neigh', 'flush', 'to', self.address, 'dev', 'eth0')


class Dragonflow(DragonflowTenants, _System):
    """One Dragonflow chassis on physnet1 with the "flows" path and/or the "namespace" path
    (the legacy router beside it on the same chassis)."""
    name = 'Dragonflow'

    def __init__(self, workdir: str, secure: bool, flows: bool, namespace: bool):
        self.with_flows, self.with_namespace = flows, namespace
        super().__init__(workdir, secure)

    def _start(self) -> None:
        cloud = self._stack.enter_context(Cloud(self.workdir, physical_networks=(PHYSNET,)))
        cloud.start(chassis=1)
        self.cloud, self.sdk = cloud, cloud.sdk.network
        self.chassis = cloud.chassis['ch1']
        self.upstream, internet = cloud.physical.upstream, cloud.physical.internet
        self.port_options = open_port_options(self.sdk, self.secure)
        if self.with_namespace:
            log('Dragonflow: the namespace router')
            self.paths.append(Path(NAMESPACE, internet, self._namespace_vm(), NS_FLOATING_IP))
        if self.with_flows:
            log('Dragonflow: external network, router gateway, floating IP')
            self.paths.append(Path(FLOWS, internet, self._floating_ip_vm(), self.address))
            self.start_pinger(internet)
        for path in self.paths:
            reach(internet, path.address, f'{path.name}: the internet host reaches '
                  f'{path.address}')
        if self.with_flows:
            self.learn_mac()

    def _floating_ip_vm(self):
        sdk = self.sdk
        public = external_network(sdk)
        subnet = self._tenant('tenant', '10.50.1.0/24')
        router = sdk.create_router(name='router',
                                   external_gateway_info={'network_id': public.id})
        sdk.add_interface_to_router(router, subnet=subnet.id)
        vm = self._vm(subnet, 'vm-flows')
        self.fip = sdk.create_ip(floating_network_id=public.id)
        self.address, self.port_id = self.fip.floating_ip_address, vm.port_id
        time.sleep(SETTLE)
        self.baseline = self._fip_flows()  # flows naming the address while unassociated
        sdk.update_ip(self.fip, port_id=self.port_id)
        self.cloud.wait_floating_ip_active(self.fip.id)
        return vm

    def _namespace_vm(self):
        """The legacy router and its VM: a network of their own on the same chassis."""
        subnet = self._tenant('legacy', '10.51.1.0/24')
        vm = self._vm(subnet, 'vm-ns', gateway=False)
        gateway = namespace_router(self.cloud, subnet, vm_ip=vm.ip)
        vm.exec('ip', 'route', 'replace', 'default', 'via', gateway)
        return vm

    def _fip_flows(self) -> int:
        pattern = re.compile(re.escape(self.address) + r'(?![\d])')
        return len(pattern.findall(self.chassis.dump_flows()))

    def _associate(self) -> None:
        self.sdk.update_ip(self.fip, port_id=self.port_id)

    def _disassociate(self) -> None:
        self.sdk.update_ip(self.fip, port_id=None)
        wait_for(lambda: self._fip_flows() <= self.baseline, 10,
                 what='the floating IP\'s flows gone from br-int')

    def _bridge(self):
        return self.chassis.ovs

    def _wait_active(self) -> Optional[float]:
        deadline = time.monotonic() + REPLY_TIMEOUT
        while time.monotonic() < deadline:
            if self.sdk.get_ip(self.fip.id).status == 'ACTIVE':
                return time.monotonic()
        return None


class Ovn(_System):
    """One OVN chassis on a physical network of its own: a distributed router with a gateway
    port on the external switch (localnet to physnet1), a tenant switch, a VM, its floating IP
    (dnat_and_snat with logical_port and external_mac: NATed on the VM's chassis, which
    answers ARP for it with external_mac)."""
    name = 'OVN'
    address, vm_ip, vm_mac = '172.24.4.100', '10.61.1.10', '00:00:00:61:01:0a'
    external_mac = '00:00:00:61:ff:64'

    def _start(self) -> None:
        cloud = self._stack.enter_context(OvnCloud(self.workdir, physical_networks=(PHYSNET,)))
        cloud.start(chassis=1)
        self.cloud, self.chassis = cloud, cloud.chassis['ch1']
        self.upstream, internet = cloud.physical.upstream, cloud.physical.internet
        nbctl = cloud.nbctl
        nbctl('ls-add', 'public', '--', 'lsp-add', 'public', 'public-ln',
              '--', 'lsp-set-type', 'public-ln', 'localnet',
              '--', 'lsp-set-addresses', 'public-ln', 'unknown',
              '--', 'lsp-set-options', 'public-ln', f'network_name={PHYSNET}')
        nbctl('ls-add', 'tenant', '--', 'lr-add', 'router')
        for switch, mac, cidr in (('public', '00:00:00:61:ff:01', '172.24.4.2/24'),
                                  ('tenant', '00:00:00:61:ff:02', '10.61.1.1/24')):
            nbctl('lrp-add', 'router', f'router-{switch}', mac, cidr,
                  '--', 'lsp-add', switch, f'{switch}-router',
                  '--', 'lsp-set-type', f'{switch}-router', 'router',
                  '--', 'lsp-set-addresses', f'{switch}-router', 'router',
                  '--', 'lsp-set-options', f'{switch}-router', f'router-port=router-{switch}')
        nbctl('lrp-set-gateway-chassis', 'router-public', 'ch1', '1')
        nbctl('lr-route-add', 'router', '0.0.0.0/0', GATEWAY_IP)
        vm_port(nbctl, self.vm_mac, self.vm_ip, self.secure)
        vm = Guest(f'{cloud.prefix}-vm', self.chassis.netns, self.chassis.ovs.vsctl,
                   self.vm_mac, self.vm_ip, 24, '10.61.1.1').make()
        vm.attach('vm')
        nbctl('--wait=hv', 'sync')
        self._associate()
        self.paths.append(Path(OVN, internet, vm, self.address))
        self.start_pinger(internet)
        reach(internet, self.address, f'OVN: the internet host reaches {self.address}')
        self.learn_mac()
        if self.mac != self.external_mac:
            raise RuntimeError(f'OVN: the upstream router has {self.mac} for the floating IP, '
                               f'not its external_mac {self.external_mac}: not distributed')

    wait = True  # --ovn-call: the association waits for the chassis (--wait=hv), or not

    def _associate(self) -> None:
        wait = ('--wait=hv',) if self.wait else ()
        self.cloud.nbctl(*wait, 'lr-nat-add', 'router', 'dnat_and_snat', self.address,
                         self.vm_ip, 'vm', self.external_mac)

    def _disassociate(self) -> None:
        self.cloud.nbctl('--wait=hv', 'lr-nat-del', 'router', 'dnat_and_snat', self.address)

    def _bridge(self):
        return self.chassis.ovs


def measure(paths: list[Path], rounds: int, seconds: int) -> dict:
    """{path name: {'gbps': [one per round], 'rtt_ms': [...]}}, every path once a round, the
    first path of a round moving one place each round. Each path's client sends (iperf3 -c)
    to its server (one iperf3 -s per namespace: paths sharing one take their turns)."""
    results = {path.name: {'gbps': [], 'rtt_ms': []} for path in paths}
    servers = []
    try:
        for name in dict.fromkeys(path.server.name for path in paths):
            servers.append(subprocess.Popen(['ip', 'netns', 'exec', name, 'iperf3', '-s'],
                                            stdout=subprocess.DEVNULL))
            wait_for(lambda name=name: ':5201' in netns.run('ss', '-ltn', netns=name),
                     5, what='iperf3 server')
        for r in range(rounds):
            log(f'throughput and RTT, round {r + 1}/{rounds}')
            for path in paths[r % len(paths):] + paths[:r % len(paths)]:
                out = json.loads(path.client.exec('iperf3', '-c', path.address, '-t',
                                                  seconds, '-J', timeout=seconds + 30))
                gbps = out['end']['sum_received']['bits_per_second'] / 1e9
                results[path.name]['gbps'].append(gbps)
                log(f'  {path.name}: {gbps:.3f} Gbit/s, '
                    f'{out["end"]["sum_sent"].get("retransmits", "?")} TCP retransmissions')
                results[path.name]['rtt_ms'].append(ping_rtt(path.client, path.address))
    finally:
        for server in servers:
            server.kill()
            server.wait()
    return results


def failovers(systems: list[Gateways], kills: int) -> None:
    """``kills`` failover samples per system, the systems alternated, who goes first
    swapped each round."""
    for i in range(kills if systems else 0):
        log(f'failover, kill {i + 1}/{kills}')
        for system in systems if i % 2 == 0 else systems[::-1]:
            system.failover_sample()


def associations(systems: list[_System], samples: int) -> None:
    """``samples`` pinged association samples per system, then as many monitored ones, the
    systems alternated, who goes first swapped each round."""
    if not systems:
        return
    for system in systems:
        system.reset()
    for i in range(samples):
        if i % 5 == 0:
            log(f'association -> first reply, sample {i + 1}/{samples}')
        # Dragonflow once more, pinging only once its API says ACTIVE: as OVN's call waits.
        # And each pinging since before the call: the datapath's cached drops, for both.
        runs = [(system, {}) for system in systems] + [
            (system, {'wait_active': True}) for system in systems
            if isinstance(system, Dragonflow)] + [
            (system, {'ping_first': True}) for system in systems]
        for system, how in runs if i % 2 == 0 else runs[::-1]:
            system.sample(**how)
    monitors = {system.name: system.monitor() for system in systems}
    try:
        for i in range(samples):
            if i % 5 == 0:
                log(f'association -> flows in br-int (monitored), sample {i + 1}/{samples}')
            for system in systems if i % 2 == 0 else systems[::-1]:
                system.sample(monitors[system.name])
    finally:
        for monitor in monitors.values():
            monitor.close()


def verdict(interval, target: float, above: bool, samples: int) -> str:
    """Met when the whole interval is on the target's side, not met when wholly on the
    other; with fewer than MIN_SAMPLES samples (a quick run) the interval says nothing."""
    _, low, high = interval
    if samples < MIN_SAMPLES:
        return 'too few samples'
    if above:
        return 'met' if low >= target else 'NOT met' if high < target else 'undecided'
    return 'met' if high <= target else 'NOT met' if low > target else 'undecided'


def ratio(a: list, b: list, target=None, above=True, **kwargs) -> str:
    """A table cell: ratio_interval(a, b, **kwargs) as "r [low, high]", with the target and
    its verdict when given."""
    r = ratio_interval(a, b, **kwargs)
    if not r:
        return '-'
    cell = f'{r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}]'
    if target is not None:
        cell += f' {">=" if above else "<="}{target:g} {verdict(r, target, above, len(a))}'
    return cell


def throughput_rows(results: dict, names: list, columns: list, targets: dict,
                    width: int) -> None:
    """Throughput and RTT per path (median, range), and the ratios of ``columns``."""
    for key, label in (('gbps', 'TCP throughput, Gbit/s, median (range)'),
                       ('rtt_ms', 'ping RTT, ms, median (range)')):
        line = f'{label:<50}' + ''.join(
            f'{statistics.median(results[n][key]):>9.3f} ({min(results[n][key]):.3f}-'
            f'{max(results[n][key]):.3f})' for n in names)
        for a, b in columns:
            cell = ratio(results[a][key], results[b][key], statistic=statistics.median,
                         target=targets.get((a, b)) if key == 'gbps' else None)
            line += f'  {cell:>{width}}'
        print(line)


def report(results: dict, systems: dict, args) -> None:
    """One table: throughput and RTT per path (median, range), the association rows
    (p50 / p99), and the ratios with their intervals and the targets."""
    names = [name for name in FIP_PATHS if name in results]
    if not names:
        return
    columns = [(a, b) for a, b in ((FLOWS, NAMESPACE), (FLOWS, OVN))
               if a in results and b in results]
    df, ovn = systems.get('Dragonflow'), systems.get('OVN')
    fips = {FLOWS: df if df and df.address else None, OVN: ovn}
    print(f'\nNorth-south through a floating IP, internet host -> VM, one chassis per system; '
          f'{args.rounds} rounds of iperf3 ({args.seconds} s) + 20 pings per path, paths '
          f'alternated; {args.samples} association samples per system, systems alternated; '
          f'security: {args.security}; upstream ARP: {args.upstream_arp}')
    print(f'{"":<50}' + ''.join(f'{name:>22}' for name in names)
          + ''.join(f'  {f"{SHORT[a]} / {SHORT[b]}":>38}' for a, b in columns))
    throughput_rows(results, names, columns, {(FLOWS, NAMESPACE): 1.15, (FLOWS, OVN): 1.0}, 38)
    if not any(fips.values()) or not args.samples:
        return
    print(f'floating IP associated, ms, p50 / p99 (pings every {args.interval * 1000:g} ms, '
          'started after the call returned)')

    def ms(system, kind) -> str:
        values = [v for v in system.samples[kind] if v is not None] if system else []
        if not values:
            return '-'
        return f'{percentile(values, 50) * 1000:.1f} / {percentile(values, 99) * 1000:.1f}'

    # OVN's call returns once its chassis has the flows: its "pinged once ACTIVE" samples
    # are those pinged from the call's return, timed from its start.
    theirs = {AFTER_ACTIVE: FROM_START}
    for kind in (FROM_RETURN, FROM_START, AFTER_ACTIVE, PINGING_FIRST, CALL, ACTIVE_SEEN,
                 *MONITORED):
        cells = {FLOWS: ms(fips[FLOWS], kind), NAMESPACE: '-', OVN: '-' if kind == ACTIVE_SEEN
                 else ms(fips[OVN], theirs.get(kind, kind))}
        line = f'  {kind:<48}' + ''.join(f'{cells[n]:>22}' for n in names)
        for column in columns:
            cell = ''
            if column == (FLOWS, OVN) and fips[FLOWS] and fips[OVN] and kind != ACTIVE_SEEN:
                cell = ratio(fips[FLOWS].samples[kind],
                             fips[OVN].samples[theirs.get(kind, kind)],
                             target=1.0 if kind in TARGETED else None,
                             above=False)
            line += f'  {cell:>38}'
        print(line)
    print('(throughput, RTT: median over the rounds (min-max); ratio of medians [95 % '
          'bootstrap interval, rounds resampled paired]. Association: nearest-rank p50 / p99; '
          'ratio of p50s [95 % bootstrap interval, samples paired by round]. A target is met '
          'when the whole interval is on its side.)')
    for system in fips.values():
        if system:
            replies = system.samples[FROM_RETURN]
            lost = sum(v is None for v in replies)
            slow = sum(v is not None and v > SLOW for v in replies)
            sent = percentile(system.sent, 50) if system.sent else '-'
            print(f'{system.name}: {lost} of {args.samples} associations without a reply in '
                  f'{REPLY_TIMEOUT:g} s, {slow} with their first reply over {SLOW * 1000:g} ms '
                  f'after the call returned; echo requests sent until the first reply, median '
                  f'{sent}')


def report_snat(results: dict, systems: dict, args) -> None:
    """The SNAT table: throughput and RTT per path, the ratios (target: 1.15 x the namespace
    router), and the failover rows (kill -> first reply, p50 / max; Dragonflow / OVN)."""
    names = [name for name in SNAT_PATHS if name in results]
    if not names:
        return
    columns = [(a, b) for a, b in ((DF_GATEWAY, NS_SNAT), (DF_DISTRIBUTED, NS_SNAT),
                                   (DF_GATEWAY, OVN_SNAT), (DF_DISTRIBUTED, OVN_SNAT))
               if a in results and b in results]
    print(f'\nNorth-south through SNAT, VM -> internet host, no floating IP: {DF_GATEWAY} and '
          f'{OVN_SNAT} with the VM on ch1 and the router\'s gateway on ch2/ch3 (through the '
          f'tunnel), {NS_SNAT} on ch2 (the VM on ch1, through the tunnel), {DF_DISTRIBUTED} on '
          f'the VM\'s chassis; {args.rounds} rounds of iperf3 ({args.seconds} s) + 20 pings '
          f'per path, paths alternated; security: {args.security}')
    print(f'{"":<50}' + ''.join(f'{name:>22}' for name in names)
          + ''.join(f'  {f"{SHORT[a]} / {SHORT[b]}":>30}' for a, b in columns))
    throughput_rows(results, names, columns, {(DF_GATEWAY, NS_SNAT): 1.15,
                                              (DF_DISTRIBUTED, NS_SNAT): 1.15}, 30)
    df, ovn = systems.get('Dragonflow SNAT'), systems.get('OVN SNAT')
    sampled = {DF_GATEWAY: df, OVN_SNAT: ovn}
    sampled = {name: s for name, s in sampled.items() if s and s.failovers}
    if sampled:
        label = 'gateway killed -> first reply, ms, p50 / max'
        cells = {name: failover_cell(s.failovers) for name, s in sampled.items()}
        line = f'{label:<50}' + ''.join(f'{cells.get(n, "-"):>22}' for n in names)
        for a, b in columns:
            cell = ''
            if (a, b) == (DF_GATEWAY, OVN_SNAT) and len(sampled) == 2:
                cell = ratio(df.failovers, ovn.failovers, target=1.0, above=False)
            line += f'  {cell:>30}'
        print(line)
        label = 'gateway back: longest reply gap, ms, p50 / max'
        cells = {name: failover_cell([gap for gap, _, _ in s.comebacks])
                 for name, s in sampled.items()}
        print(f'{label:<50}' + ''.join(f'{cells.get(n, "-"):>22}' for n in names))
        label = '  echo requests lost, p50 / max'
        cells = {name: '{} / {}'.format(percentile(lost, 50), max(lost)) for name, lost in
                 ((name, [n for _, _, n in s.comebacks]) for name, s in sampled.items())}
        print(f'{label:<50}' + ''.join(f'{cells.get(n, "-"):>22}' for n in names))
    print(f'(throughput, RTT: median over the rounds (min-max); ratio of medians [95 % bootstrap '
          f'interval, rounds resampled paired]. Failover: {STEADY:g} s after every BFD '
          f'session is up, the forwarding gateway\'s '
          f'ovs-vswitchd and controller SIGKILLed, a ping every {PROBE_INTERVAL * 1000:g} ms '
          f'from the VM from then on; BFD every {BFD_INTERVAL} ms in both (OVN: '
          f'{args.ovn_bfd_interval or "OVS default"}), 3 missed; nearest-rank p50, ratio of '
          f'p50s [95 % bootstrap interval, kills paired by round]. Gateway back: a steady '
          f'ping from the VM while the killed gateway starts again and until every BFD '
          f'session has been up {COMEBACK_WATCH:g} s; a gap there: the traffic moved to it. '
          f'A target is met when the whole interval is on its side.)')
    for name, system in sampled.items():
        values = system.failovers
        p50 = ratio_interval(values, [1.0] * len(values))  # p50 / 1 s: the p50's interval
        cell = '-' if not p50 else (
            f'{p50[0] * 1000:.0f} ms [{p50[1] * 1000:.0f}, {p50[2] * 1000:.0f}] '
            f'<= {FAILOVER_TARGET:g} s {verdict(p50, FAILOVER_TARGET, False, len(values))}')
        kills = ', '.join(f'{g} {v * 1000:.0f}' if v is not None else f'{g} none'
                          for g, v in zip(system.killed, values, strict=True))
        backs = ', '.join(f'{gap * 1000:.0f} at +{start:.1f} s' for gap, start, _ in
                          system.comebacks)
        print(f'{name} failover p50 {cell}; each kill, ms: {kills}; its longest gap coming '
              f'back, ms, at s after its revival began: {backs}')


def failover_cell(values: list) -> str:
    replied = [v for v in values if v is not None]
    if not replied:
        return f'none in {FAILOVER_TIMEOUT:g} s'
    cell = f'{percentile(replied, 50) * 1000:.0f} / {max(replied) * 1000:.0f}'
    lost = len(values) - len(replied)
    return cell + (f' ({lost} none)' if lost else '') + f' n={len(values)}'


def preflight(paths: set) -> None:
    if os.geteuid() != 0:
        sys.exit('north_south.py: run as root (namespaces, OVS)')
    needs = {'iperf3': 'iperf3', 'ovs-vswitchd': 'openvswitch-switch'}
    if paths & {'namespace', 'snat-namespace'}:
        needs['iptables'] = 'iptables'
    if paths & {'ovn', 'snat-ovn'}:
        needs.update({'ovn-northd': 'ovn-central', 'ovn-controller': 'ovn-host'})
    missing = [package for binary, package in needs.items() if not shutil.which(binary)]
    if missing:
        sys.exit(f'north_south.py: missing here: apt-get install {" ".join(missing)}')


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)  # unwinds through every finally: nothing left behind


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=ROUNDS)
    parser.add_argument('--seconds', type=int, default=SECONDS,
                        help='iperf3 duration per path and round')
    parser.add_argument('--samples', type=int, default=SAMPLES,
                        help='association samples per system and kind')
    parser.add_argument('--interval', type=float, default=0.005, help='ping interval, s')
    parser.add_argument('--upstream-arp', choices=('known', 'flushed'), default='known',
                        help='the upstream router knows the floating IP\'s MAC, or ARPs anew')
    parser.add_argument('--security', choices=('open', 'off'), default='open')
    parser.add_argument('--ovn-call', choices=('wait', 'no-wait'), default='wait',
                        help="OVN's association: ovn-nbctl --wait=hv (returns once the "
                             'chassis has the flows) or without (returns once NB has it, as '
                             "Neutron's OVN driver returns, like df-api)")
    parser.add_argument('--failovers', type=int, default=FAILOVERS,
                        help='gateway kills per system (with snat-gateway and snat-ovn)')
    parser.add_argument('--ovn-bfd-interval', type=int, default=BFD_INTERVAL,
                        help="OVN's BFD min_rx/min_tx, ms (0: OVS's defaults, 1000 ms "
                             "min_rx); Dragonflow's bfd_interval by default")
    parser.add_argument('--paths', default=','.join(PATHS),
                        help=f'which of {", ".join(PATHS)} to measure')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run: ' + ', '.join(f'--{k} {v}' for k, v in QUICK.items()))
    parser.add_argument('--json', metavar='FILE',
                        help='also write every sample there (seconds; null: no reply)')
    parser.add_argument('--keep-logs', action='store_true',
                        help='keep the temporary directories (daemons\' logs)')
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    wanted = set(args.paths.split(','))
    if not wanted or wanted - set(PATHS):
        parser.error(f'--paths: a comma-separated subset of {",".join(PATHS)}')
    preflight(wanted)
    # Ctrl-C even when started in the background (where SIGINT starts ignored), and kill.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    _System.interval, _System.upstream_arp = args.interval, args.upstream_arp
    secure, workdirs, systems = args.security == 'open', [], {}
    try:
        if wanted & {'flows', 'namespace'}:
            log('Dragonflow: starting')
            workdirs.append(tempfile.mkdtemp(prefix='df-bench-ns-'))
            systems['Dragonflow'] = Dragonflow(workdirs[-1], secure, 'flows' in wanted,
                                               'namespace' in wanted)
        if 'ovn' in wanted:
            log('OVN: starting')
            workdirs.append(tempfile.mkdtemp(prefix='df-bench-ns-ovn-'))
            systems['OVN'] = Ovn(workdirs[-1], secure)
            systems['OVN'].wait = args.ovn_call == 'wait'
        if wanted & {'snat-gateway', 'snat-namespace'}:
            log('Dragonflow SNAT: starting (ch1 and gateway chassis ch2, ch3)')
            workdirs.append(tempfile.mkdtemp(prefix='df-bench-snat-'))
            systems['Dragonflow SNAT'] = DragonflowGateways(
                workdirs[-1], secure, 'snat-gateway' in wanted, 'snat-namespace' in wanted)
        if 'snat-distributed' in wanted:
            log('Dragonflow distributed SNAT: starting')
            workdirs.append(tempfile.mkdtemp(prefix='df-bench-dsnat-'))
            systems['Dragonflow distributed'] = DragonflowDistributed(workdirs[-1], secure)
        if 'snat-ovn' in wanted:
            log('OVN SNAT: starting (ch1 and an HA chassis group of ch2, ch3)')
            workdirs.append(tempfile.mkdtemp(prefix='df-bench-snat-ovn-'))
            systems['OVN SNAT'] = OvnGateways(workdirs[-1], secure, args.ovn_bfd_interval)
        paths = [path for system in systems.values() for path in system.paths]
        results = measure(paths, args.rounds, args.seconds)
        associations([s for s in systems.values() if getattr(s, 'address', None)],
                     args.samples)
        failovers([s for s in systems.values() if isinstance(s, Gateways) and s.pinger],
                  args.failovers)
    except BaseException:
        # Printed now: a teardown that fails too would hide it (ExitStack re-chains).
        traceback.print_exc()
        if not args.keep_logs and workdirs:
            log('failed: --keep-logs keeps the daemons\' logs for a look')
        raise
    finally:
        for name, system in systems.items():
            try:
                system.close()
            except Exception as e:  # noqa: BLE001 - close the others all the same
                log(f'{name}: teardown failed: {e}')
        for workdir in workdirs:
            if args.keep_logs:
                log(f'logs kept in {workdir}')
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    report(results, systems, args)
    report_snat(results, systems, args)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'args': vars(args), 'paths': results,
                       'associations': {name: s.samples for name, s in systems.items()
                                        if isinstance(s, _System)},
                       'failovers': {name: {'killed': s.killed, 'seconds': s.failovers,
                                            'comebacks': [dict(zip(('gap', 'at', 'lost'), c,
                                                                   strict=True))
                                                          for c in s.comebacks]}
                                     for name, s in systems.items()
                                     if isinstance(s, Gateways)}},
                      f, indent=1)
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit('interrupted: everything it started is gone')
