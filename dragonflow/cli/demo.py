"""`dfctl demo` (behind `make demo`): an all-in-one deployment on this machine, a demo topology
made through the API, and proof that it works: a connectivity matrix measured with real pings,
per VM and per chassis pair, north-south through distributed floating IPs and, for VMs
without one, SNAT to the router's gateway address on its active gateway chassis (an internet
host behind an upstream router on the physical network says which source address it saw),
and the flows that do the work, grouped by app."""
import signal
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

from dragonflow.cli.dfctl import format_flows
from dragonflow.lab import physical
from dragonflow.lab.cloud import Cloud, wait_for
from dragonflow.lab.traffic import PeerServer, seen_as

CHASSIS = 3
PHYSNET = 'physnet1'
GATEWAYS = ('ch1', 'ch2')  # [controller] gateway = true: they may hold routers' gateways
# name -> (project, CIDR, on alpha's router?). Beta reuses net-a's CIDR: projects are isolated
# even with overlapping addresses; net-c is alpha's but off the router; net-v is a VLAN
# network the operator made for alpha on the physical network, routed like the others.
NETWORKS = {'net-a': ('alpha', '10.10.1.0/24', True), 'net-b': ('alpha', '10.10.2.0/24', True),
            'net-c': ('alpha', '10.10.3.0/24', False), 'net-x': ('beta', '10.10.1.0/24', False),
            'net-v': ('alpha', '10.10.4.0/24', True)}
PROVIDER = {'net-v': {'provider:network_type': 'vlan', 'provider:physical_network': PHYSNET,
                      'provider:segmentation_id': 150}}
# name, network, chassis, address (fixed, so a ping can only reach the VM it names)
VMS = (('vm1', 'net-a', 'ch1', '10.10.1.11'), ('vm2', 'net-a', 'ch2', '10.10.1.12'),
       ('vm3', 'net-b', 'ch3', '10.10.2.13'), ('vm4', 'net-b', 'ch1', '10.10.2.14'),
       ('vm5', 'net-c', 'ch2', '10.10.3.15'), ('vm6', 'net-x', 'ch1', '10.10.1.16'),
       ('vm7', 'net-x', 'ch3', '10.10.1.17'), ('vm8', 'net-v', 'ch2', '10.10.4.18'),
       ('vm9', 'net-v', 'ch3', '10.10.4.19'))
FLOATING = ('vm1', 'vm3', 'vm8')  # the VMs given a floating IP


def run(once: bool, workdir=None) -> int:
    workdir = workdir or tempfile.mkdtemp(prefix='dragonflow-demo-')
    cloud = Cloud(workdir, physical_networks=(PHYSNET,), gateways=GATEWAYS)
    try:
        print(f'Starting the store, df-api on {cloud.api_url}, {CHASSIS} chassis (gateway '
              f'chassis: {", ".join(GATEWAYS)}) and a physical network with an upstream router '
              f'(files in {workdir}) ...', flush=True)
        cloud.start(chassis=CHASSIS)
        vms, routers = build_topology(cloud)
        floating = build_north_south(cloud, vms, routers['alpha'])
        results = ping_all(vms)
        ok = print_matrix(vms, results) & print_chassis_pairs(vms, results)
        ok &= print_north_south(cloud, vms, floating, routers['alpha'])
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
        if name in PROVIDER:  # provider attributes are the operator's to set
            network = cloud.sdk.network.create_network(name=name, project_id=project,
                                                       **_sdk_provider(PROVIDER[name]))
        else:
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
          f'(alpha-router on {", ".join(n for n, v in NETWORKS.items() if v[2])}; net-v on '
          f'VLAN {PROVIDER["net-v"]["provider:segmentation_id"]} of {PHYSNET}), '
          f'{len(vms)} VMs on {CHASSIS} chassis.')
    return vms, routers


def _sdk_provider(attributes: dict) -> dict:
    return {'provider_' + k.split(':')[1]: v for k, v in attributes.items()}


def build_north_south(cloud, vms: dict, router) -> dict:
    """The operator's external network (flat, on the physical network, the upstream router
    its gateway), alpha's router given a gateway there, and floating IPs for some VMs.
    {vm name: floating IP}."""
    admin = cloud.sdk.network
    public = physical.create_external_network(admin, PHYSNET)
    alpha = cloud.connect('alpha').network
    alpha.update_router(router, external_gateway_info={'network_id': public.id})
    # The default group lets in only its own members, as Neutron's does: open ping to the
    # world, as a tenant would to be reached through a floating IP.
    default = next(alpha.security_groups(name='default', project_id='alpha'))
    alpha.create_security_group_rule(security_group_id=default.id, direction='ingress',
                                     ethertype='IPv4', protocol='icmp',
                                     remote_ip_prefix='0.0.0.0/0')
    fips = {name: alpha.create_ip(floating_network_id=public.id, port_id=vms[name].port_id)
            for name in FLOATING}
    for fip in fips.values():
        cloud.wait_floating_ip_active(fip.id)
    floating = {name: fip.floating_ip_address for name, fip in fips.items()}
    # df-api lists the router's gateway chassis; the first alive holds its gateway address.
    candidates = wait_for(lambda: gateway_chassis(cloud, router), 15,
                          what='alpha-router scheduled on the gateway chassis')
    print(f'North-south: external network public (flat on {PHYSNET}, '
          f'{physical.EXTERNAL_CIDR}), alpha-router\'s gateway on it '
          f'({gateway_address(cloud, router)}, gateway chassis {" > ".join(candidates)}), '
          'floating IPs ' + ', '.join(f'{name} {ip}' for name, ip in floating.items()) + '.')
    return floating


def gateway_chassis(cloud, router) -> list[str]:
    """The router's gateway chassis in priority order (admin only)."""
    return cloud.sdk.network.get(f'/routers/{router.id}').json()['router'][
        'gateway_chassis']


def gateway_address(cloud, router) -> str:
    router = cloud.sdk.network.get_router(router.id)
    return router.external_gateway_info['external_fixed_ips'][0]['ip_address']


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


def print_north_south(cloud, vms: dict, floating: dict, router) -> bool:
    """The internet host pings each floating IP; each VM of alpha-router pings the internet
    host and opens a TCP connection to it, which says which source address it saw: the
    VM's floating IP, or else the router's gateway address (SNAT on the active gateway
    chassis)."""
    internet = cloud.physical.internet
    print(f'\nNorth-south (real pings; the internet host {physical.INTERNET_IP} is behind the '
          f'upstream router {physical.GATEWAY_IP}):')
    wrong = 0
    for name, address in floating.items():
        reached = internet.ping(address, count=2, timeout=1)
        wrong += not reached
        print(f'  internet -> {address:<15} ({name}'
              f'@{vms[name].chassis_name}): {"ok" if reached else "FAIL"}')
    routed = [vm for vm in vms.values() if NETWORKS[vm.network][2]]
    gateway = gateway_address(cloud, router)
    active = gateway_chassis(cloud, router)[0]
    with PeerServer(internet):
        for vm in routed:
            expected = floating.get(vm.label, gateway)
            reached = vm.ping(physical.INTERNET_IP, count=2, timeout=1)
            seen = seen_as(vm, physical.INTERNET_IP)
            good = reached and seen == expected
            wrong += not good
            how = 'floating IP' if vm.label in floating else f'SNAT on {active}'
            print(f'  {vm.label}@{vm.chassis_name} -> internet ({how}, expected as '
                  f'{expected}): seen as {seen}: {"ok" if good else "FAIL"}')
    print(f'{len(floating) + len(routed) - wrong} of {len(floating) + len(routed)} '
          'north-south paths as expected.')
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
