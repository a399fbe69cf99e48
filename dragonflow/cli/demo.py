"""`dfctl demo` (behind `make demo`): an all-in-one deployment on this machine, a demo topology
made through the API, and proof that it works: a connectivity matrix measured with real pings,
per VM and per chassis pair, and the flows that do the work, grouped by app."""
import signal
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

from dragonflow.cli.dfctl import format_flows
from dragonflow.lab.cloud import Cloud

CHASSIS = 3
# name -> (project, CIDR, on alpha's router?). Beta reuses net-a's CIDR: projects are isolated
# even with overlapping addresses; net-c is alpha's but off the router.
NETWORKS = {'net-a': ('alpha', '10.10.1.0/24', True), 'net-b': ('alpha', '10.10.2.0/24', True),
            'net-c': ('alpha', '10.10.3.0/24', False), 'net-x': ('beta', '10.10.1.0/24', False)}
# name, network, chassis, address (fixed, so a ping can only reach the VM it names)
VMS = (('vm1', 'net-a', 'ch1', '10.10.1.11'), ('vm2', 'net-a', 'ch2', '10.10.1.12'),
       ('vm3', 'net-b', 'ch3', '10.10.2.13'), ('vm4', 'net-b', 'ch1', '10.10.2.14'),
       ('vm5', 'net-c', 'ch2', '10.10.3.15'), ('vm6', 'net-x', 'ch1', '10.10.1.16'),
       ('vm7', 'net-x', 'ch3', '10.10.1.17'))


def run(once: bool, workdir=None) -> int:
    workdir = workdir or tempfile.mkdtemp(prefix='dragonflow-demo-')
    cloud = Cloud(workdir)
    try:
        print(f'Starting the store, df-api on {cloud.api_url} and {CHASSIS} chassis '
              f'(files in {workdir}) ...', flush=True)
        cloud.start(chassis=CHASSIS)
        vms = build_topology(cloud)
        results = ping_all(vms)
        ok = print_matrix(vms, results) & print_chassis_pairs(vms, results)
        for name, chassis in cloud.chassis.items():
            print(f'\nFlows on {name} by app (dfctl flows --rundir {chassis.ovs.rundir}):')
            print(_summary(format_flows(chassis.dump_flows())))
        print_client_help(cloud, workdir)
        if not once:
            print('\nThe demo keeps running; Ctrl-C stops it and cleans up.', flush=True)
            _wait_for_interrupt()
        return 0 if ok else 1
    finally:
        cloud.close()


def build_topology(cloud) -> dict:
    routers, subnets = {}, {}
    for name, (project, cidr, routed) in NETWORKS.items():
        sdk = cloud.connect(project)
        network = sdk.network.create_network(name=name)
        subnets[name] = sdk.network.create_subnet(network_id=network.id, ip_version=4,
                                                  cidr=cidr, name=name + '-subnet')
        if routed:
            if project not in routers:
                routers[project] = sdk.network.create_router(name=f'{project}-router')
            sdk.network.add_interface_to_router(routers[project], subnet=subnets[name].id)
    vms = {}
    for name, network, chassis, ip in VMS:
        project = NETWORKS[network][0]
        port = cloud.connect(project).network.create_port(
            network_id=subnets[network].network_id, name=name,
            fixed_ips=[{'subnet_id': subnets[network].id, 'ip_address': ip}])
        vm = cloud.vm(chassis, port, name=name)
        vm.network, vm.chassis_name, vm.label = network, chassis, name
        vms[name] = vm
    for vm in vms.values():
        cloud.wait_port_active(vm.port_id)
    print(f'Created through the API: projects alpha and beta, {len(NETWORKS)} networks '
          f'(alpha-router on {", ".join(n for n, v in NETWORKS.items() if v[2])}), '
          f'{len(vms)} VMs on {CHASSIS} chassis.')
    return vms


def should_reach(a, b) -> bool:
    project_a, _, routed_a = NETWORKS[a.network]
    project_b, _, routed_b = NETWORKS[b.network]
    return a.network == b.network or (project_a == project_b and routed_a and routed_b)


def ping_all(vms: dict) -> dict:
    """Ping every ordered pair of VMs; {(a, b): reached}."""
    pairs = [(a, b) for a in vms.values() for b in vms.values() if a is not b]
    with ThreadPoolExecutor(max_workers=4) as pool:
        reached = pool.map(lambda pair: pair[0].ping(pair[1].ip, count=2, timeout=1), pairs)
        return dict(zip(pairs, reached, strict=True))


def print_matrix(vms: dict, results: dict) -> bool:
    print('\nConnectivity (real pings; row pings column): '
          'ok = reached, -- = blocked as it should be, FAIL = wrong')
    print(' ' * 24 + ''.join(f'{name:>6}' for name in vms))
    wrong = 0
    for a in vms.values():
        cells = []
        for b in vms.values():
            if a is b:
                cells.append('')
                continue
            good = results[(a, b)] == should_reach(a, b)
            wrong += not good
            cells.append(('ok' if results[(a, b)] else '--') if good else 'FAIL')
        project = NETWORKS[a.network][0]
        label = f'{a.label} {project}/{a.network}@{a.chassis_name}'
        print(f'{label:<24}' + ''.join(f'{c:>6}' for c in cells))
    print(f'{len(results) - wrong} of {len(results)} pairs as expected.')
    return wrong == 0


def print_chassis_pairs(vms: dict, results: dict) -> bool:
    """Per chassis pair: pairs as expected / pairs, and how many of them reached."""
    names = sorted({vm.chassis_name for vm in vms.values()})
    print('\nPer chassis pair (from row to column): as expected/pairs, reached')
    print(' ' * 6 + ''.join(f'{n:>14}' for n in names))
    all_good = True
    for source in names:
        cells = []
        for target in names:
            pairs = [(a, b) for (a, b) in results
                     if a.chassis_name == source and b.chassis_name == target]
            good = sum(results[p] == should_reach(*p) for p in pairs)
            all_good &= good == len(pairs)
            cells.append(f'{good}/{len(pairs)}, {sum(results[p] for p in pairs)}')
        print(f'{source:<6}' + ''.join(f'{c:>14}' for c in cells))
    return all_good


def _summary(grouped: str) -> str:
    return '\n'.join(line for line in grouped.splitlines() if line.startswith('=='))


def print_client_help(cloud, workdir) -> None:
    clouds_yaml = f'{workdir}/clouds.yaml'
    with open(clouds_yaml, 'w') as f:
        f.write('clouds:\n  dragonflow:\n    auth_type: none\n    auth:\n'
                f'      endpoint: {cloud.api_url}\n'
                f'    network_endpoint_override: {cloud.api_url}/\n')
    print(f'\nPoint the openstack CLI at df-api:\n'
          f'  export OS_CLIENT_CONFIG_FILE={clouds_yaml} OS_CLOUD=dragonflow\n'
          f'  openstack network list; openstack port list\n'
          f'  dfctl --config-file {workdir}/df-api.ini status')


def _wait_for_interrupt() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
