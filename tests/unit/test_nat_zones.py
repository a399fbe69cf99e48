"""The NAT zones of floating IP associations and of routers SNATing here: the lowest free,
one each, a new one flushed before the bundle whose flows first use it, freed with its
association (a gateway given up), kept across a restart from br-int's flows (nothing
flushed, no flow rewritten), none left: no flows and one error."""
import dataclasses
import logging
import threading
import types

import pytest

from dragonflow.controller import apps
from dragonflow.controller import flows as of
from dragonflow.controller import pipeline as p
from dragonflow.controller.flow_loop import FlowLoop
from dragonflow.controller.nat_zones import FIRST, NatZones
from dragonflow.controller.ovsdb import Interfaces
from dragonflow.controller.reconciler import Reconciler
from tests.flowsim import FlowTableSimulator
from tests.unit.builders import TopologyBuilder, install, only

FIP, FIP2, FIP3 = '172.24.4.100', '172.24.4.101', '172.24.4.102'
NAT_TABLES = {t.number for t in (p.PROVIDER_INGRESS, p.L3, p.FIP_DNAT, p.FIP_DNAT_COMMIT,
                                 p.FIP_TO_PORT, p.FIP_SNAT, p.FIP_SNAT_COMMIT,
                                 p.FIP_TO_EXTERNAL)}


class World:
    """A router with two local VMs (and a third), the first two with floating IPs."""

    def __init__(self):
        self.b = b = TopologyBuilder()
        subnet = b.subnet(b.network('private'), '10.0.0.0/24')
        self.vms = [b.port(subnet, f'10.0.0.{5 + n}', ofport=1 + n) for n in range(3)]
        _, self.external = b.external_network('public', '172.24.4.0/24')
        self.router = b.router('r', subnet)
        b.router_gateway(self.router, self.external, '172.24.4.10')
        b.gateway_macs['net-public', '172.24.4.1'] = 'fa:16:3e:ee:ee:01'
        self.fips = [b.floating_ip(self.external, address, vm, self.router)
                     for address, vm in ((FIP, self.vms[0]), (FIP2, self.vms[1]))]

    def associations(self):
        return self.b.build().nat_associations()


@pytest.fixture
def world():
    return World()


def test_each_association_gets_the_lowest_free_zone(world):
    zones = NatZones()
    assert zones.assign(world.associations()) == {world.fips[0].id: FIRST,
                                                  world.fips[1].id: FIRST + 1}
    assert zones.unflushed() == [FIRST, FIRST + 1]
    zones.flushed([FIRST, FIRST + 1])
    assert zones.assign(world.associations()) == {world.fips[0].id: FIRST,
                                                  world.fips[1].id: FIRST + 1}
    assert zones.unflushed() == []


def test_a_moved_fip_takes_a_zone_other_than_the_one_it_frees_then_that_one_is_reused(world):
    zones = NatZones()
    zones.flushed(zones.assign(world.associations()).values())
    world.b.associate(world.fips[0], world.vms[2], world.router)
    assert zones.assign(world.associations())[world.fips[0].id] == FIRST + 2
    assert zones.unflushed() == [FIRST + 2]
    zones.flushed([FIRST + 2])
    world.b.floating_ip(world.external, FIP3, world.vms[0], world.router)
    assert zones.assign(world.associations())['fip-' + FIP3] == FIRST
    assert zones.unflushed() == [FIRST]  # whatever the first holder left goes


def test_with_no_zone_left_a_fip_gets_none_and_one_error(world, caplog):
    zones = NatZones(zones=range(FIRST, FIRST + 1))
    with caplog.at_level(logging.ERROR):
        assert zones.assign(world.associations()) == {world.fips[0].id: FIRST}
        assert zones.assign(world.associations()) == {world.fips[0].id: FIRST}
    assert [r.getMessage() for r in caplog.records] == [
        f'no NAT zone left for floating IP {world.fips[1].id} ({FIP2}): it gets no flows']
    world.b.associate(world.fips[0])
    zones.assign(world.associations())  # the zone freed
    assert zones.assign(world.associations()) == {world.fips[1].id: FIRST}


def test_a_fip_without_a_zone_has_no_flows_and_is_not_local(world):
    world.b.nat_zones = NatZones(zones=range(FIRST, FIRST + 1))
    topology = world.b.build()
    assert [f.floating_ip.id for f in topology.local_floating_ips()] == [world.fips[0].id]
    nat = [f for f in apps.desired_flows(topology) if f.table in NAT_TABLES]
    assert any(FIP in repr(f) for f in nat)
    assert not any(FIP2 in repr(f) for f in nat)


# The flow loop: the allocator is its own, the flushes go to br-int before the bundles.

class Switch(FlowTableSimulator):
    connected = True

    def __init__(self):
        super().__init__()
        self.calls = []

    def apply(self, deletes, adds, then=None):
        self.calls.append(('bundle', tuple(deletes), tuple(adds)))
        return super().apply(deletes, adds, then)

    def flush_conntrack_zones(self, zones):
        self.calls.append(('flush', list(zones)))
        super().flush_conntrack_zones(zones)

    def limit_packet_ins(self, rate, burst):
        pass

    def take(self):
        calls, self.calls = self.calls, []
        return calls


class Cache:
    """The builder's objects, as the store watcher would have cached them."""

    def __init__(self, builder):
        self.b, self.lock, self.loaded, self.needs_refill, self.revision = \
            builder, threading.Lock(), True, False, 1

    @property
    def objects(self):
        b = self.b
        return {'networks': b.networks, 'subnets': b.subnets, 'ports': b.ports,
                'routers': b.routers, 'chassis': b.chassis, 'floatingips': b.floating_ips,
                'security_groups': b.security_groups, 'security_group_rules': b.rules}

    def set_local_ports(self, port_ids):
        pass


def loop(world, switch) -> FlowLoop:
    nobody = types.SimpleNamespace(ports_confirmed=lambda *_: None, wake=lambda: None,
                                   ask_refill=lambda: None, release_held=lambda *_: None)
    ovs = types.SimpleNamespace(interfaces=lambda: Interfaces(
        dict(world.b.ofports), {}, dict(world.b.patch_ofports)))
    supervisor = types.SimpleNamespace(stop=threading.Event(), fail=lambda *_: None)
    return FlowLoop('chassis-1', Cache(world.b), ovs, switch, ['vxlan'], nobody, nobody,
                    nobody, supervisor, gateway_macs=lambda: dict(world.b.gateway_macs))


def zones_in(adds) -> set:
    return {a.zone for f in adds if f.table == p.FIP_DNAT.number
            for a in f.actions if isinstance(a, of.Conntrack)}


def test_the_loop_flushes_new_zones_before_the_bundle_that_uses_them(world):
    switch = Switch()
    controller = loop(world, switch)
    controller.turn()
    (flush, zones), (bundle, _, adds) = switch.take()
    assert (flush, bundle) == ('flush', 'bundle')
    assert zones == [FIRST, FIRST + 1] and zones_in(adds) == {FIRST, FIRST + 1}
    world.b.associate(world.fips[0], world.vms[2], world.router)
    controller.wake()
    controller.turn()
    (flush, zones), (bundle, _, adds) = switch.take()
    assert (flush, zones) == ('flush', [FIRST + 2]) and zones_in(adds) == {FIRST + 2}
    controller.wake()
    controller.turn()
    assert switch.take() == []


def test_a_restarted_loop_keeps_every_zone_flushes_nothing_and_rewrites_no_flow(world):
    switch = Switch()
    loop(world, switch).turn()
    world.b.associate(world.fips[0], world.vms[2], world.router)  # FIP2 keeps FIRST + 1
    first = loop(world, switch)
    first.wake()
    first.turn()
    flows = dict(switch.flows)
    switch.take()
    restarted = loop(world, switch)
    restarted.turn()
    assert switch.take() == []
    assert switch.flows == flows
    assert restarted.sent.nat_zones == {world.fips[0].id: FIRST + 2,
                                        world.fips[1].id: FIRST + 1}


def test_a_fip_moved_while_the_controller_was_down_gets_a_new_zone_flushed(world):
    switch = Switch()
    loop(world, switch).turn()
    switch.take()
    world.b.associate(world.fips[0], world.vms[2], world.router)
    restarted = loop(world, switch)
    restarted.turn()
    calls = switch.take()
    assert calls[0] == ('flush', [FIRST + 2])
    assert restarted.sent.nat_zones == {world.fips[0].id: FIRST + 2,
                                        world.fips[1].id: FIRST + 1}


# Routers SNATing here: a zone each, as a floating IP association has.

def holding(world) -> World:
    """This chassis holds the router's gateway (the first of its gateway_chassis)."""
    world.b.is_gateway = True
    world.b.remote_chassis('chassis-2', '172.31.0.12', gateway=True)
    world.b.gateway_chassis(world.router, 'chassis-1', 'chassis-2')
    return world


def test_a_router_snatting_here_gets_a_zone_keyed_by_its_id(world):
    zones = NatZones()
    assigned = zones.assign(holding(world).associations())
    assert assigned == {world.fips[0].id: FIRST, world.fips[1].id: FIRST + 1,
                        world.router.id: FIRST + 2}
    assert zones.unflushed() == [FIRST, FIRST + 1, FIRST + 2]
    topology = dataclasses.replace(world.b.build(), nat_zones=assigned)
    assert topology.local_gateway(world.router).nat_zone == FIRST + 2


def test_a_router_without_snat_needs_no_zone(world):
    holding(world)
    world.router.external_gateway_info.enable_snat = False
    topology = world.b.build()
    assert world.router.id not in topology.nat_zones
    assert topology.local_gateway(world.router) is not None  # routed out all the same


def test_a_gateway_given_up_frees_its_zone_and_taken_again_gets_one_flushed(world):
    zones = NatZones()
    holding(world)
    zones.flushed(zones.assign(world.associations()).values())
    world.b.uplinks_down.add('physnet1')  # it cannot even stand by
    assert world.router.id not in zones.assign(world.associations())
    world.b.uplinks_down.clear()
    again = zones.assign(world.associations())[world.router.id]
    assert zones.unflushed() == [again]  # the connections it had are the next holder's


def test_a_standby_has_a_zone_flushed_and_keeps_it_when_it_takes_over(world):
    """Standing by (chassis-2 ahead, alive), it SNATs what a sender whose BFD saw chassis-2
    die sends it: in a zone of its own, flushed first; taking the gateway keeps it (those
    connections go on)."""
    zones = NatZones()
    holding(world)
    world.b.gateway_chassis(world.router, 'chassis-2', 'chassis-1')
    zone = zones.assign(world.associations())[world.router.id]
    assert zone in zones.unflushed()
    topology = dataclasses.replace(world.b.build(), nat_zones={world.router.id: zone})
    assert topology.local_gateway(world.router) is None
    assert only(topology.standby_gateways()).nat_zone == zone
    zones.flushed([zone])
    world.b.liveness('chassis-2', live=False)
    assert zones.assign(world.associations())[world.router.id] == zone
    assert zone not in zones.unflushed()


def test_a_restart_keeps_the_routers_zone_from_its_snat_flows(world):
    holding(world)
    topology = world.b.build()
    reconciler = Reconciler(FlowTableSimulator())
    install(topology, reconciler)
    restarted = NatZones(installed=lambda: reconciler.installed)
    assert restarted.assign(world.associations()) == topology.nat_zones
    assert restarted.unflushed() == []
