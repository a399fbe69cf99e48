"""Liveness between chassis with real Open vSwitch (BFD on dedicated VXLAN ports): each chassis
keeps one BFD port per peer its topology names (Topology.liveness_peers) and the sessions come
up; a chassis whose ovs-vswitchd dies is down for its peers within about a second (3 missed
300 ms intervals), and one whose ovs-vswitchd comes back before its controller stays down
until the controller has its flows in (flow-restore-wait); a gateway chassis that withdraws
(bfd:cpath_down, its uplink cut) is down for its peers while it still sees them alive, and
when it can serve again it first moves itself to the end of the router's gateway chassis,
so the peer that took over keeps the router (no failback).

The cloud: ch1 and ch2 are gateway chassis, ch3 a compute chassis; a router with its gateway
on a flat external network of physnet1 and a VM on each chassis, so that every chassis'
cache has the router (whatever the cache's scope for gateway chassis). Observed through each
chassis' OVSDB (its BFD ports and their bfd_status) and its controller's log, which says when
its topology sees a peer go down or come back (flow_loop.py)."""
import datetime
import json
import os
import time

import pytest

from dragonflow import store as df_store
from dragonflow.controller.ovsdb import liveness_port_name
from dragonflow.lab import physical
from dragonflow.lab.cloud import Cloud, wait_for
from dragonflow.model import Router

PHYSNET = 'physnet1'
GATEWAYS = ('ch1', 'ch2')
COMPUTE = 'ch3'
BFD_UDP_PORT = '4795'
BFD_INTERVAL_MS = 300  # [controller] bfd_interval's default
DETECTION = 1.5  # seconds: 3 x 300 ms missed, plus the OVSDB and the flow loop's pass


@pytest.fixture(scope='module')
def cloud(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail('the data-plane tests need root (network namespaces and Open vSwitch)')
    with Cloud(str(tmp_path_factory.mktemp('cloud-liveness')), physical_networks=(PHYSNET,),
               gateways=GATEWAYS) as c:
        c.start(chassis=3)
        yield c


@pytest.fixture(scope='module')
def router(cloud):
    """The router, scheduled on both gateway chassis, with a VM on every chassis."""
    net = cloud.sdk.network
    public = net.create_network(name='public', is_router_external=True,
                                provider_network_type='flat', provider_physical_network=PHYSNET)
    net.create_subnet(network_id=public.id, ip_version=4, cidr=physical.EXTERNAL_CIDR,
                      gateway_ip=physical.GATEWAY_IP, enable_dhcp=False)
    network = net.create_network(name='liveness')
    subnet = net.create_subnet(network_id=network.id, ip_version=4, cidr='10.90.0.0/24')
    router = net.create_router(name='liveness')
    net.add_interface_to_router(router, subnet=subnet.id)
    router = net.update_router(router, external_gateway_info={'network_id': public.id})
    store = df_store.connect(cloud.store_url)
    _schedule(store, router.id)
    for chassis in sorted(cloud.chassis):
        port = net.create_port(network_id=network.id, fixed_ips=[{'subnet_id': subnet.id}])
        cloud.vm(chassis, port)
        cloud.wait_port_active(port.id)
    return store, router.id


def _schedule(store, router_id: str) -> None:
    """Both gateway chassis listed: df-api's scheduler does it; where it has not yet, the
    test writes the list as it would."""
    def listed():
        record = store.get(Router.table, router_id)
        if set(record.value.get('gateway_chassis', [])) == set(GATEWAYS):
            return True
        try:
            store.put(Router.table, router_id, {**record.value,
                                                'gateway_chassis': list(GATEWAYS)},
                      expect=record.revision)
        except Exception:  # noqa: BLE001 - raced with df-api: read again
            return False
        return True
    wait_for(listed, 10, what='the router scheduled on both gateway chassis')


def gateway_chassis(store, router_id) -> list[str]:
    return store.get(Router.table, router_id).value['gateway_chassis']


def bfd_ports(chassis) -> dict[str, dict]:
    """The chassis' BFD ports by peer: options, bfd_status, bfd."""
    out = chassis.ovs.vsctl('--format=json', '--columns=external_ids,options,bfd,bfd_status',
                            'find', 'Interface', 'type=vxlan')
    table = json.loads(out)
    ports = {}
    for row in table['data']:
        columns = {name: _ovsdb_map(value) for name, value in zip(table['headings'], row,
                                                                   strict=True)}
        peer = columns['external_ids'].get('dragonflow-liveness-peer')
        if peer:
            ports[peer] = columns
    return ports


def _ovsdb_map(value) -> dict:
    return {k: v for k, v in value[1]} if isinstance(value, list) and value[0] == 'map' else {}


def forwarding(chassis) -> dict[str, bool]:
    return {peer: port['bfd_status'].get('forwarding') == 'true'
            for peer, port in bfd_ports(chassis).items()}


def log_times(chassis, text: str) -> list[float]:
    """When the chassis' controller logged lines containing ``text`` (the system clock)."""
    with open(chassis.controller.log_path, errors='replace') as log:
        return [datetime.datetime.strptime(line[:23], '%Y-%m-%d %H:%M:%S,%f').timestamp()
                for line in log if text in line]


def seen_down_after(chassis, peer: str, since: float) -> float:
    """Seconds from ``since`` until the chassis' topology saw ``peer`` go down."""
    times = wait_for(lambda: [t for t in log_times(chassis, f'BFD: peer {peer} is down')
                              if t >= since - 0.01], 10,
                     what=f'{chassis.name} to see {peer} down')
    return times[0] - since


def all_up(cloud, expected: dict[str, set]) -> None:
    """Every session forwarding, and at its configured pace: one just up still expects a
    packet a second (OVS' pace until up), and would see its peer die 3 s later, not 1."""
    wait_for(lambda: all(forwarding(cloud.chassis[name]) == dict.fromkeys(peers, True)
                         for name, peers in expected.items()), 15,
             what='every BFD session up')
    wait_for(lambda: all(f'RX Interval: Approx {BFD_INTERVAL_MS}ms' in cloud.chassis[name].ovs
                         .appctl('bfd/show', liveness_port_name(peer))
                         for name, peers in expected.items() for peer in peers), 15,
             what=f'every BFD session at {BFD_INTERVAL_MS} ms')


EXPECTED_PEERS = {
    # A compute chassis runs sessions with the router's gateway chassis; a gateway chassis
    # with the other gateway chassis and every chassis hosting the router's VMs.
    COMPUTE: {'ch1', 'ch2'}, 'ch1': {'ch2', COMPUTE}, 'ch2': {'ch1', COMPUTE}}


def test_each_chassis_has_a_bfd_port_per_liveness_peer_and_the_sessions_come_up(cloud, router):
    all_up(cloud, EXPECTED_PEERS)
    for name in cloud.chassis:
        for peer, port in bfd_ports(cloud.chassis[name]).items():
            assert port['options'] == {'remote_ip': cloud.chassis[peer].tunnel_ip,
                                       'local_ip': cloud.chassis[name].tunnel_ip,
                                       'dst_port': BFD_UDP_PORT, 'key': '0'}
            assert port['bfd']['enable'] == 'true' and port['bfd']['cpath_down'] == 'false'


def test_a_chassis_whose_switch_dies_is_down_for_its_peers_within_a_second(cloud, router):
    store, router_id = router
    all_up(cloud, EXPECTED_PEERS)
    first, second = gateway_chassis(store, router_id)
    victim = cloud.chassis[first]
    killed = time.time()
    victim.kill()  # ovs-vswitchd and the controller, SIGKILL: no BFD leaves it
    for observer in (COMPUTE, second):
        delay = seen_down_after(cloud.chassis[observer], first, killed)
        assert delay <= DETECTION, f'{observer} saw {first} down after {delay:.2f} s'
    victim.revive()
    # Back, it first moves itself behind the peer that took the router over.
    wait_for(lambda: gateway_chassis(store, router_id) == [second, first], 15,
             what=f'{first} moved to the end of the router\'s gateway chassis')
    all_up(cloud, EXPECTED_PEERS)


def test_a_gateway_whose_switch_is_back_before_its_controller_stays_down_until_it_serves(
        cloud, router):
    """As a machine boots: its ovs-vswitchd starts, its controller a while later. The
    controller keeps flow-restore-wait=true once its flows are in, so the switch waits:
    no peer's session to it comes up meanwhile (a session is up in 1.5 s). The controller
    back lets it start withdrawn, and no peer sees it alive before it has its flows and
    has moved itself behind the peer that took its router over."""
    store, router_id = router
    all_up(cloud, EXPECTED_PEERS)
    first, second = gateway_chassis(store, router_id)
    gateway = cloud.chassis[first]
    assert gateway.ovs.vsctl('get', 'Open_vSwitch', '.',
                             'other_config:flow-restore-wait').strip() == '"true"'
    killed = time.time()
    gateway.kill()
    for observer in (COMPUTE, second):
        seen_down_after(cloud.chassis[observer], first, killed)
    gateway.start_switch()
    started = time.time()
    while time.time() < started + 3 * DETECTION:  # watched, not slept: it never comes up
        for observer in (COMPUTE, second):
            assert not forwarding(cloud.chassis[observer]).get(first), \
                f'{observer} saw {first} alive with no controller on it'
    gateway.start_controller()
    wait_for(lambda: gateway_chassis(store, router_id) == [second, first], 15,
             what=f'{first} moved to the end of the router\'s gateway chassis')
    all_up(cloud, EXPECTED_PEERS)
    serving = min(t for t in log_times(gateway, 'gateway chassis serving') if t >= started)
    for observer in (COMPUTE, second):
        alive = [t for t in log_times(cloud.chassis[observer], f'BFD: peer {first} is alive')
                 if t >= started]
        assert alive and min(alive) >= serving, (observer, alive, serving)


def test_a_withdrawn_gateway_is_down_for_its_peers_and_still_sees_them(cloud, router):
    store, router_id = router
    all_up(cloud, EXPECTED_PEERS)
    first, second = gateway_chassis(store, router_id)
    gateway = cloud.chassis[first]
    cut = time.time()
    gateway.cut_uplink()  # it cannot serve: bfd:cpath_down on its BFD ports
    try:
        for observer in (COMPUTE, second):
            assert seen_down_after(cloud.chassis[observer], first, cut) <= DETECTION
        # Its own sessions still say forwarding: it sees which peers are alive.
        assert forwarding(gateway) == dict.fromkeys(EXPECTED_PEERS[first], True)
        assert all(port['bfd']['cpath_down'] == 'true' for port in bfd_ports(gateway).values())
        assert not [t for peer in EXPECTED_PEERS[first]
                    for t in log_times(gateway, f'BFD: peer {peer} is down') if t >= cut]
    finally:
        gateway.restore_uplink()
    wait_for(lambda: gateway_chassis(store, router_id) == [second, first], 15,
             what=f'{first} moved to the end of the router\'s gateway chassis')
    all_up(cloud, EXPECTED_PEERS)
    assert all(port['bfd']['cpath_down'] == 'false' for port in bfd_ports(gateway).values())


def test_a_gateway_whose_controller_restarts_stays_alive_for_its_peers(cloud, router):
    """Its switch keeps its flows: the restarted controller finds them in br-int and leaves
    the BFD ports as they were, so no peer moves a router away from it."""
    store, router_id = router
    all_up(cloud, EXPECTED_PEERS)
    first = gateway_chassis(store, router_id)[0]
    gateway = cloud.chassis[first]
    restarted = time.time()
    gateway.kill_controller()
    gateway.start_controller()
    wait_for(lambda: [t for t in log_times(gateway, 'gateway chassis serving') if t >= restarted],
             15, what=f'the restarted controller of {first} to decide')
    for observer in EXPECTED_PEERS[first]:
        assert not [t for t in log_times(cloud.chassis[observer], f'BFD: peer {first} is down')
                    if t >= restarted], f'{observer} saw {first} down'
    assert all(port['bfd']['cpath_down'] == 'false' for port in bfd_ports(gateway).values())
