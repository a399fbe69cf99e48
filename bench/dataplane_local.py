"""One chassis, one run: iperf3 throughput and ping RTT for
  - L2 on one subnet (the ceiling: no routing at all),
  - routed by Dragonflow's flows (router interfaces on br-int, no namespace),
  - routed by a Linux namespace router plugged into the same br-int (the legacy Neutron L3
    agent's path, built here for the comparison; its legs are ports with port security off,
    as Neutron's router ports are, since they forward packets with other hosts' addresses),
printed side by side with the ratios the targets are stated in.

The paths are measured in rounds, every path once a round and a different one first each
round (an iperf3 run, then a burst of pings), so a change in the machine's load during the run
falls on all of them alike. The table gives each path's median over the rounds; each ratio of
medians comes with a 95 % bootstrap interval resampling whole rounds (paired: a round's paths
were measured within seconds of each other); a target counts as met when the whole
interval is above it, as not met when the whole interval is below it.

Run as root: .venv/bin/python bench/dataplane_local.py [--rounds 8] [--seconds 4]
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile

from _probe import log, ratio_interval

from dragonflow.lab import netns
from dragonflow.lab.cloud import Cloud, wait_for
from dragonflow.lab.vm import MTU

ROUNDS, SECONDS = 8, 4


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=ROUNDS)
    parser.add_argument('--seconds', type=int, default=SECONDS,
                        help='iperf3 duration per path and round')
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
    namespace router on ch1). One run: every path measured in the same cloud, in rounds."""
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

        return measure(paths(vm), rounds, seconds)


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
        # Neutron's router ports have no port security: they forward other hosts' packets.
        port = sdk.network.create_port(network_id=subnet.network_id, name=f'qr-{index}',
                                       port_security_enabled=False)
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


def measure(paths: dict, rounds: int, seconds: int) -> dict:
    """{path: {'gbps': [one per round], 'rtt_ms': [...]}}, every path once a round, the
    first path of a round moving one place each round."""
    names = list(paths)
    results = {name: {'gbps': [], 'rtt_ms': []} for name in names}
    servers = []
    try:
        for src, dst in paths.values():
            servers.append(dst.popen('iperf3', '-s', stdout=subprocess.DEVNULL))
            wait_for(lambda dst=dst: ':5201' in dst.exec('ss', '-ltn'), 5, what='iperf3 server')
            src.ping(dst.ip, count=3)  # resolve ARP and tunnel neighbours before measuring
        for r in range(rounds):
            log(f'round {r + 1}/{rounds}')
            for name in names[r % len(names):] + names[:r % len(names)]:
                src, dst = paths[name]
                out = json.loads(src.exec('iperf3', '-c', dst.ip, '-t', seconds, '-J',
                                          timeout=seconds + 30))
                results[name]['gbps'].append(out['end']['sum_received']['bits_per_second'] / 1e9)
                results[name]['rtt_ms'].append(ping_rtt(src, dst.ip))
    finally:
        for server in servers:
            server.kill()
            server.wait()
    return results


def ping_rtt(src, ip) -> float:
    out = src.exec('ping', '-n', '-q', '-c', '20', '-i', '0.05', ip)
    return float(out.strip().splitlines()[-1].split('=')[1].split('/')[1])


def report(results: dict, ratios) -> None:
    """The table (medians over the rounds, with each path's range), then each (numerator,
    denominator, target or None) throughput ratio with its bootstrap interval."""
    rounds = len(next(iter(results.values()))['gbps'])
    print(f'\n{rounds} rounds, medians (min-max over the rounds)')
    print(f'{"path":<32}{"iperf3 Gbit/s":>24}{"ping RTT ms":>24}')
    for name, r in results.items():
        cells = ''.join(f'{statistics.median(v):>10.3f} ({min(v):.3f}-{max(v):.3f})'
                        for v in (r['gbps'], r['rtt_ms']))
        print(f'{name:<32}{cells}')
    print('\nthroughput ratios, median / median [95 % bootstrap interval, rounds resampled '
          'paired]:')
    for numerator, denominator, target in ratios:
        ratio, low, high = ratio_interval(results[numerator]['gbps'],
                                          results[denominator]['gbps'],
                                          statistic=statistics.median)
        verdict = '' if target is None else f' (target >= {target}: ' + (
            'met' if low >= target else 'NOT met' if high < target
            else 'undecided, the interval spans it') + ')'
        print(f'{numerator} / {denominator}: {ratio:.3f} [{low:.3f}, {high:.3f}]{verdict}')


if __name__ == '__main__':
    sys.exit(main())
