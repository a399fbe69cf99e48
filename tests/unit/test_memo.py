"""Flows kept from pass to pass (memo.py) are the flows a pass would build from scratch: a walk
of random changes made as the cache makes them (an object replaced, never edited; plugs and
unplugs), checked against a fresh build at every step."""
import random

import pytest

from dragonflow.controller import apps, memo
from dragonflow.controller.topology import Topology
from dragonflow.model import FixedIP, Port, SecurityGroupRule
from tests.unit.builders import rich_topology

STEPS = 150


def _fresh(topology):
    kept = memo._MEMO
    memo._MEMO = memo._Memo()
    try:
        return apps.desired_flows(topology)
    finally:
        memo._MEMO = kept


class World:
    """Objects by table as the cache holds them, and the plugged interfaces."""

    def __init__(self, seed):
        self.random = random.Random(seed)
        builder = rich_topology()
        builder.security_group('web', ('ingress', {'protocol': 'tcp', 'port_range_min': 22,
                                                   'port_range_max': 22,
                                                   'remote_group_id': 'sg-web'}))
        first = builder.build()
        self.chassis_id, self.tunnel = first.chassis_id, first.tunnel_ofport
        self.objects = {'networks': first.networks, 'subnets': first.subnets,
                        'ports': first.ports, 'routers': first.routers,
                        'chassis': first.chassis, 'security_groups': first.security_groups,
                        'security_group_rules': first.security_group_rules}
        self.ofports = dict(first.ofports)
        self.keys = iter(range(1000, 100000))

    def topology(self) -> Topology:
        return Topology.from_objects(self.chassis_id, self.objects, dict(self.ofports),
                                     self.tunnel)

    def replace(self, table, obj, **changes):
        self.objects[table][obj.id] = type(obj).model_validate({**obj.model_dump(), **changes})

    def pick(self, table):
        return self.random.choice(sorted(self.objects[table].values(), key=lambda o: o.id))

    def change(self) -> str:
        r, ports = self.random, self.objects['ports']
        port = self.pick('ports')
        kind = r.choice(['mac', 'address', 'admin', 'security', 'groups', 'binding', 'plug',
                         'unplug', 'new port', 'delete port', 'routes', 'interface',
                         'chassis', 'rule', 'new rule', 'delete rule', 'dhcp', 'pairs'])
        if kind == 'mac':
            self.replace('ports', port, mac_address=f'fa:16:3e:77:{r.randrange(256):02x}:01')
        elif kind == 'address':
            subnet_id = port.fixed_ips[0].subnet_id
            ip = f'10.0.{r.choice((1, 2))}.{r.randrange(10, 250)}'
            self.replace('ports', port, fixed_ips=[FixedIP(subnet_id=subnet_id, ip_address=ip)])
        elif kind == 'admin':
            self.replace('ports', port, admin_state_up=not port.admin_state_up)
        elif kind == 'security':
            self.replace('ports', port, port_security_enabled=not port.port_security_enabled)
        elif kind == 'groups':
            groups = sorted(self.objects['security_groups'])
            self.replace('ports', port, security_groups=r.sample(groups, r.randrange(3)))
        elif kind == 'binding':
            self.replace('ports', port, binding_host_id=r.choice(('chassis-2', '', 'gone')))
        elif kind == 'plug':
            self.ofports[port.id] = r.randrange(1, 60)
        elif kind == 'unplug' and self.ofports:
            del self.ofports[r.choice(sorted(self.ofports))]
        elif kind == 'new port':
            subnet = self.pick('subnets')
            new = Port(id=f'port-new-{next(self.keys)}', key=next(self.keys),
                       network_id=subnet.network_id, mac_address='fa:16:3e:66:00:01',
                       fixed_ips=[FixedIP(subnet_id=subnet.id, ip_address='10.0.1.200')],
                       security_groups=['sg-open'])
            ports[new.id] = new
            if r.random() < 0.5:
                self.ofports[new.id] = r.randrange(1, 60)
        elif kind == 'delete port' and not port.is_router_interface:
            del ports[port.id]
            self.ofports.pop(port.id, None)
        elif kind == 'routes':
            router = self.pick('routers')
            self.replace('routers', router, routes=[
                {'destination': f'192.168.{r.randrange(4)}.0/24', 'nexthop': '10.0.2.9'}])
        elif kind == 'interface':
            router = self.pick('routers')
            self.replace('routers', router, interfaces=router.interfaces[1:])
        elif kind == 'chassis':
            chassis = self.pick('chassis')
            self.replace('chassis', chassis, tunnel_ip=f'172.31.0.{r.randrange(20, 40)}')
        elif kind in ('rule', 'new rule'):
            group = self.pick('security_groups')
            rule = SecurityGroupRule(
                id=f'rule-{next(self.keys)}', key=next(self.keys), security_group_id=group.id,
                direction=r.choice(('ingress', 'egress')), protocol=r.choice(('tcp', 'udp')),
                port_range_min=80, port_range_max=80 + r.randrange(20),
                remote_group_id=r.choice((group.id, None)))
            if kind == 'rule' and self.objects['security_group_rules']:
                rule = SecurityGroupRule.model_validate(
                    {**rule.model_dump(), 'id': self.pick('security_group_rules').id})
            self.objects['security_group_rules'][rule.id] = rule
        elif kind == 'delete rule' and self.objects['security_group_rules']:
            del self.objects['security_group_rules'][self.pick('security_group_rules').id]
        elif kind == 'dhcp':
            subnet = self.pick('subnets')
            self.replace('subnets', subnet, enable_dhcp=not subnet.enable_dhcp)
        elif kind == 'pairs':
            self.replace('ports', port, allowed_address_pairs=[
                {'ip_address': f'10.0.1.{r.randrange(1, 250)}'}])
        return kind


@pytest.mark.parametrize('seed', range(4))
def test_kept_flows_are_the_flows_a_pass_would_build(seed):
    world = World(seed)
    for step in range(STEPS):
        kind = world.change()
        topology = world.topology()
        kept = apps.desired_flows(topology)
        assert set(kept) == set(_fresh(topology)), f'step {step}: {kind}'


def test_a_unit_is_built_once_while_its_objects_stay():
    world = World(0)
    built = []
    original = memo._MEMO.result

    def counting(function, args, make):
        return original(function, args, lambda: built.append(function) or make())
    memo._MEMO.result = counting
    try:
        apps.desired_flows(world.topology())
        first = len(built)
        apps.desired_flows(world.topology())
        assert first > 0 and len(built) == first  # nothing changed, nothing built
        port = sorted(world.ofports)[0]
        world.replace('ports', world.objects['ports'][port], admin_state_up=False)
        apps.desired_flows(world.topology())
        assert 0 < len(built) - first < first / 4
    finally:
        del memo._MEMO.result


def test_what_a_pass_did_not_ask_for_is_forgotten_after_the_next():
    world = World(0)
    apps.desired_flows(world.topology())
    world.objects['ports'].clear()
    world.ofports.clear()
    apps.desired_flows(world.topology())
    apps.desired_flows(world.topology())
    kept = memo._MEMO._this.values()
    assert not any(isinstance(arg, Port) for args, _ in kept for arg in args)
