"""Many chassis, one run, one table: a lab cloud of 20 chassis (each a namespace with its own
Open vSwitch and df-controller) gets 20 projects, each with a router, 10 networks (one /24
subnet each) and 100 VM ports (10 per network, in the project's default security group), all
through the API, and reports
  - the time for all 2,000 ports to be ACTIVE, from the first create call (ports created in
    bulk, `create_ports`, one call per router; each call's ports plugged at once, one
    ovs-vsctl transaction per chassis);
  - the time from one more port's create call, its VM interface already on br-int, to its
    flows on every chassis that serves its network, p50/p99 over 100 creates;
  - flows per chassis, df-controller RSS and idle CPU, and what each chassis serves.

Placement: router r's ports (its "project") go round-robin onto --spread chassis (r*spread,
r*spread+1, ... modulo the chassis count), so every chassis gets the same number of ports. With
--spread equal to the chassis count (the default) every project is on every chassis, as a
spreading scheduler places VMs, and every chassis serves the whole topology; a small --spread
packs projects and shows the selective cache at work.

A VM interface here is an OVS internal port (type=internal: a tap device in the chassis
namespace, no VM namespace) with external_ids:iface-id and attached-mac, as Nova would plug it.
"Flows present" is read from the switches: an `ovs-ofctl monitor` on every chassis' br-int
reports when the port's egress_dispatch flow (table 60, reg7 = the port's key; see
_probe.egress_flow: from then on that chassis can reach the port) arrives. The chassis that serve
the port's network are those whose heartbeat lists it. A port's id comes from
the API, so the interface is on br-int with the port's MAC first and its iface-id is set right
after the create returns (os-vif's step); that is inside the measured time.

Run as root: .venv/bin/python bench/scale.py [--chassis 20] [--spread N] [--samples 100]
"""
import argparse
import concurrent.futures
import os
import re
import statistics
import sys
import tempfile
import threading
import time

from _probe import (
    FlowMonitor,
    cpu_seconds,
    egress_flow,
    flow_count,
    log,
    percentile,
    rss_mb,
)

from dragonflow import store as nb
from dragonflow.lab.cloud import Cloud

FLOW_TIMEOUT = 30.0
# The egress flow of a remote port once it is bound sends to its chassis' tunnel IP (before, it
# goes to every chassis of the network: resubmit to table 62).
BOUND_ACTIONS = r'.*set_field:[0-9.]+->tun_dst'
ACTIVE_TIMEOUT = 1800.0
IDLE_WINDOW = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--chassis', type=int, default=20)
    parser.add_argument('--routers', type=int, default=20)
    parser.add_argument('--networks', type=int, default=200, help='split evenly over routers')
    parser.add_argument('--ports', type=int, default=2000, help='split evenly over networks')
    parser.add_argument('--spread', type=int, default=0,
                        help='chassis each router\'s ports are spread over (0: all)')
    parser.add_argument('--samples', type=int, default=100, help='single port creates timed')
    parser.add_argument('--store', default='sqlite', help='sqlite, etcd, etcd-cluster or redis')
    args = parser.parse_args()
    args.spread = min(args.spread or args.chassis, args.chassis)
    rows = []
    with Cloud(tempfile.mkdtemp(prefix='df-bench-scale-'), store=args.store) as cloud:
        run(cloud, args, rows)
    report(args, rows)
    return 0


def run(cloud: Cloud, args, rows: list) -> None:
    t = time.monotonic()
    cloud.start(chassis=args.chassis)
    rows.append((f'{args.chassis} chassis started (one after the other)',
                 f'{time.monotonic() - t:.1f} s'))
    log(rows[-1])
    chassis = list(cloud.chassis.values())
    store = nb.connect(cloud.store_url)
    t = time.monotonic()
    projects = topology(cloud, args)
    rows.append((f'{args.routers} routers, {args.networks} networks + subnets + router '
                 f'interfaces created (one call each)', f'{time.monotonic() - t:.1f} s'))
    log(rows[-1])

    cpu_before = {c.name: cpu_seconds(c.controller.popen.pid) for c in chassis}
    times = bulk_ports(cloud, args, projects, chassis)
    cpu_bulk = sum(cpu_seconds(c.controller.popen.pid) - cpu_before[c.name] for c in chassis)
    per_call = args.ports // args.routers
    rows.append((f'{args.ports} ports: created ({args.routers} bulk calls of {per_call}) / '
                 'plugged / all ACTIVE, from the first create',
                 f'{times["created"]:.1f} / {times["plugged"]:.1f} / {times["active"]:.1f} s'))
    rows.append(('  ACTIVE: 50% / 90% / 99% of the ports after',
                 ' / '.join(f'{times[q]:.1f}' for q in ('50%', '90%', '99%')) + ' s'))
    rows.append(('  one bulk create call: first / median / last',
                 ' / '.join(f'{v:.1f}' for v in (times['calls'][0],
                                                 statistics.median(times['calls']),
                                                 times['calls'][-1])) + ' s'))
    rows.append(('  df-controller CPU used meanwhile (all chassis) / wall time',
                 f'{cpu_bulk:.0f} s / {times["active"]:.0f} s'))
    log(rows[-5])

    rows.append(('after all ACTIVE: controllers caught up with the store / went idle',
                 settle(store, chassis)))
    log(rows[-1])
    steady_state(cloud, chassis, store, rows)
    samples(cloud, args, projects, chassis, store, rows)
    rows.append(('df-controller RSS after the creates, MB, min / median / max',
                 spread_of([rss_mb(c.controller.popen.pid) for c in chassis], '.1f')))


def topology(cloud: Cloud, args) -> list[dict]:
    """One project per router (its own default security group, as tenants have): the
    project's connection, its router and its networks' ids."""
    per_router = args.networks // args.routers
    projects = []
    for r in range(args.routers):
        sdk = cloud.connect(project=f'scale-project-{r}')
        router = sdk.network.create_router(name=f'scale-r{r}')
        networks = []
        for n in range(per_router):
            network = sdk.network.create_network(name=f'scale-r{r}-n{n}')
            subnet = sdk.network.create_subnet(network_id=network.id, ip_version=4,
                                               cidr=f'10.{100 + r}.{n}.0/24')
            sdk.network.add_interface_to_router(router, subnet=subnet.id)
            networks.append(network.id)
        projects.append({'sdk': sdk, 'router': router.id, 'networks': networks})
    return projects


def hosts_of(r: int, args) -> list[int]:
    """The chassis indexes router ``r``'s ports go to."""
    return [(r * args.spread + m) % args.chassis for m in range(args.spread)]


def bulk_ports(cloud: Cloud, args, projects, chassis) -> dict:
    per_network = args.ports // args.networks
    start = time.monotonic()
    ids: set = set()
    calls = []
    stop = threading.Event()
    watcher = concurrent.futures.ThreadPoolExecutor(1).submit(
        watch_active, nb.connect(cloud.store_url), ids, per_network * args.networks, start,
        stop)
    try:
        created, plugged = create_and_plug(args, projects, chassis, start, ids, calls)
    except BaseException:
        stop.set()
        raise
    times = {'created': created, 'plugged': plugged, 'calls': calls}
    times.update(watcher.result(timeout=ACTIVE_TIMEOUT))
    return times


def create_and_plug(args, projects, chassis, start: float, ids: set, calls: list):
    """Each router's ports in one bulk call, then plugged (one ovs-vsctl per chassis); the
    times, from ``start``, when the last call returned and the last port was plugged."""
    per_network = args.ports // args.networks
    names = iter(range(args.ports))
    for r, project in enumerate(projects):
        specs = [{'network_id': network, 'name': f'scale-r{r}-p{i}'}
                 for network in project['networks'] for i in range(per_network)]
        call = time.monotonic()
        ports = list(project['sdk'].network.create_ports(specs))
        calls.append(time.monotonic() - call)
        created = time.monotonic() - start  # the last create call returned
        hosts = hosts_of(r, args)
        by_chassis: dict[int, list] = {}
        for j, port in enumerate(ports):
            by_chassis.setdefault(hosts[j % len(hosts)], []).append(port)
            ids.add(port.id)
        for index, group in by_chassis.items():
            vsctl = []
            for port in group:
                name = f'vm{next(names):05d}'
                vsctl += ['--', 'add-port', 'br-int', name, '--', 'set', 'Interface', name,
                          'type=internal', f'external_ids:iface-id={port.id}',
                          f'external_ids:attached-mac={port.mac_address}']
            chassis[index].ovs.vsctl(*vsctl)
        plugged = time.monotonic() - start  # the last interface plugged
        log(f'router {r}: {len(ports)} ports created and plugged')
    return created, plugged


def watch_active(store, ids: set, total: int, start: float, stop: threading.Event) -> dict:
    """From ``start``: when 50%, 90%, 99% and all of the ports ``ids`` (filled in as they are
    created) are ACTIVE, read from the store every half second."""
    marks = {'50%': 0.5, '90%': 0.9, '99%': 0.99}
    times: dict = {}
    last_logged = 0.0
    while not stop.is_set():
        active = sum(1 for record in store.list('ports')
                     if record.id in ids and record.value['status'] == 'ACTIVE')
        now = time.monotonic() - start
        for mark, fraction in marks.items():
            if mark not in times and active >= fraction * total:
                times[mark] = now
        if active == total:
            times['active'] = now
            return times
        if now - last_logged > 10:
            log(f'{active}/{total} ACTIVE after {now:.0f} s')
            last_logged = now
        if now > ACTIVE_TIMEOUT:
            raise TimeoutError(f'only {active} of {total} ports ACTIVE after {now:.0f} s')
        time.sleep(0.5)
    return times


def settle(store, chassis, timeout: float = 60.0) -> str:
    """Until every controller has applied the store's revision of now (its heartbeat says so)
    and all of them together use under a fifth of a core for a second; how that went."""
    start = time.monotonic()
    revision = store.revision()
    while True:
        beats = store.heartbeats()
        seen = {c.name: beats.get(c.name, {}).get('revision_seen', 0) for c in chassis}
        if all(v >= revision for v in seen.values()):
            break
        if time.monotonic() > start + ACTIVE_TIMEOUT:
            raise TimeoutError(f'controllers behind revision {revision}: {seen}')
        time.sleep(0.5)
    caught_up = time.monotonic() - start
    while time.monotonic() < start + caught_up + timeout:
        before = sum(cpu_seconds(c.controller.popen.pid) for c in chassis)
        time.sleep(1.0)
        used = sum(cpu_seconds(c.controller.popen.pid) for c in chassis) - before
        if used < 0.2:
            return f'{caught_up:.1f} / idle after {time.monotonic() - start:.0f} s'
    return f'{caught_up:.1f} / still {used * 100:.0f}% CPU after {timeout:.0f} s more'


def steady_state(cloud: Cloud, chassis, store, rows: list) -> None:
    flows = [flow_count(c) for c in chassis]
    rows.append(('flows per chassis, min / median / max', spread_of(flows, '.0f')))
    rss = [rss_mb(c.controller.popen.pid) for c in chassis]
    rows.append(('df-controller RSS, MB, min / median / max', spread_of(rss, '.1f')))
    peak = [hwm_mb(c.controller.popen.pid) for c in chassis]
    rows.append(('df-controller peak RSS (VmHWM), MB, max', f'{max(peak):.1f}'))
    records = {c.name: store.heartbeats()[c.name] for c in chassis}
    ports_by_network: dict[str, int] = {}
    for record in store.list('ports'):
        ports_by_network[record.value['network_id']] = \
            ports_by_network.get(record.value['network_id'], 0) + 1
    served = [(len(r['networks']), len(r['routers']),
               sum(ports_by_network.get(n, 0) for n in r['networks']))
              for r in records.values()]
    rows.append(('served per chassis (median): networks / routers / ports',
                 ' / '.join(f'{statistics.median(s[i] for s in served):.0f}' for i in range(3))))
    before = {c.name: cpu_seconds(c.controller.popen.pid) for c in chassis}
    time.sleep(IDLE_WINDOW)
    idle = [(cpu_seconds(c.controller.popen.pid) - before[c.name]) / IDLE_WINDOW * 100
            for c in chassis]
    machine = sum(idle) / (os.cpu_count() or 1)
    rows.append((f'df-controller CPU when idle, % of a core: each (median) / all '
                 f'{len(chassis)} (share of the machine)',
                 f'{statistics.median(idle):.1f} / {sum(idle):.0f} ({machine:.0f}%)'))
    log(rows[-1])


def samples(cloud: Cloud, args, projects, chassis, store, rows: list) -> None:
    monitors = {c.name: FlowMonitor(f'{c.ovs.rundir}/br-int.mgmt', c.ovs.rundir, c.name)
                for c in chassis}
    results = {'api': [], 'own': [], 'all': [], 'bound': [], 'needing': []}
    failures = 0
    try:
        for i in range(args.samples):
            r = i % args.routers
            network = projects[r]['networks'][(i // args.routers) % len(projects[r]['networks'])]
            hosts = hosts_of(r, args)
            host = chassis[hosts[(i // args.routers) % len(hosts)]]
            mac = f'fa:16:3e:5c:{i >> 8:02x}:{i & 0xff:02x}'
            name = f'smp{i:05d}'
            host.ovs.vsctl('add-port', 'br-int', name, '--', 'set', 'Interface', name,
                           'type=internal', f'external_ids:attached-mac={mac}')
            beats = store.heartbeats()
            needing = [c for c in chassis if c is host
                       or network in beats[c.name]['networks']]
            time.sleep(0.2)
            t0 = time.monotonic()
            port = projects[r]['sdk'].network.create_port(network_id=network, mac_address=mac,
                                           name=f'scale-sample-{i}')
            returned = time.monotonic()
            host.ovs.vsctl('set', 'Interface', name, f'external_ids:iface-id={port.id}')
            pattern = egress_flow(store.get('ports', port.id).value['key'])
            arrived = {c.name: monitors[c.name].first(pattern, t0, FLOW_TIMEOUT)
                       for c in needing}
            bound_pattern = re.compile(pattern.pattern + BOUND_ACTIONS)
            bound = [monitors[c.name].first(bound_pattern, t0, FLOW_TIMEOUT)
                     for c in needing if c is not host]
            if None in arrived.values() or host.name not in arrived:
                failures += 1
                log(f'sample {i}: flows missing on '
                    f'{[n for n, at in arrived.items() if at is None]}')
            else:
                results['api'].append(returned - t0)
                results['own'].append(arrived[host.name] - t0)
                results['all'].append(max(arrived.values()) - t0)
                if bound and None not in bound:
                    results['bound'].append(max(bound) - t0)
            results['needing'].append(len(needing))
            if (i + 1) % 10 == 0:
                log(f'{i + 1} creates: p50 {p50_p99(results["all"])} ms')
            for m in monitors.values():
                m.forget()
    finally:
        for m in monitors.values():
            m.close()
    n = len(results['all'])
    rows.append((f'one port create -> its flows on every chassis serving its network, ms, '
                 f'p50 / p99 ({n} creates, {failures} failed)', p50_p99(results['all'])))
    rows.append(('  create call returned, ms, p50 / p99', p50_p99(results['api'])))
    rows.append(('  flows on the port\'s own chassis, ms, p50 / p99', p50_p99(results['own'])))
    rows.append(('  the others tunnel straight to it (it is bound), ms, p50 / p99',
                 p50_p99(results['bound'])))
    rows.append(('  chassis serving the port\'s network, median',
                 f'{statistics.median(results["needing"]):.0f}'))
    log(rows[-5])


def p50_p99(values: list[float]) -> str:
    if not values:
        return '-'
    return f'{percentile(values, 50) * 1000:.1f} / {percentile(values, 99) * 1000:.1f}'


def spread_of(values: list[float], fmt: str) -> str:
    return ' / '.join(format(v, fmt) for v in (min(values), statistics.median(values),
                                                max(values)))


def hwm_mb(pid: int) -> float:
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    return 0.0


def report(args, rows: list) -> None:
    print(f'\nMany chassis: {args.chassis} chassis, {args.routers} routers, {args.networks} '
          f'networks, {args.ports} VM ports (+{args.networks} router interfaces); each '
          f'router\'s ports on {args.spread} chassis; {args.store} store')
    width = max(len(name) for name, _ in rows) + 2
    for name, value in rows:
        print(f'{name:<{width}}{value:>24}')


if __name__ == '__main__':
    sys.exit(main())
