"""Port-up latency, Dragonflow against OVN on the same machine, one run, side by side:
the time until a VM's first ping reply across a router from another chassis, after
  - "port created": the port is created (through df-api / ovn-nbctl) while the VM is plugged,
  - "VM plugged":   the VM's interface is plugged into br-int while its port exists,
40 samples each, p50 and p99 (nearest rank), and each Dragonflow/OVN ratio of p50s with its
95 % bootstrap interval.

Both systems are up for the whole run and their samples alternate: in each round every
measurement is taken once on each system, one right after the other (Dragonflow first in even
rounds, OVN first in odd ones), so a change in the machine's load falls on both alike. (Run
one system after the other, two runs minutes apart gave port-created ratios of 1.39 and
0.71.) The interval resamples whole rounds, paired: the two samples of a round share its load.
Each system's latencies therefore include the other, idle, deployment's daemons on the same
two cores.

What is measured (shared/notes/harness.md, "a trap"): the clock starts when the API call (or
the ovs-vsctl plug) RETURNS; only then does a pinger in the other VM start sending, one echo
request every 5 ms from a raw socket (a process started beforehand that sends nothing until
told to), and the clock stops at the first echo reply. No packet is sent before the call
returns, so no drop cached earlier in the datapath can delay the answer. Nothing else watches
the switches during those samples: Dragonflow's "where the time goes" lines (when its flows
reach each chassis, from `ovs-ofctl monitor` on both br-ints) come from as many samples of
their own after all the timed rounds, without pings. Running the monitors during the timed
samples cost the machine enough to move Dragonflow's port-created p50 from 5.9 to 6.8 ms, and
OVN never had them.

The topology is the same for both: networks A and B joined by a distributed router, the pinger
on A on chassis 1, a resident VM on B on chassis 2 (so chassis 2 already serves B, as in a
running cloud), and the new VM on B on chassis 2. Both use Geneve. With --security default
(the default) every VM port has what Neutron gives it: port security (its MAC and IP) and the
project's default security group (egress anything, ingress from the group's members, both
stateful) - Dragonflow's ports get them from df-api; OVN's ports get what the Neutron OVN
driver writes: port_security, a port group with allow-related ACLs over the group's address
set and drop ACLs below them. With --security off neither system has any of it.

"VM plugged first" for Dragonflow: a Neutron port's id is chosen by the API (Neutron does not
accept one on POST), so the VM's tap is on br-int beforehand with its MAC but no iface-id,
and the benchmark sets external_ids:iface-id right after the create returns, over a standing
OVSDB connection as os-vif does; that call is inside the measured time and shown on its own
line.
OVN's logical port is named by the caller, so its VM is plugged with its iface-id before the
ovn-nbctl call. That is a step OVN saves only when driven directly: under Neutron the logical
port is named after the Neutron port, whose id exists once the create returns, so os-vif sets
the iface-id afterwards as it does for Dragonflow. OVN is measured that way too, on a line of
its own (same sequence, same OVSDB call in the measured time).

Run as root: .venv/bin/python bench/port_up.py [--samples 40] [--interval 0.005]
                                                [--security default|off]
"""
import argparse
import sys
import tempfile
import time

from _ovn import OvnCloud
from _probe import (
    FlowMonitor,
    Guest,
    Pinger,
    Vif,
    egress_flow,
    log,
    percentile,
    ratio_interval,
)
from _stacked import Stacked

from dragonflow import store as nb
from dragonflow.lab.cloud import Cloud

KINDS = ('port created (VM plugged)', 'VM plugged (port created)')
# OVN's port created with its VM plugged as Neutron would drive OVN: the logical port is named
# by Neutron, so its iface-id comes after the create, as for Dragonflow.
OVN_AS_NEUTRON = 'port created, iface-id set after it'
REPLY_TIMEOUT = 5.0
PORT_GROUP = 'pg_default'
SETTLE = 0.3  # between steps of a sample that are not measured: let the previous one land
IFACE_ID = 'set iface-id after the create (OVSDB, as os-vif)'
MAX_SAMPLES = 150  # a sample's address is 10.4x.2.(100 + its number)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--samples', type=int, default=40, help='per measurement and system')
    parser.add_argument('--interval', type=float, default=0.005, help='ping interval, s')
    parser.add_argument('--security', choices=('default', 'off'), default='default',
                        help='port security and the default security group, or none')
    parser.add_argument('--systems', default='Dragonflow,OVN',
                        help='which to measure (both for the ratios)')
    args = parser.parse_args()
    if not 1 <= args.samples <= MAX_SAMPLES:
        parser.error(f'--samples: 1 to {MAX_SAMPLES} (the samples\' addresses)')
    secure, wanted = args.security == 'default', args.systems.split(',')
    systems = []
    try:
        for system in (Dragonflow, Ovn):
            if system.name in wanted:
                log(f'{system.name}: starting')
                systems.append(system(args.interval, secure))
        for i in range(args.samples):
            if i % 10 == 0:
                log(f'round {i + 1}/{args.samples}')
            # One after the other, each measurement in turn, who goes first swapped each round.
            order = systems if i % 2 == 0 else systems[::-1]
            for kind in (*KINDS, OVN_AS_NEUTRON):
                for system in order:
                    if kind in system.kinds:
                        system.sample(kind, i)
        for system in systems:
            if isinstance(system, Dragonflow):
                log('Dragonflow: flows\' arrival, with ovs-ofctl monitors, no pings')
                system.monitored(args.samples)
    finally:
        for system in systems:
            system.close()
    report({system.name: system.result for system in systems}, args)
    return 0


class Samples:
    """Latencies in seconds by measurement name; failures (no reply) counted apart. ``rounds``
    keeps every sample in its round's place (None for a failure), to pair it with the other
    system's sample of the same round."""

    def __init__(self):
        self.values: dict[str, list[float]] = {}
        self.rounds: dict[str, list] = {}
        self.failed: dict[str, int] = {}
        self.sent: dict[str, list[int]] = {}

    def add(self, kind: str, value, sent: int = 0) -> None:
        self.rounds.setdefault(kind, []).append(value)
        if value is None:
            self.failed[kind] = self.failed.get(kind, 0) + 1
        else:
            self.values.setdefault(kind, []).append(value)
            self.sent.setdefault(kind, []).append(sent)

    def p(self, kind: str, q: float):
        values = self.values.get(kind)
        return percentile(values, q) * 1000 if values else None


class _System(Stacked):
    """A cloud started by _start() (Stacked: up until close())."""

    def __init__(self, interval: float, secure: bool):
        self.interval, self.secure, self.result = interval, secure, Samples()
        super().__init__()


class Dragonflow(_System):
    """A Dragonflow cloud with the benchmark's topology, up until close(); sample() adds one
    timed port-up to ``result``, monitored() the flows' arrival samples."""
    name = 'Dragonflow'
    kinds = KINDS

    def __init__(self, interval: float, secure: bool):
        self.security = {} if secure else {'port_security_enabled': False,
                                           'security_groups': []}
        super().__init__(interval, secure)

    def _start(self) -> None:
        cloud = self._stack.enter_context(
            Cloud(tempfile.mkdtemp(prefix='df-bench-portup-'), tunnel_type='geneve'))
        cloud.start(chassis=2)
        self.cloud, sdk, self.store = cloud, cloud.sdk, nb.connect(cloud.store_url)
        subnets = {}
        router = sdk.network.create_router(name='portup-router')
        for name, cidr in (('a', '10.41.1.0/24'), ('b', '10.41.2.0/24')):
            network = sdk.network.create_network(name=f'portup-{name}')
            subnets[name] = sdk.network.create_subnet(network_id=network.id, ip_version=4,
                                                      cidr=cidr)
            sdk.network.add_interface_to_router(router, subnet=subnets[name].id)
        # Their addresses are fixed: one drawn at random could be a sample's (10.41.2.100+).
        source, resident = (
            cloud.vm(chassis, sdk.network.create_port(
                network_id=subnets[name].network_id, **self.security,
                fixed_ips=[{'subnet_id': subnets[name].id, 'ip_address': ip}]), name=vm)
            for chassis, name, ip, vm in (('ch1', 'a', '10.41.1.10', 'src'),
                                          ('ch2', 'b', '10.41.2.10', 'resident')))
        for vm in (source, resident):
            cloud.wait_port_active(vm.port_id)
        warm(source, resident.ip)
        warm(resident, source.ip)
        self.ch1, self.ch2 = cloud.chassis['ch1'], cloud.chassis['ch2']
        self.pinger = Pinger(source.name)
        self._stack.callback(self.pinger.close)
        self.vif = Vif(self.ch2.ovs.ovsdb_connection)
        self._stack.callback(self.vif.close)
        self.b = subnets['b']

    def sample(self, kind: str, i: int, monitors: tuple = ()) -> None:
        """One port up: timed to the first ping reply, or with ``monitors`` (and no ping)
        to its flows' arrival on both chassis."""
        sdk, b, result = self.cloud.sdk, self.b, self.result
        code = KINDS.index(kind) + (len(KINDS) if monitors else 0)
        ip, mac = f'10.41.2.{100 + i}', f'fa:16:3e:41:{code:02x}:{i:02x}'
        guest = Guest(f'{self.cloud.prefix}-n{code}x{i}', self.ch2.netns, self.ch2.ovs.vsctl,
                      mac, ip, 24, b.gateway_ip).make()
        spec = {'network_id': b.network_id, 'mac_address': mac,
                'fixed_ips': [{'subnet_id': b.id, 'ip_address': ip}], **self.security}
        try:
            if kind == KINDS[0]:
                guest.attach()  # plugged, iface-id to come with the port's id
                time.sleep(SETTLE)
                port = sdk.network.create_port(**spec)
                t0 = time.monotonic()
                self.vif.bind(guest.tap, port.id)
                if not monitors:
                    result.add(IFACE_ID, time.monotonic() - t0)
            else:
                port = sdk.network.create_port(**spec)
                time.sleep(SETTLE)
                guest.attach(port.id)
                t0 = time.monotonic()
            if monitors:
                key = self.store.get('ports', port.id).value['key']
                flows = [m.first(egress_flow(key), t0 - 1, REPLY_TIMEOUT) for m in monitors]
                result.add(f'{kind}: flows on both chassis (egress_dispatch)',
                           None if None in flows else max(flows) - t0)
                for m in monitors:
                    m.forget()
            else:
                at, sent = self.pinger.go(ip, self.interval, REPLY_TIMEOUT)
                result.add(kind, at and at - t0, sent)
            sdk.network.delete_port(port)
        finally:
            guest.destroy()

    def monitored(self, samples: int) -> None:
        """Apart from the timed samples: watching the switches costs the machine time the
        pings would wait for."""
        monitors = [FlowMonitor(f'{c.ovs.rundir}/br-int.mgmt', c.ovs.rundir, c.name)
                    for c in (self.ch1, self.ch2)]
        try:
            for i in range(samples):
                for kind in KINDS:
                    self.sample(kind, i, monitors)
        finally:
            for m in monitors:
                m.close()


class Ovn(_System):
    """An OVN deployment with the same topology, up until close(); sample() as Dragonflow's."""
    name = 'OVN'
    kinds = (*KINDS, OVN_AS_NEUTRON)

    def _start(self) -> None:
        cloud = self._stack.enter_context(
            OvnCloud(tempfile.mkdtemp(prefix='df-bench-portup-ovn-')))
        cloud.start(chassis=2)
        self.cloud, secure = cloud, self.secure
        ch1, self.ch2 = cloud.chassis['ch1'], cloud.chassis['ch2']
        nbctl = cloud.nbctl
        nbctl('lr-add', 'r')
        for index, name in enumerate(('a', 'b'), start=1):
            mac, cidr = f'00:00:00:42:ff:0{index}', f'10.42.{index}.1/24'
            nbctl('ls-add', f'ls-{name}', '--', 'lrp-add', 'r', f'r-{name}', mac, cidr,
                  '--', 'lsp-add', f'ls-{name}', f'{name}-r',
                  '--', 'lsp-set-type', f'{name}-r', 'router',
                  '--', 'lsp-set-addresses', f'{name}-r', 'router',
                  '--', 'lsp-set-options', f'{name}-r', f'router-port=r-{name}')
        if secure:
            default_security_group(nbctl)
        source = logical_vm(cloud, ch1, 'src', 'a', '00:00:00:42:01:0a', '10.42.1.10', secure)
        resident = logical_vm(cloud, self.ch2, 'resident', 'b', '00:00:00:42:02:0a',
                              '10.42.2.10', secure)
        nbctl('--wait=hv', 'sync')
        warm(source, resident.ip)
        warm(resident, source.ip)
        self.pinger = Pinger(source.name)
        self._stack.callback(self.pinger.close)
        self.vif = Vif(self.ch2.ovs.ovsdb_connection)
        self._stack.callback(self.vif.close)

    def sample(self, kind: str, i: int) -> None:
        nbctl, k = self.cloud.nbctl, self.kinds.index(kind)
        # The resident VM's MAC is ...:02:0a: no sample uses 02 here.
        name, octet = f'n{k}x{i}', (0, 1, 3)[k]
        ip, mac = f'10.42.2.{100 + i}', f'00:00:00:42:{octet:02x}:{i:02x}'
        guest = Guest(f'{self.cloud.prefix}-{name}', self.ch2.netns, self.ch2.ovs.vsctl, mac,
                      ip, 24, '10.42.2.1').make()
        add = add_port('ls-b', name, mac, ip, self.secure)
        try:
            if kind in (KINDS[0], OVN_AS_NEUTRON):
                guest.attach(name if kind == KINDS[0] else None)
                time.sleep(SETTLE)
                nbctl(*add)
                t0 = time.monotonic()
                if kind == OVN_AS_NEUTRON:
                    self.vif.bind(guest.tap, name)
            else:
                nbctl('--wait=hv', *add)
                time.sleep(SETTLE)
                guest.attach(name)
                t0 = time.monotonic()
            at, sent = self.pinger.go(ip, self.interval, REPLY_TIMEOUT)
            self.result.add(kind, at and at - t0, sent)
            nbctl('lsp-del', name)
        finally:
            guest.destroy()


def default_security_group(nbctl) -> None:
    """What the Neutron OVN driver writes for a project's default security group (egress
    anything, ingress from the group's members, stateful) and for port security's drop."""
    nbctl('pg-add', PORT_GROUP)
    for direction, port, priority, match, verdict in (
            ('from-lport', 'inport', 1001, 'ip', 'drop'),
            ('to-lport', 'outport', 1001, 'ip', 'drop'),
            ('from-lport', 'inport', 1002, 'ip4', 'allow-related'),
            ('to-lport', 'outport', 1002, f'ip4 && ip4.src == ${PORT_GROUP}_ip4',
             'allow-related')):
        nbctl('--type=port-group', 'acl-add', PORT_GROUP, direction, str(priority),
              f'{port} == @{PORT_GROUP} && {match}', verdict)


def add_port(switch: str, name: str, mac: str, ip: str, secure: bool) -> tuple:
    """ovn-nbctl arguments creating a logical port in one transaction, as the Neutron OVN
    driver does: addresses, and with ``secure`` port security and the default group."""
    if not secure:
        return ('lsp-add', switch, name, '--', 'lsp-set-addresses', name, f'{mac} {ip}')
    return ('--', '--id=@p', 'create', 'Logical_Switch_Port', f'name={name}',
            f'addresses="{mac} {ip}"', f'port_security="{mac} {ip}"',
            '--', 'add', 'Logical_Switch', switch, 'ports', '@p',
            '--', 'add', 'Port_Group', PORT_GROUP, 'ports', '@p')


def logical_vm(cloud, chassis, name: str, switch: str, mac: str, ip: str,
               secure: bool) -> Guest:
    cloud.nbctl(*add_port(f'ls-{switch}', name, mac, ip, secure))
    gateway = ip.rsplit('.', 1)[0] + '.1'
    guest = Guest(f'{cloud.prefix}-{name}', chassis.netns, chassis.ovs.vsctl, mac, ip, 24,
                  gateway).make()
    guest.attach(name)
    return guest


def warm(vm, ip: str) -> None:
    """Resolve ARP and the tunnel's neighbour both ways before anything is measured."""
    deadline = time.monotonic() + 20
    while not vm.ping(ip, count=1):
        if time.monotonic() > deadline:
            raise RuntimeError(f'{vm.name} cannot ping {ip}')
    vm.ping(ip, count=3)


def report(results: dict, args) -> None:
    ours = results.get('Dragonflow', Samples())
    theirs = results.get('OVN', Samples())
    pairs = ((KINDS[0], KINDS[0]), (KINDS[0], OVN_AS_NEUTRON), (KINDS[1], KINDS[1]))
    ratios = {pair: ratio_interval(ours.rounds.get(pair[0], []),
                                   theirs.rounds.get(pair[1], [])) for pair in pairs}
    alternated = ', the two systems alternated' if len(results) > 1 else ''
    print(f'\nCall returned -> first echo reply across a router from another chassis, ms '
          f'({args.samples} samples each{alternated}; pings every '
          f'{args.interval * 1000:g} ms, started after the call returned; port security and '
          f'security groups: {args.security})')
    print(f'{"":<30}{"Dragonflow":>21}{"OVN":>21}{"DF/OVN p50":>24}')
    print(f'{"":<30}{"p50":>10}{"p99":>11}{"p50":>10}{"p99":>11}{"ratio":>9}{"95 % CI":>15}')

    def ms(values) -> str:
        return ''.join(f'{"-" if v is None else f"{v:.1f}":>{width}}'
                       for v, width in zip(values, (10, 11), strict=True))

    def row(label, a, b, ours_cells=True):
        line = ms([ours.p(a, 50), ours.p(a, 99)]) if ours_cells else f'{"(same)":>21}'
        line += ms([theirs.p(b, 50), theirs.p(b, 99)])
        r = ratios.get((a, b))
        line += f'{r[0]:>9.2f}{f"[{r[1]:.2f}, {r[2]:.2f}]":>15}' if r else f'{"-":>9}'
        print(f'{label:<30}{line}')

    for kind in KINDS:
        row(kind, kind, kind)
        if kind == KINDS[0] and theirs.values.get(OVN_AS_NEUTRON):
            row('  OVN as under Neutron:', kind, OVN_AS_NEUTRON, ours_cells=False)
    if any(ratios.values()):
        print('(ratio: Dragonflow p50 / OVN p50; 95 % CI: percentile bootstrap, 4000 resamples of '
              'whole rounds, paired: a round\'s samples were taken within seconds of each '
              'other)')
    print('\nDragonflow, where the time goes (ms from the same start; p50 / p99):')
    for kind in ours.values:
        if kind not in KINDS:
            print(f'  {kind:<62}{ours.p(kind, 50):>7.1f} /{ours.p(kind, 99):>7.1f}')
    for name, samples in results.items():
        for kind in (*KINDS, OVN_AS_NEUTRON):
            if kind not in samples.values and kind not in samples.failed:
                continue
            sent = samples.sent.get(kind, [])
            lost = samples.failed.get(kind, 0)
            print(f'{name} {kind}: {lost} without a reply in {REPLY_TIMEOUT:g} s; echo requests '
                  f'sent until the reply, median {percentile(sent, 50) if sent else "-"}')
    print()
    for (kind, theirs_kind), r in ratios.items():
        if r:
            ratio, low, high = r
            against = ', against OVN as under Neutron' if theirs_kind == OVN_AS_NEUTRON else ''
            verdict = ('met' if high <= 1 else 'NOT met' if low > 1
                       else 'undecided, the interval spans 1')
            print(f'{kind}{against}: Dragonflow p50 / OVN p50 = {ratio:.2f}, 95 % CI '
                  f'[{low:.2f}, {high:.2f}] (target <= 1: {verdict})')


if __name__ == '__main__':
    sys.exit(main())
