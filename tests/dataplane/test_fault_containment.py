"""Nothing one tenant sends stops a chassis' controller, a restart rewrites no flow, and
br-int's own settings are restored when someone changes them: checked on real Open vSwitch
with real packets."""
import re
import time

from dragonflow.lab.cloud import wait_for
from tests.dataplane.conftest import log_count, restart_under_ping
from tests.dataplane.test_routing import reachable_within


def test_a_port_given_the_gateway_address_does_not_stop_the_chassis(cloud, topo):
    """A VM port holding the gateway address of a DHCP-enabled subnet with no router made
    two apps want one flow, and the controller's loop died: later ports never went ACTIVE."""
    subnet = topo.subnet('10.45.0.0/24')
    squatter = topo.vm(subnet, 'ch1', ip=subnet.gateway_ip)
    a, b = topo.vm(subnet, 'ch1'), topo.vm(subnet, 'ch2')
    assert reachable_within(a, b.ip, 3)
    assert reachable_within(b, squatter.ip, 3)


def test_an_app_that_raises_for_one_port_leaves_the_others_served(cloud, topo, monkeypatch):
    """port_security made (by a test hook) to fail for one port: that port's flows of that app
    are left out, and the chassis goes on serving every other port."""
    s1, s2 = topo.subnet('10.46.1.0/24'), topo.subnet('10.46.2.0/24')
    topo.router(s1, s2)
    far = topo.vm(s2, 'ch1')
    poisoned = topo.port(s1)
    chassis = cloud.chassis['ch2']
    failed = log_count(chassis, f'fault injected in port_security for {poisoned.id}')
    monkeypatch.setenv('DRAGONFLOW_INJECT_FAULT', f'port_security:{poisoned.id}')
    chassis.kill_controller()
    chassis.start_controller()
    try:
        victim = cloud.vm('ch2', poisoned)
        cloud.wait_port_active(poisoned.id)
        healthy = topo.vm(s1, 'ch2')
        assert reachable_within(healthy, far.ip, 3)
        assert not victim.ping(far.ip, count=2, timeout=0.5)  # it may not send at all
        wait_for(lambda: log_count(chassis, f'fault injected in port_security for '
                                            f'{poisoned.id}') > failed, 5,
                 what='the failure logged')
    finally:
        monkeypatch.delenv('DRAGONFLOW_INJECT_FAULT')
        chassis.kill_controller()
        chassis.start_controller()
    assert reachable_within(victim, far.ip, 3)  # a controller without the hook serves it


def test_a_restart_under_traffic_loses_nothing_and_rewrites_no_flow(cloud, topo):
    s1, s2 = topo.subnet('10.47.1.0/24'), topo.subnet('10.47.2.0/24')
    topo.router(s1, s2)
    a, b = topo.vm(s1, 'ch1'), topo.vm(s2, 'ch2')
    assert reachable_within(a, b.ip, 3)
    chassis = cloud.chassis['ch1']
    before, at = _flow_ages(chassis), time.monotonic()
    restart_under_ping(chassis, a, b.ip)
    after, elapsed = _flow_ages(chassis), time.monotonic() - at
    assert after.keys() == before.keys()
    rewritten = [flow for flow, age in after.items() if age < before[flow] + elapsed - 1.0]
    assert not rewritten, rewritten  # a flow the restart had added again would be younger


def test_br_int_settings_the_tunnel_port_and_the_meter_are_restored(cloud, topo):
    subnet = topo.subnet('10.48.0.0/24')
    a, b = topo.vm(subnet, 'ch1'), topo.vm(subnet, 'ch2')
    assert reachable_within(a, b.ip, 3)
    ovs = cloud.chassis['ch1'].ovs
    tunnel = f'tun-{cloud.tunnel_type}'
    assert 'meter=controller' in ovs.ofctl('dump-meters')
    ovs.vsctl('del-port', 'br-int', tunnel)
    ovs.vsctl('set-fail-mode', 'br-int', 'standalone')
    ovs.ofctl('del-meter', 'meter=controller')
    assert 'meter=controller' not in ovs.ofctl('dump-meters')
    controller = ovs.vsctl('get-controller', 'br-int').strip()
    ovs.vsctl('set-controller', 'br-int', 'tcp:127.0.0.1:1')
    ovs.vsctl('set', 'Bridge', 'br-int', 'protocols=OpenFlow10')
    wait_for(lambda: ovs.vsctl('get-controller', 'br-int').strip() == controller
             and ovs.vsctl('get', 'Bridge', 'br-int', 'protocols').strip() == '[OpenFlow13]',
             10, what='br-int connected to its controller again')
    wait_for(lambda: tunnel in ovs.vsctl('list-ports', 'br-int').split()
             and ovs.vsctl('get-fail-mode', 'br-int').strip() == 'secure'
             and re.search(r'meter=controller pktps burst.*\ntype=drop rate=500 burst_size=100',
                           ovs.ofctl('dump-meters')), 10, what='br-int restored by the controller')
    assert reachable_within(a, b.ip, 5)


def _flow_ages(chassis) -> dict[str, float]:
    """Each flow (table, priority, match, actions) with its duration in seconds."""
    ages = {}
    for line in chassis.dump_flows().splitlines():
        duration = re.search(r'duration=([\d.]+)s', line)
        if duration:
            flow = re.sub(r'(cookie|duration|n_packets|n_bytes|idle_age|hard_age)=[^,]*, ?',
                          '', line).strip()
            ages[flow] = float(duration[1])
    return ages
