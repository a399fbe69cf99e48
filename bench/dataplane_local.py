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
    with Cloud(tempfile.mkdtemp(prefix='df-bench-')) as cloud:
        cloud.start(chassis=1)
        paths = build(cloud)
        results = {name: measure(src, dst, args.rounds, args.seconds)
                   for name, (src, dst) in paths.items()}
    report(results)
    return 0


def build(cloud) -> dict:
    sdk = cloud.sdk
    nets = {}
    for name, cidr in (('bench-a', '10.30.1.0/24'), ('bench-b', '10.30.2.0/24')):
        network = sdk.network.create_network(name=name)
        nets[name] = sdk.network.create_subnet(network_id=network.id, ip_version=4, cidr=cidr)
    router = sdk.network.create_router(name='bench-router')
    for subnet in nets.values():
        sdk.network.add_interface_to_router(router, subnet=subnet.id)

    def vm(subnet, name, gateway=None):
        port = sdk.network.create_port(network_id=subnet.network_id, name=name)
        v = cloud.vm('ch1', port, name=name, gateway=gateway is None)
        if gateway:
            v.exec('ip', 'route', 'replace', 'default', 'via', gateway)
        cloud.wait_port_active(port.id)
        return v

    a1, a2 = vm(nets['bench-a'], 'a1'), vm(nets['bench-a'], 'a2')
    b1 = vm(nets['bench-b'], 'b1')
    legacy_gw = namespace_router(cloud, nets)
    c1 = vm(nets['bench-a'], 'c1', gateway=legacy_gw['bench-a'])
    d1 = vm(nets['bench-b'], 'd1', gateway=legacy_gw['bench-b'])
    return {'L2 same subnet': (a1, a2), 'routed by flows': (a1, b1),
            'routed by namespace router': (c1, d1)}


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
    server = dst.popen('iperf3', '-s')
    try:
        wait_for(lambda: ':5201' in dst.exec('ss', '-ltn'), 5, what='iperf3 server')
        gbps, rtts = [], []
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


def report(results: dict) -> None:
    print(f'\n{"path":<30}{"iperf3 Gbit/s":>15}{"ping RTT ms":>14}')
    for name, r in results.items():
        print(f'{name:<30}{r["gbps"]:>15.3f}{r["rtt_ms"]:>14.3f}')
    ceiling = results['L2 same subnet']
    routed = results['routed by flows']
    legacy = results['routed by namespace router']
    print(f'\nrouted by flows / L2 ceiling:            {routed["gbps"] / ceiling["gbps"]:.3f}'
          '  (target >= 0.95)')
    print(f'routed by flows / namespace router:      {routed["gbps"] / legacy["gbps"]:.3f}'
          '  (target >= 1.15)')
    print(f'RTT namespace router / routed by flows:  {legacy["rtt_ms"] / routed["rtt_ms"]:.3f}')


if __name__ == '__main__':
    sys.exit(main())
