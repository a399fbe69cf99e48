"""East-west routing on one chassis, in OpenFlow, checked with real packets."""
import hashlib
import json
import os
import re
import time

from dragonflow.controller import apps
from dragonflow.controller.reconciler import index
from dragonflow.lab import netns
from dragonflow.lab.cloud import wait_for
from tests.dataplane.conftest import Pinger

CHANGE_DEADLINE = 1.0


def reachable_within(vm, ip, deadline: float) -> bool:
    """True once a ping gets through; each attempt is started fresh (see harness notes)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if vm.ping(ip, count=1, timeout=0.2):
            return True
    return False


def test_same_subnet_and_routed_with_ttl_decrement_and_no_router_namespace(cloud, topo):
    s1, s2 = topo.subnet('10.1.1.0/24'), topo.subnet('10.1.2.0/24')
    topo.router(s1, s2)
    a, b, c = topo.vm(s1), topo.vm(s1), topo.vm(s2)
    assert a.ping(b.ip, count=3)
    assert a.ping(c.ip, count=3)
    assert a.ping_ttl(b.ip) == 64
    assert a.ping_ttl(c.ip) == 63  # one router hop, each way
    ours = ({cloud.prefix + '-' + name for name in cloud.chassis} | {vm.name for vm in cloud.vms}
            | {cloud.underlay_ns})
    assert set(netns.names(cloud.prefix)) == ours
    assert not [name for name in netns.names('') if 'router' in name]
    chassis_ns = cloud.chassis['ch1'].netns
    assert s1.gateway_ip not in netns.run('ip', '-o', 'addr', netns=chassis_ns)


def test_subnet_reachable_only_while_on_the_router(topo):
    s1, s2, s3 = (topo.subnet(f'10.2.{i}.0/24') for i in (1, 2, 3))
    router = topo.router(s1, s2)
    a, far = topo.vm(s1), topo.vm(s3)
    assert not a.ping(far.ip, count=2, timeout=0.5)
    topo.sdk.network.add_interface_to_router(router, subnet=s3.id)
    assert reachable_within(a, far.ip, CHANGE_DEADLINE)
    topo.sdk.network.remove_interface_from_router(router, subnet=s3.id)
    wait_for(lambda: not a.ping(far.ip, count=1, timeout=0.3), CHANGE_DEADLINE,
             what='the subnet off the router unreachable')
    assert not a.ping(far.ip, count=2, timeout=0.5)


def test_deleting_a_port_removes_every_flow_of_its_key(cloud, topo):
    s1, s2 = topo.subnet('10.3.1.0/24'), topo.subnet('10.3.2.0/24')
    topo.router(s1, s2)
    a, b = topo.vm(s1), topo.vm(s2)
    port = topo.sdk.network.get_port(b.port.id)
    key = _port_key(cloud, port.id)
    assert _flows_mentioning(cloud, key, port.mac_address, b.ip)
    topo.sdk.network.delete_port(port.id)
    wait_for(lambda: not _flows_mentioning(cloud, key, port.mac_address, b.ip), 2,
             what='flows of the deleted port to go')
    assert not a.ping(b.ip, count=1, timeout=0.5)


def test_tcp_across_the_router(topo, tmp_path):
    s1, s2 = topo.subnet('10.4.1.0/24'), topo.subnet('10.4.2.0/24')
    topo.router(s1, s2)
    sender, receiver = topo.vm(s1), topo.vm(s2)
    sent, received = tmp_path / 'sent', tmp_path / 'received'
    sent.write_bytes(os.urandom(10 * 1024 * 1024))
    with open(received, 'wb') as out:
        listener = receiver.popen('nc', '-l', '-N', '5001', stdout=out)
        try:
            wait_for(lambda: ':5001' in receiver.exec('ss', '-ltn'), 5, what='nc listening')
            with open(sent, 'rb') as data:
                sender.popen('nc', '-N', receiver.ip, '5001', stdin=data).wait(60)
            listener.wait(60)
        finally:
            listener.kill()
    assert _sha256(received) == _sha256(sent)


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_controller_restart_drops_no_packet_and_converges_exactly(cloud, topo):
    s1, s2 = topo.subnet('10.5.1.0/24'), topo.subnet('10.5.2.0/24')
    topo.router(s1, s2)
    a, b = topo.vm(s1), topo.vm(s2)
    stale = topo.vm(s2)
    chassis = cloud.chassis['ch1']
    stale_key = _port_key(cloud, stale.port.id)
    before = _normalized_flows(chassis)
    with Pinger(a, b.ip, interval=0.01) as ping:
        wait_for(lambda: ping.replies >= 20, 5, what='the ping under way')
        chassis.kill_controller()
        stale.detach()
        topo.sdk.network.delete_port(stale.port.id)  # changed while the controller is down
        chassis.start_controller()
        wait_for(lambda: not _flows_mentioning(cloud, stale_key, stale.port.mac_address,
                                               stale.ip),
                 5, what='stale flows of the port deleted meanwhile to go')
        replies = ping.replies
        wait_for(lambda: ping.replies >= replies + 20, 5, what='the ping past the reconcile')
        ping.stop()
    assert ping.lost() == 0, ping.lines[-3:]  # the request in flight at the stop is no loss
    after = _normalized_flows(chassis)
    removed = before - after
    assert removed and all(_mentions(line, stale_key, stale.port.mac_address, stale.ip)
                           for line in removed)
    added = after - before  # only flows that listed the deleted port, rewritten without it
    assert {_identity(line) for line in added} <= {_identity(line) for line in removed}
    assert len(after) == len(index(apps.desired_flows(_topology_now(cloud, chassis))))


def _port_key(cloud, port_id):
    from dragonflow import store
    return store.connect(cloud.store_url).get('ports', port_id).value['key']


def _normalized_flows(chassis) -> set[str]:
    # A long dump comes in several replies, each with its own header line.
    lines = [line for line in chassis.dump_flows().splitlines() if 'cookie=' in line]
    return {re.sub(r'(duration|n_packets|n_bytes|idle_age|hard_age)=[^,]*, ?', '', line).strip()
            for line in lines}


def _identity(line: str) -> str:
    """A dumped flow's table, priority and match: what the switch identifies it by."""
    return re.sub(r'cookie=\S+ ', '', line.split(' actions=')[0])


def _mentions(line, key, mac, ip=None) -> bool:
    return bool(re.search(rf'reg[67]=0x{key:x}\b|0x{key:x}->reg[67]', line)
                or mac in line or (ip and re.search(rf'\b{re.escape(ip)}\b', line)))


def _flows_mentioning(cloud, key, mac, ip, chassis='ch1') -> list[str]:
    return [line for line in cloud.chassis[chassis].dump_flows().splitlines()
            if _mentions(line, key, mac, ip)]


def _topology_now(cloud, chassis):
    """The topology as the controller should see it, rebuilt from the store and OVSDB."""
    from dragonflow import store
    from dragonflow.controller.cache import Cache
    from dragonflow.controller.ovsdb import tunnel_port_name
    from dragonflow.controller.topology import Topology
    ofports = {}
    for row in json.loads(chassis.ovs.vsctl('--format=json', '--columns=name,external_ids,ofport',
                                            'list', 'Interface'))['data']:
        name, external_ids, ofport = row[0], dict(row[1][1]), row[2]
        ofports[external_ids.get('iface-id', name)] = ofport
    cache = Cache(chassis.name)
    cache.set_local_ports({k for k in ofports if not k.startswith(('tun-', 'br-', 'ul0'))})
    cache.load(*store.connect(cloud.store_url).snapshot())
    return Topology.from_objects(chassis.name, cache.objects, ofports,
                                 ofports[tunnel_port_name(cloud.tunnel_type)])
