"""SNAT with real packets (issue #15): a VM without a floating IP reaches the internet host
through its router's gateway address, SNATed on the router's active gateway chassis; two
routers on two gateway chassis; the active gateway killed, or cut from the physical network,
during a 100 pps ping from a VM on a third chassis (with the store stopped too): the ping
resumes within 3 s through the next gateway, and the failed one back does not take the
traffic back; distributed mode, where each chassis SNATs its own VMs to an address of its
own with no tunnel; enable_snat=false, routed with a route back upstream; frag-needed from the
router for a packet too big for the external network; a floating IP keeps precedence; a VM
on a VLAN network behind the router goes out too.

The cloud: ch1 and ch2 are gateway chassis, ch3 a compute chassis; all three map physnet1
(as every lab chassis does), so ch3 could reach the outside itself and sends there only what
has a floating IP. The store is etcd, so that it can be stopped."""
import itertools
import os
import subprocess
import time

import pytest

from dragonflow import store as df_store
from dragonflow.lab import physical
from dragonflow.lab.cloud import Cloud, wait_for
from dragonflow.lab.physical import INTERNET_IP, Capture
from dragonflow.lab.traffic import PeerServer, Pinger, seen_as
from tests.dataplane.test_routing import reachable_within

PHYSNET = 'physnet1'
GATEWAYS = ('ch1', 'ch2')
COMPUTE = 'ch3'
FAILOVER_DEADLINE = 3.0  # seconds without replies at most, from the fault to the next gateway
EXTERNAL_MTU = 1200      # the external network's, for the frag-needed test
VLAN_ID = 120  # in the lab's network_vlan_ranges (physnet1:100:200)
_cidrs = itertools.count(1)


def _require_root():
    if os.geteuid() != 0:
        pytest.fail('the data-plane tests need root (network namespaces and Open vSwitch)')


@pytest.fixture(scope='module')
def cloud(tmp_path_factory):
    _require_root()
    with Cloud(str(tmp_path_factory.mktemp('cloud-snat')), store='etcd',
               physical_networks=(PHYSNET,), gateways=GATEWAYS) as c:
        c.start(chassis=3)
        yield c


@pytest.fixture(scope='module')
def public(cloud):
    return physical.create_external_network(cloud.sdk.network, PHYSNET)


@pytest.fixture(scope='module')
def peer_server(cloud):
    """The internet host tells each TCP client the source address it saw."""
    with PeerServer(cloud.physical.internet):
        yield


class South:
    """A project network behind a router of its own, the router's gateway on public."""

    def __init__(self, cloud, public, enable_snat=True):
        self.cloud, self.public = cloud, public
        self.net = cloud.sdk.network
        n = next(_cidrs)
        network = self.net.create_network(name=f'snatnet{n}')
        self.cidr = f'10.80.{n}.0/24'
        self.subnet = self.net.create_subnet(network_id=network.id, ip_version=4,
                                             cidr=self.cidr, name=f'snatsubnet{n}')
        router = self.net.create_router(name=f'snatrouter{n}')
        self.net.add_interface_to_router(router, subnet=self.subnet.id)
        self.router = self.net.update_router(router, external_gateway_info={
            'network_id': public.id, 'enable_snat': enable_snat})
        self.gateway_ip = self.router.external_gateway_info[
            'external_fixed_ips'][0]['ip_address']

    def vm(self, chassis):
        port = self.net.create_port(network_id=self.subnet.network_id,
                                    fixed_ips=[{'subnet_id': self.subnet.id}])
        vm = self.cloud.vm(chassis, port)
        self.cloud.wait_port_active(port.id)
        vm.port = port
        return vm

    def gateway_chassis(self) -> list[str]:
        """The router's gateway chassis in priority order, as the admin sees them."""
        reply = self.net.get(f'/routers/{self.router.id}')
        assert reply.status_code == 200, reply.text
        return reply.json()['router']['gateway_chassis']

    def wait_scheduled(self) -> list[str]:
        """Until df-api has listed both gateway chassis for the router."""
        return wait_for(lambda: len(self.gateway_chassis()) == len(GATEWAYS) and
                        self.gateway_chassis(), 15, what='the router scheduled on both '
                                                         'gateway chassis')

    def settled(self) -> tuple[str, str]:
        """(active, standby) once the first of the router's list holds its gateway and no
        other chassis does, as their heartbeats say."""
        store = df_store.connect(self.cloud.store_url)

        def holders():
            order = self.gateway_chassis()
            holding = sorted(c for c, beat in store.heartbeats().items()
                             if self.router.id in beat.get('active_gateways', []))
            return len(order) == len(GATEWAYS) and holding == order[:1] and tuple(order)
        return wait_for(holders, 15, what='the first gateway chassis holding the router')


@pytest.fixture
def south(cloud, public):
    return South(cloud, public)


def peer_address(vm) -> str:
    """The source address the internet host saw for a new TCP connection from the VM."""
    return seen_as(vm, INTERNET_IP)


def echo_requests(lines, source) -> list[str]:
    return [line for line in lines if f'{source} > {INTERNET_IP}: ICMP echo request' in line]


def underlay_port(cloud, chassis) -> Capture:
    """Every tunnel packet the chassis sends or receives (its port on the underlay switch;
    tcpdump shows the inner packet of VXLAN)."""
    return Capture(cloud.underlay_ns, chassis, 'udp port 4789')


def wait_out(vm, deadline=15.0) -> None:
    """Until the VM reaches the internet host (the router scheduled, the flows in)."""
    assert reachable_within(vm, INTERNET_IP, deadline), \
        f'{vm.name} never reached the internet host'


def test_two_routers_leave_through_different_gateway_chassis(cloud, public):
    """The module's first routers (the loads even): each new router's list starts with the
    chassis first in the fewest lists, so the second starts with the other gateway chassis,
    and the lists stay as df-api made them; each router's traffic leaves through its own."""
    first, second = South(cloud, public), South(cloud, public)
    made = [first.wait_scheduled(), second.wait_scheduled()]
    assert made[0][0] != made[1][0], made
    net = cloud.physical
    for south, order in zip((first, second), made, strict=True):
        vm = south.vm(COMPUTE)
        wait_out(vm)
        active, standby = south.settled()
        assert [active, standby] == order, 'the list changed with nothing failed'
        with net.capture('icmp', net.port_of(active)) as there, \
                net.capture('icmp', net.port_of(standby)) as elsewhere:
            assert vm.ping(INTERNET_IP, count=3, interval=0.05)
        assert len(echo_requests(there.lines, south.gateway_ip)) == 3, there.lines
        assert not echo_requests(elsewhere.lines, south.gateway_ip), elsewhere.lines


def test_a_vm_without_a_fip_goes_out_as_its_routers_gateway_address(
        cloud, south, peer_server):
    assert set(south.wait_scheduled()) == set(GATEWAYS)  # never the compute chassis
    vm = south.vm(COMPUTE)
    wait_out(vm)
    internet = cloud.physical.internet
    with Capture(internet.name, 'eth0', 'icmp') as seen, \
            underlay_port(cloud, COMPUTE) as tunnel:
        assert vm.ping(INTERNET_IP, count=3, interval=0.05)
    assert len(echo_requests(seen.lines, south.gateway_ip)) == 3, seen.lines
    assert not [line for line in seen.lines if vm.ip in line], seen.lines
    # From the compute chassis the VM's packets ride the tunnel to the gateway chassis.
    assert echo_requests(tunnel.lines, vm.ip), tunnel.lines
    assert peer_address(vm) == south.gateway_ip  # a TCP connection, as the outside sees it


def test_the_gateway_address_answers_arp_and_ping_from_the_active_gateway_only(
        cloud, south):
    wait_out(south.vm(COMPUTE))
    active, standby = south.settled()
    upstream, net = cloud.physical.upstream, cloud.physical
    upstream.exec('ip', 'neigh', 'flush', 'dev', 'eth0')
    with net.capture('arp', net.port_of(active)) as one, \
            net.capture('arp', net.port_of(standby)) as other:
        assert upstream.ping(south.gateway_ip, count=2)
    is_at = f'Reply {south.gateway_ip} is-at'
    assert [line for line in one.lines if is_at in line], one.lines
    assert not [line for line in other.lines if is_at in line], other.lines


def _failover_under_ping(cloud, south, fault, repair, store_down=False):
    """A VM on the compute chassis pings the internet host every 10 ms; the router's active
    gateway suffers ``fault`` (the store stopped at the same moment with ``store_down``):
    the replies resume within FAILOVER_DEADLINE through the next gateway chassis. Then
    ``repair``, and until the failed chassis has moved itself to the end of the router's
    list (it takes no traffic back). Returns (active, standby)."""
    vm = south.vm(COMPUTE)
    wait_out(vm)
    active, standby = south.settled()
    net = cloud.physical
    try:
        with Pinger(vm, INTERNET_IP, interval=0.01) as ping:
            wait_for(lambda: ping.replies >= 50, 5, what='the ping under way')
            at = time.time()
            if store_down:
                cloud.stop_store()
            fault(cloud.chassis[active])
            wait_for(lambda: ping.replies_since(at) >= 100, 15,
                     what='1 s of replies after the fault')
            with net.capture('icmp', net.port_of(standby)) as there:
                replies = ping.replies
                wait_for(lambda: ping.replies >= replies + 20, 5, what='20 replies more')
            gap = ping.longest_gap(since=at)
            print(f'the ping resumed after {gap:.3f} s ({active} -> {standby}); '
                  f'{ping.lost()} replies lost')
            assert gap <= FAILOVER_DEADLINE, f'no reply for {gap:.3f} s'
            assert len(echo_requests(there.lines, south.gateway_ip)) >= 20, there.lines[-5:]
    finally:
        if store_down:
            cloud.start_store()
        repair(cloud.chassis[active])
    wait_for(lambda: south.gateway_chassis()[-1] == active, 20,
             what=f'{active} back and moved to the end of the router\'s gateway_chassis')
    return active, standby


def test_the_active_gateway_killed_fails_over_within_3_s(cloud, south):
    _failover_under_ping(cloud, south, lambda c: c.kill(), lambda c: c.revive())


def test_the_active_gateway_cut_from_the_physical_network_fails_over_within_3_s(
        cloud, south):
    _failover_under_ping(cloud, south, lambda c: c.cut_uplink(),
                         lambda c: c.restore_uplink())


def test_the_active_gateway_killed_with_the_store_stopped_fails_over_within_3_s(
        cloud, south):
    _failover_under_ping(cloud, south, lambda c: c.kill(), lambda c: c.revive(),
                         store_down=True)


def test_a_gateway_back_takes_no_traffic_back_and_new_connections_work(
        cloud, south, peer_server):
    """The killed gateway revived during the ping: it moves itself to the end of the
    router's list before it says it is alive, so no reply is lost to its return and no
    packet of the router leaves through it; new connections still go out."""
    vm = south.vm(COMPUTE)
    wait_out(vm)
    active, standby = south.settled()
    net, chassis = cloud.physical, cloud.chassis[active]
    with Pinger(vm, INTERNET_IP, interval=0.01) as ping:
        wait_for(lambda: ping.replies >= 50, 5, what='the ping under way')
        chassis.kill()
        try:
            at = time.time()
            wait_for(lambda: ping.replies_since(at) >= 100, 15,
                     what='1 s of replies after the kill')
            with net.capture('icmp', net.port_of(active)) as back, \
                    net.capture('icmp', net.port_of(standby)) as there:
                revived = time.time()
                chassis.revive()
                wait_for(lambda: south.gateway_chassis() == [standby, active], 20,
                         what=f'{active} moved to the end of the router\'s list')
                wait_for(lambda: ping.replies_since(revived) >= 300, 20,
                         what='3 s of ping after the revival')
        finally:
            if not chassis.controller.running:
                chassis.revive()
    gap = ping.longest_gap(since=revived + 0.05)
    through_back = echo_requests(back.lines, south.gateway_ip)
    assert gap < 0.5, (f'no reply for {gap:.3f} s after {active} came back (at '
                       f'{revived:.3f}; the gap ends at {ping.gap_end(revived + 0.05):.3f}); '
                       f'{len(through_back)} echo requests left through it: '
                       f'{through_back[:2]}')
    assert not through_back, through_back[:5]
    assert len(echo_requests(there.lines, south.gateway_ip)) >= 300, there.lines[-5:]
    assert peer_address(vm) == south.gateway_ip
    assert peer_address(south.vm(COMPUTE)) == south.gateway_ip


def test_enable_snat_false_routes_the_fixed_ip_out_with_a_route_back(cloud, public):
    south = South(cloud, public, enable_snat=False)
    south.wait_scheduled()
    vm = south.vm(COMPUTE)
    assert not reachable_within(vm, INTERNET_IP, 2), 'answered with no route back upstream'
    internet = cloud.physical.internet
    with cloud.physical.route_back(south.cidr, south.gateway_ip):
        wait_out(vm)
        with Capture(internet.name, 'eth0', 'icmp') as seen:
            assert vm.ping(INTERNET_IP, count=3, interval=0.05)
    assert len(echo_requests(seen.lines, vm.ip)) == 3, seen.lines
    assert not [line for line in seen.lines if south.gateway_ip in line], seen.lines


def test_a_packet_too_big_for_the_external_network_gets_frag_needed(cloud, public, south):
    """public's MTU lowered to 1200 (the VM's is 1400): a 1201-byte packet with DF is
    answered with ICMP fragmentation needed, MTU 1200, from the router, and the VM's kernel
    learns that path MTU; a 1200-byte one goes out."""
    vm = south.vm(COMPUTE)
    wait_out(vm)
    admin = cloud.sdk.network
    mtu = public.mtu
    fits, too_big = EXTERNAL_MTU - 28, EXTERNAL_MTU - 28 + 1  # ICMP data + 28 of headers
    outputs = []
    admin.update_network(public, mtu=EXTERNAL_MTU)
    try:
        with Capture(vm.name, 'eth0', 'icmp') as seen:
            wait_for(lambda: outputs.append(_ping_df(vm, too_big)) or outputs[-1][0] != 0,
                     10, what='the new MTU in the flows')
        assert any(f'Frag needed and DF set (mtu = {EXTERNAL_MTU})' in out
                   for _, out in outputs), outputs[-1][1]
        needed = [line for line in seen.lines
                  if f'unreachable - need to frag (mtu {EXTERNAL_MTU})' in line]
        assert needed and all(f'{south.subnet.gateway_ip} > {vm.ip}' in line
                              for line in needed), seen.lines
        assert f'mtu {EXTERNAL_MTU}' in vm.exec('ip', 'route', 'get', INTERNET_IP)
        assert _ping_df(vm, fits)[0] == 0
    finally:
        admin.update_network(public, mtu=mtu)


def _ping_df(vm, size):
    """One ping with ``size`` bytes of data and DF: (exit code, output)."""
    result = vm.popen('ping', '-n', '-c', '1', '-W', '1', '-M', 'do', '-s', str(size),
                      INTERNET_IP, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                      text=True)
    out, _ = result.communicate(timeout=10)
    return result.returncode, out


def test_a_vm_with_a_fip_goes_out_with_it_and_no_tunnel(cloud, public, south):
    vm = south.vm(COMPUTE)
    fip = cloud.sdk.network.create_ip(floating_network_id=public.id, port_id=vm.port.id)
    cloud.wait_floating_ip_active(fip.id)
    wait_out(vm)
    internet, net = cloud.physical.internet, cloud.physical
    with Capture(internet.name, 'eth0', 'icmp') as seen, \
            net.capture('icmp', net.port_of(COMPUTE)) as wire, \
            underlay_port(cloud, COMPUTE) as tunnel:
        assert vm.ping(INTERNET_IP, count=3, interval=0.05)
    assert len(echo_requests(seen.lines, fip.floating_ip_address)) == 3, seen.lines
    assert not echo_requests(seen.lines, south.gateway_ip), seen.lines
    assert len(echo_requests(wire.lines, fip.floating_ip_address)) == 3, wire.lines
    assert not [line for line in tunnel.lines if INTERNET_IP in line], tunnel.lines


def test_a_vm_on_a_vlan_network_goes_out_through_snat(cloud, public):
    """The router's interface network is a VLAN network of the operator's, with VMs on a
    gateway chassis (with a floating IP) and on the compute chassis (without), made before
    the router's gateway, as the demo makes them: from the compute chassis the traffic to
    outside still finds the active gateway and leaves as the gateway address."""
    admin = cloud.sdk.network
    network = admin.create_network(name='snat-vlan', provider_network_type='vlan',
                                   provider_physical_network=PHYSNET,
                                   provider_segmentation_id=VLAN_ID)
    subnet = admin.create_subnet(network_id=network.id, ip_version=4, cidr='10.81.0.0/24')
    router = admin.create_router(name='snat-vlan-router')
    admin.add_interface_to_router(router, subnet=subnet.id)
    vms = {}
    for chassis in (GATEWAYS[1], COMPUTE):
        port = admin.create_port(network_id=network.id, fixed_ips=[{'subnet_id': subnet.id}])
        vms[chassis] = cloud.vm(chassis, port)
        cloud.wait_port_active(port.id)
    router = admin.update_router(router, external_gateway_info={'network_id': public.id})
    gateway_ip = router.external_gateway_info['external_fixed_ips'][0]['ip_address']
    fip = admin.create_ip(floating_network_id=public.id, port_id=vms[GATEWAYS[1]].port_id)
    cloud.wait_floating_ip_active(fip.id)
    vm = vms[COMPUTE]
    wait_out(vm)
    internet = cloud.physical.internet
    with Capture(internet.name, 'eth0', 'icmp') as seen:
        assert vm.ping(INTERNET_IP, count=3, interval=0.05)
    assert len(echo_requests(seen.lines, gateway_ip)) == 3, seen.lines


@pytest.fixture(scope='module')
def distributed_cloud(tmp_path_factory):
    """Two chassis, df-api in snat_mode = distributed (a cloud of its own: the mode is
    df-api's, for every router)."""
    _require_root()
    with Cloud(str(tmp_path_factory.mktemp('cloud-dsnat')), physical_networks=(PHYSNET,),
               extra_config={'l3': {'snat_mode': 'distributed'}}) as c:
        c.start(chassis=2)
        yield c


def test_distributed_snat_each_chassis_to_its_own_address_with_no_tunnel(distributed_cloud):
    cloud = distributed_cloud
    south = South(cloud, physical.create_external_network(cloud.sdk.network, PHYSNET))
    vms = {name: south.vm(name) for name in ('ch1', 'ch2')}
    addresses = wait_for(lambda: _chassis_snat_addresses(cloud, south.router.id)
                         if len(_chassis_snat_addresses(cloud, south.router.id)) == 2 else
                         None, 15, what='a network:chassis_snat port per chassis')
    assert len(set(addresses.values()) | {south.gateway_ip}) == 3
    for vm in vms.values():
        wait_out(vm)
    internet = cloud.physical.internet
    for name, vm in vms.items():
        with Capture(internet.name, 'eth0', 'icmp') as seen, \
                underlay_port(cloud, name) as tunnel:
            assert vm.ping(INTERNET_IP, count=3, interval=0.05)
        assert len(echo_requests(seen.lines, addresses[name])) == 3, (name, seen.lines)
        assert not [line for line in tunnel.lines if INTERNET_IP in line], tunnel.lines


def _chassis_snat_addresses(cloud, router_id) -> dict[str, str]:
    """{chassis: address} of the router's network:chassis_snat ports, as the store has them."""
    store = df_store.connect(cloud.store_url)
    return {port['binding:host_id']: port['fixed_ips'][0]['ip_address']
            for port in (r.value for r in store.list('ports'))
            if port['device_owner'] == 'network:chassis_snat'
            and port['device_id'] == router_id}


def test_the_active_gateway_snats_its_own_vms_in_place(cloud, south):
    """A VM on the active gateway chassis goes out there, through no tunnel."""
    wait_out(south.vm(COMPUTE))
    active, _ = south.settled()
    vm = south.vm(active)
    wait_out(vm)
    with underlay_port(cloud, active) as tunnel:
        assert vm.ping(INTERNET_IP, count=3, interval=0.05)
    assert not [line for line in tunnel.lines if INTERNET_IP in line], tunnel.lines
