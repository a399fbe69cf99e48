"""An idle lab: N chassis with VMs on a routed topology, left alone for a while. Does the store
stay the same size, and what does each df-controller cost when nothing happens?

Liveness is not in the change log (heartbeats are Store.heartbeat records, and a chassis record
is written only when its endpoint changes), so an idle cloud commits nothing: the store's
revision and size should not move, and each controller should only wake for its heartbeat, its
br-int check and its store watch. Measured on real processes (df-api, N df-controllers and
their Open vSwitches), the store sampled at the start, every tenth of the window, and the end.

Run as root: .venv/bin/python bench/idle.py [--chassis 10] [--seconds 120] [--store sqlite]
(the issue's 30 minutes: --seconds 1800)
"""
import argparse
import glob
import os
import statistics
import sys
import tempfile
import time

from _probe import cpu_seconds, log

from dragonflow import store as nb
from dragonflow.lab.cloud import Cloud


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--chassis', type=int, default=10)
    parser.add_argument('--seconds', type=float, default=120.0)
    parser.add_argument('--vms', type=int, default=2, help='VMs per chassis')
    parser.add_argument('--store', default='sqlite', choices=['sqlite', 'etcd', 'redis'])
    args = parser.parse_args()
    with Cloud(tempfile.mkdtemp(prefix='df-bench-idle-'), store=args.store) as cloud:
        log(f'starting {args.chassis} chassis on {args.store}')
        cloud.start(chassis=args.chassis)
        build(cloud, args)
        store = nb.connect(cloud.store_url)
        settle(cloud, store)
        samples = [sample(cloud, store)]
        log(f'idle for {args.seconds:.0f} s')
        for _ in range(10):
            time.sleep(args.seconds / 10)
            samples.append(sample(cloud, store))
        report(cloud, args, samples)
    return 0


def build(cloud, args) -> None:
    """Two subnets on a router, VMs of both on every chassis."""
    sdk = cloud.sdk
    subnets = []
    for i in (1, 2):
        network = sdk.network.create_network(name=f'idle{i}')
        subnets.append(sdk.network.create_subnet(network_id=network.id, ip_version=4,
                                                 cidr=f'10.90.{i}.0/24'))
    router = sdk.network.create_router(name='idle')
    for subnet in subnets:
        sdk.network.add_interface_to_router(router, subnet=subnet.id)
    for n, chassis in enumerate(cloud.chassis):
        for v in range(args.vms):
            subnet = subnets[(n + v) % 2]
            port = sdk.network.create_port(network_id=subnet.network_id)
            cloud.vm(chassis, port)
            cloud.wait_port_active(port.id, timeout=30)
    log(f'{args.chassis * args.vms} VMs up')


def settle(cloud, store, timeout: float = 60.0) -> None:
    """Until every chassis says its br-int has the store's revision of now."""
    revision, deadline = store.revision(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        beats = store.heartbeats()
        if all(beats.get(c, {}).get('revision_seen', 0) >= revision for c in cloud.chassis):
            return
        time.sleep(0.5)
    raise TimeoutError(f'chassis behind revision {revision}')


def sample(cloud, store) -> dict:
    return {'time': time.monotonic(), 'revision': store.revision(),
            'bytes': store_bytes(cloud),
            'controllers': {c.name: cpu_seconds(c.controller.popen.pid)
                            for c in cloud.chassis.values()},
            'api': cpu_seconds(cloud.api.popen.pid)}


def store_bytes(cloud) -> dict:
    """sqlite: each file of the store (database, write-ahead logs, liveness) by name."""
    if not cloud.store_url.startswith('sqlite:'):
        return {}
    path = cloud.store_url.removeprefix('sqlite:///')
    return {os.path.basename(f): os.path.getsize(f) for f in sorted(glob.glob(path + '*'))}


def report(cloud, args, samples) -> None:
    first, last = samples[0], samples[-1]
    window = last['time'] - first['time']
    cpu = [(last['controllers'][c] - first['controllers'][c]) / window * 100
           for c in first['controllers']]
    rows = [
        ('store revision, start / end', f"{first['revision']} / {last['revision']}"),
        *[(f'{name} bytes, start / max / end',
           f"{first['bytes'].get(name, 0):,} / "
           f"{max(s['bytes'].get(name, 0) for s in samples):,} / {size:,}")
          for name, size in last['bytes'].items()],
        ('df-controller CPU, % of a core: min / median / max',
         f'{min(cpu):.2f} / {statistics.median(cpu):.2f} / {max(cpu):.2f}'),
        ('df-api CPU, % of a core', f"{(last['api'] - first['api']) / window * 100:.2f}"),
    ]
    print(f'{args.chassis} chassis, {args.chassis * args.vms} VMs, store {args.store}, '
          f'idle {window:.0f} s')
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f'{name:<{width}}  {value}')


if __name__ == '__main__':
    sys.exit(main())
