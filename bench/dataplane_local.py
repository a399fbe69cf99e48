"""One chassis, one run: iperf3 throughput and ping RTT for
  - L2 on one subnet (the ceiling: no routing at all),
  - routed by Dragonflow's flows (router interfaces on br-int, no namespace),
  - routed by a Linux namespace router plugged into the same br-int (the legacy Neutron L3
    agent's path, built here for the comparison),
three rounds each, medians, printed side by side with the ratios the targets are stated in.

Run as root: .venv/bin/python bench/dataplane_local.py [--rounds 3] [--seconds 5]
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile

from dragonflow.lab import netns
from dragonflow.lab.cloud import Cloud, wait_for
from dragonflow.lab.vm import MTU


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--seconds', type=int, default=5, help='iperf3 duration per round')
    args = parser.parse_args()
    results = run(chassis=1, rounds=args.rounds, seconds=args.seconds, paths=lambda vm: {
        'L2 same subnet': (vm('a', 'ch1'), vm('a', 'ch1')),
        'routed by flows': (vm('a', 'ch1'), vm('b', 'ch1')),
        'routed by namespace router': (vm('a', 'ch1', legacy=True),
                                       vm('b', 'ch1', legacy=True))})
    report(results, [('routed by flows', 'L2 same subnet', 0.95),
                     ('routed by flows', 'routed by namespace router', 1.15)])
    return 0


def run(chassis: int, rounds: int, seconds: int, paths) -> dict:
    """Build a cloud with two routed networks (a, b) and a namespace router joining them
    too; ``paths(vm)`` names the (source, destination) pairs to measure, where
    ``vm(network, chassis, legacy=False)`` makes a VM (legacy ones route through the
    namespace router on ch1). One run: every path measured in the same cloud."""
    with Cloud(tempfile.mkdtemp(prefix='df-bench-')) as cloud:
        cloud.start(chassis=chassis)
        subnets = topology(cloud)
        legacy_gateways = namespace_router(cloud, subnets)
        names = iter(range(1, 100))

        def vm(network, on, legacy=False):
            port = cloud.sdk.network.create_port(network_id=subnets[network].network_id)
            v = cloud.vm(on, port, name=f'{network}{next(names)}', gateway=not legacy)
            if legacy:
                v.exec('ip', 'route', 'replace', 'default', 'via', legacy_gateways[network])
            cloud.wait_port_active(port.id)
            return v

        return {name: measure(src, dst, rounds, seconds)
                for name, (src, dst) in paths(vm).items()}


def topology(cloud) -> dict:
    sdk = cloud.sdk
    subnets = {}
    for name, cidr in (('a', '10.30.1.0/24'), ('b', '10.30.2.0/24')):
        network = sdk.network.create_network(name=f'bench-{name}')
        subnets[name] = sdk.network.create_subnet(network_id=network.id, ip_version=4,
                                                  cidr=cidr)
    router = sdk.network.create_router(name='bench-router')
    for subnet in subnets.values():
        sdk.network.add_interface_to_router(router, subnet=subnet.id)
    return subnets


def namespace_router(cloud, subnets) -> dict:
    """A Linux router namespace with one leg per subnet, plugged into br-int like a VM.

    Its name carries the cloud's prefix, so Cloud.close() removes it with the rest."""
    sdk, chassis = cloud.sdk, cloud.chassis['ch1']
    name = f'{cloud.prefix}-qrouter'
    netns.add(name)
    gateways = {}
    for index, (net_name, subnet) in enumerate(subnets.items()):
        port = sdk.network.create_port(network_id=subnet.network_id, name=f'qr-{index}')
        ip = port.fixed_ips[0]['ip_address']
        tap = 'qr' + port.id[:11]
        netns.veth(f'qr-{index}', name, tap, chassis.netns)
        for cmd in (('ip', 'link', 'set', f'qr-{index}', 'address', port.mac_address),
                    ('ip', 'link', 'set', f'qr-{index}', 'mtu', MTU),
                    ('ethtool', '-K', f'qr-{index}', 'tx', 'off'),
                    ('ip', 'addr', 'add', f'{ip}/24', 'dev', f'qr-{index}')):
            netns.run(*cmd, netns=name)
        chassis.ovs.vsctl('add-port', 'br-int', tap, '--', 'set', 'Interface', tap,
                          f'external_ids:iface-id={port.id}',
                          f'external_ids:attached-mac={port.mac_address}')
        cloud.wait_port_active(port.id)
        gateways[net_name] = ip
    netns.run('sysctl', '-q', '-w', 'net.ipv4.ip_forward=1', netns=name)
    return gateways


def measure(src, dst, rounds: int, seconds: int) -> dict:
    server = dst.popen('iperf3', '-s', stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: ':5201' in dst.exec('ss', '-ltn'), 5, what='iperf3 server')
        gbps, rtts = [], []
        src.ping(dst.ip, count=3)  # resolve ARP and tunnel neighbours before measuring
        for _ in range(rounds):
            out = json.loads(src.exec('iperf3', '-c', dst.ip, '-t', seconds, '-J',
                                      timeout=seconds + 30))
            gbps.append(out['end']['sum_received']['bits_per_second'] / 1e9)
            rtts.append(ping_rtt(src, dst.ip))
    finally:
        server.kill()
        server.wait()
    return {'gbps': statistics.median(gbps), 'rtt_ms': statistics.median(rtts)}


def ping_rtt(src, ip) -> float:
    out = src.exec('ping', '-n', '-q', '-c', '20', '-i', '0.05', ip)
    return float(out.strip().splitlines()[-1].split('=')[1].split('/')[1])


def report(results: dict, ratios) -> None:
    """The table, then each (numerator, denominator, target or None) throughput ratio."""
    print(f'\n{"path":<32}{"iperf3 Gbit/s":>15}{"ping RTT ms":>14}')
    for name, r in results.items():
        print(f'{name:<32}{r["gbps"]:>15.3f}{r["rtt_ms"]:>14.3f}')
    print()
    for numerator, denominator, target in ratios:
        ratio = results[numerator]['gbps'] / results[denominator]['gbps']
        verdict = '' if target is None else \
            f' (target >= {target}: {"met" if ratio >= target else "NOT met"})'
        print(f'{numerator} / {denominator}: {ratio:.3f}{verdict}')


if __name__ == '__main__':
    sys.exit(main())
