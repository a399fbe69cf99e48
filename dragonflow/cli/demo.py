"""`dfctl demo` (behind `make demo`): an all-in-one deployment on this machine, a demo topology
made through the API, and proof that it works: a connectivity matrix measured with real pings
and the flows that do the work, grouped by app."""
import signal
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

from dragonflow.cli.dfctl import format_flows
from dragonflow.lab.cloud import Cloud

# name -> (CIDR, on the router?); two routed networks and one left off the router, so the
# matrix shows both what must reach and what must not.
NETWORKS = {'net-a': ('10.10.1.0/24', True), 'net-b': ('10.10.2.0/24', True),
            'net-c': ('10.10.3.0/24', False)}
VMS = (('vm1', 'net-a'), ('vm2', 'net-a'), ('vm3', 'net-b'), ('vm4', 'net-b'),
       ('vm5', 'net-c'))
CHASSIS = 3


def run(once: bool, workdir=None) -> int:
    workdir = workdir or tempfile.mkdtemp(prefix='dragonflow-demo-')
    cloud = Cloud(workdir)
    try:
        print(f'Starting the store, df-api on {cloud.api_url} and {CHASSIS} chassis '
              f'(files in {workdir}) ...', flush=True)
        cloud.start(chassis=CHASSIS)
        vms = build_topology(cloud)
        ok = print_matrix(vms)
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
    sdk = cloud.sdk
    router = sdk.network.create_router(name='router-1')
    subnets = {}
    for name, (cidr, routed) in NETWORKS.items():
        network = sdk.network.create_network(name=name)
        subnets[name] = sdk.network.create_subnet(network_id=network.id, ip_version=4,
                                                  cidr=cidr, name=name + '-subnet')
        if routed:
            sdk.network.add_interface_to_router(router, subnet=subnets[name].id)
    vms = {}
    for index, (name, network) in enumerate(VMS):
        port = sdk.network.create_port(network_id=subnets[network].network_id, name=name)
        chassis = f'ch{index % CHASSIS + 1}'
        vm = cloud.vm(chassis, port, name=name)
        vm.network, vm.chassis_name = network, chassis
        vms[name] = vm
    for vm in vms.values():
        cloud.wait_port_active(vm.port_id)
    print(f'Created through the API: {len(NETWORKS)} networks, router-1 on '
          f'{", ".join(n for n, (_, r) in NETWORKS.items() if r)}, {len(vms)} VMs.')
    return vms


def should_reach(a, b) -> bool:
    return a.network == b.network or (NETWORKS[a.network][1] and NETWORKS[b.network][1])


def print_matrix(vms: dict) -> bool:
    """Ping every ordered pair; print the matrix; True if every result is the expected one."""
    pairs = [(a, b) for a in vms.values() for b in vms.values() if a is not b]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(pairs, pool.map(lambda p: p[0].ping(p[1].ip, count=2, timeout=1),
                                           pairs), strict=True))
    names = list(vms)
    print('\nConnectivity (real pings; row pings column): '
          'ok = reached, -- = blocked as it should be, FAIL = wrong')
    print(' ' * 22 + ''.join(f'{n:>8}' for n in names))
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
        label = f'{a.name.split("-", 1)[1]} {a.network}@{a.chassis_name}'
        print(f'{label:<22}' + ''.join(f'{c:>8}' for c in cells))
    print(f'{len(pairs) - wrong} of {len(pairs)} pairs as expected.')
    return wrong == 0


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
