"""A gateway chassis' readiness and failback (gateway_keeper.py) against a real (sqlite) store
and a simulated set of BFD ports: which peers see it withdrawn (cpath_down), and the
gateway_chassis order it records before it comes back."""
import dataclasses
import threading

import pytest

from dragonflow import store as df_store
from dragonflow.controller.gateway_keeper import SETTLE_SECONDS, GatewayKeeper
from dragonflow.controller.ovsdb import LivenessPort
from dragonflow.model import Router
from tests.unit.builders import TopologyBuilder
from tests.unit.clock import Clock
from tests.unit.test_controller import Outage

ME, PEER, OTHER = 'gw-1', 'gw-2', 'gw-3'
COMPUTE, COMPUTE2 = 'compute-1', 'compute-2'


class Ports:
    """This chassis' BFD ports as the switch has them: alive as the test says, held as the
    bridge keeper sets them from the keeper's decision (each time the keeper wakes it)."""

    def __init__(self):
        self.ports: dict[str, LivenessPort] = {}
        self.keeper = None

    def add(self, peer, alive=True, held=None):
        """A port made now; ``held`` None: as the keeper decides for a new port."""
        if held is None:
            held = self.keeper.cpath_down(peer, None)
        self.ports[peer] = LivenessPort(len(self.ports) + 1, alive, held)

    def alive(self, peer, alive=True):
        self.ports[peer] = self.ports[peer]._replace(alive=alive)

    def apply(self):
        for peer, port in self.ports.items():
            self.ports[peer] = port._replace(held=self.keeper.cpath_down(peer, port.held))

    def held(self) -> set[str]:
        return {peer for peer, port in self.ports.items() if port.held}


class World:
    def __init__(self, path):
        self.store = Outage(df_store.connect(f'sqlite:///{path}/nb.db'))
        self.clock = Clock()
        self.ports = Ports()
        self.keeper = GatewayKeeper(ME, self.store, True, threading.Event(),
                                    wake_bridge=self.ports.apply,
                                    liveness=lambda: dict(self.ports.ports), clock=self.clock)
        self.ports.keeper = self.keeper
        b = self.builder = TopologyBuilder(ME)
        b.is_gateway = True
        for name, ip in ((PEER, '172.31.0.12'), (OTHER, '172.31.0.13'),
                         (COMPUTE, '172.31.0.21'), (COMPUTE2, '172.31.0.22')):
            b.remote_chassis(name, ip, gateway=name.startswith('gw'))
        _, self.external = b.external_network('public', '172.24.4.0/24')
        self.routers = {}

    def router(self, name, order, host):
        """A router with a gateway, its gateway chassis in ``order``, a VM on ``host``."""
        b = self.builder
        subnet = b.subnet(b.network(f'{name}-net'), f'10.{len(self.routers)}.0.0/24')
        router = b.router(name, subnet)
        b.router_gateway(router, self.external, f'172.24.4.{10 + len(self.routers)}')
        router.gateway_chassis = list(order)
        b.port(subnet, f'10.{len(self.routers)}.0.5', **{'binding:host_id': host})
        self.store.put(Router.table, router.id, router.to_doc())
        self.routers[name] = router
        self._cached(router.id)
        return router

    def _cached(self, router_id):
        record = self.store.get(Router.table, router_id)
        self.builder.routers[router_id] = Router.from_doc(record.value, record.revision)

    def cache_catches_up(self):
        """The store watcher brings every router's newest version into the cache."""
        for router_id in self.builder.routers:
            self._cached(router_id)

    def order(self, name) -> list[str]:
        return self.store.get(Router.table, self.routers[name].id).value['gateway_chassis']

    def confirmed(self, **changes):
        """The switch confirmed the flows of the topology as it is now."""
        self.keeper.confirmed(dataclasses.replace(self.builder.build(), **changes))
        self.keeper.turn()

    def turn(self):
        self.keeper.turn()


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


@pytest.fixture
def withdrawn(world):
    """gw-1 was withdrawn (an uplink down) while gw-2, behind it for r1, took r1 over."""
    world.router('r1', [ME, PEER], COMPUTE)
    for peer in (PEER, COMPUTE):
        world.ports.add(peer, held=True)
    world.confirmed(uplinks_down=frozenset({'physnet1'}))
    assert world.ports.held() == {PEER, COMPUTE}
    return world


def test_a_gateway_is_withdrawn_from_every_peer_until_its_flows_are_in(world):
    world.router('r1', [ME, PEER], COMPUTE)
    world.keeper.switch_read(had_flows=False)  # a fresh br-int: no flows, no topology yet
    world.turn()
    world.ports.add(PEER, alive=False)
    world.ports.add(COMPUTE, alive=False)
    assert world.ports.held() == {PEER, COMPUTE}
    world.confirmed()
    assert world.ports.held() == {PEER, COMPUTE}  # gw-2's session may still come up
    world.clock.now += SETTLE_SECONDS  # it had its time: no peer serves r1
    world.turn()
    assert world.ports.held() == set()
    assert world.order('r1') == [ME, PEER]  # nothing taken from anyone: no reorder


def test_an_empty_switch_withdraws_a_serving_gateway_until_its_flows_are_in_again(world):
    world.router('r1', [ME, PEER], COMPUTE)
    world.ports.add(PEER, held=False)
    world.ports.add(COMPUTE, held=False)
    world.confirmed()
    assert world.ports.held() == set()
    world.keeper.switch_read(had_flows=False)  # ovs-vswitchd restarted
    world.turn()
    assert world.ports.held() == {PEER, COMPUTE}


def test_a_restarted_controller_leaves_the_ports_of_a_serving_switch_as_they_are(world):
    world.keeper.switch_read(had_flows=True)
    world.turn()  # no topology confirmed yet: nothing decided
    assert world.keeper.cpath_down(PEER, False) is False
    assert world.keeper.cpath_down(PEER, True) is True
    # A new port serves: withdrawn, its peer's routers would be failed back for nothing.
    assert world.keeper.cpath_down(COMPUTE, None) is False


def test_a_new_router_of_two_serving_gateways_keeps_its_order(world):
    """What df-api ordered stays: neither gateway withdraws, whatever its sessions do."""
    world.router('r0', [ME, PEER], COMPUTE)
    world.ports.add(PEER, held=False)
    world.ports.add(COMPUTE, held=False)
    world.confirmed()
    world.router('r1', [ME, OTHER], COMPUTE2)  # new peers, their ports not made yet
    world.confirmed()
    assert world.keeper.decision().held == frozenset()
    world.ports.add(OTHER, alive=False)  # made: its session is not up yet
    world.ports.add(COMPUTE2, alive=False)
    world.turn()
    assert world.ports.held() == set()
    world.ports.alive(OTHER)
    world.ports.alive(COMPUTE2)
    world.clock.now += SETTLE_SECONDS
    world.confirmed()
    assert world.ports.held() == set()
    assert world.order('r1') == [ME, OTHER] and world.order('r0') == [ME, PEER]


def test_a_gateway_behind_a_new_router_never_moves_either(world):
    """The second of a new router's list sees the first alive: it is its backup, with no
    write; no port of it is ever withdrawn."""
    world.router('r0', [OTHER, ME], COMPUTE2)
    world.ports.add(OTHER, held=False)
    world.ports.add(COMPUTE2, held=False)
    world.confirmed()
    revision = world.store.revision()
    world.router('r1', [PEER, ME], COMPUTE)
    world.confirmed()
    world.ports.add(PEER)
    world.ports.add(COMPUTE)
    world.confirmed()
    assert world.ports.held() == set()
    assert world.store.revision() == revision + 1  # the router's own put, nothing else


def test_a_switch_that_starts_again_withdraws_the_gateway_at_once(world):
    """Told by the bridge keeper before it writes the ports of a switch it lets start: no
    wait for the keeper's thread."""
    world.router('r1', [ME, PEER], COMPUTE)
    world.ports.add(PEER, held=False)
    world.ports.add(COMPUTE, held=False)
    world.confirmed()
    assert world.keeper.flows_in()
    world.keeper.switch_restarted()
    assert world.keeper.cpath_down(PEER, False) is True
    assert world.keeper.cpath_down(OTHER, None) is True  # a port made now too
    assert not world.keeper.flows_in()
    assert world.ports.held() == {PEER, COMPUTE}  # the bridge keeper was woken


def test_a_decision_made_before_the_switch_started_again_is_not_published(world):
    world.router('r1', [ME, PEER], COMPUTE)
    world.ports.add(PEER, held=False)
    world.ports.add(COMPUTE, held=False)
    world.confirmed()
    read = world.keeper.liveness

    def restarting():  # the switch starts again while the keeper decides from before
        world.keeper.liveness = read
        world.keeper.switch_restarted()
        return read()
    world.keeper.liveness = restarting
    world.turn()
    assert world.keeper.decision().hold_all
    assert world.ports.held() == {PEER, COMPUTE}


def test_a_chassis_that_is_no_gateway_has_its_flows_in_or_not_too(tmp_path):
    keeper = GatewayKeeper(COMPUTE, None, False, threading.Event(), wake_bridge=lambda: None,
                           liveness=dict)
    assert not keeper.flows_in()
    keeper.confirmed(object())
    assert keeper.flows_in()
    keeper.switch_restarted()
    assert not keeper.flows_in() and keeper.cpath_down(ME, None) is False


def test_a_chassis_that_is_no_gateway_is_never_withdrawn(tmp_path):
    keeper = GatewayKeeper(COMPUTE, None, False, threading.Event(), wake_bridge=lambda: None,
                           liveness=dict)
    keeper.switch_read(had_flows=False)
    keeper.turn()
    assert keeper.cpath_down(ME, None) is False
    assert keeper.cpath_down(ME, True) is False


def test_an_uplink_down_withdraws_the_gateway_from_every_peer(world):
    world.router('r1', [ME, PEER], COMPUTE)
    world.ports.add(PEER, held=False)
    world.ports.add(COMPUTE, held=False)
    world.confirmed()
    world.confirmed(uplinks_down=frozenset({'physnet1'}))
    assert world.ports.held() == {PEER, COMPUTE}
    assert world.order('r1') == [ME, PEER]


def test_coming_back_behind_the_peer_that_took_over(withdrawn):
    world = withdrawn
    world.confirmed()  # the uplink is back; gw-2 serves r1
    assert world.order('r1') == [PEER, ME]
    assert world.ports.held() == {PEER, COMPUTE}  # until the cache shows the new order
    world.confirmed()
    assert world.order('r1') == [PEER, ME]  # written once
    world.cache_catches_up()
    world.confirmed()
    assert world.ports.held() == set()  # back, as gw-2's backup: r1 stays on gw-2


def test_a_gateway_behind_the_peer_serving_comes_back_without_a_write(world):
    world.router('r1', [PEER, ME], COMPUTE)
    for peer in (PEER, COMPUTE):
        world.ports.add(peer, held=True)
    revision = world.store.revision()
    world.confirmed()
    assert world.ports.held() == set()
    assert world.store.revision() == revision


def test_a_serving_gateway_with_its_backup_alive_keeps_serving(world):
    world.router('r1', [ME, PEER], COMPUTE)
    world.ports.add(PEER, held=False)
    world.ports.add(COMPUTE, held=False)
    world.confirmed()
    world.builder.port(world.builder.subnets[world.routers['r1'].interfaces[0].subnet_id],
                       '10.0.0.6', **{'binding:host_id': COMPUTE2})  # a VM on a new chassis
    world.confirmed()
    world.ports.add(COMPUTE2)
    assert world.ports.held() == set()
    assert world.order('r1') == [ME, PEER]


def test_the_store_unreachable_keeps_the_gateway_withdrawn_where_a_peer_serves(withdrawn):
    world = withdrawn
    world.store.down = True
    world.confirmed()
    assert world.ports.held() == {PEER, COMPUTE}  # gw-2 keeps serving r1
    world.store.down = False
    world.confirmed()  # before the backoff is over: not tried again yet
    assert world.order('r1') == [ME, PEER]
    world.clock.now += 5
    world.turn()
    assert world.order('r1') == [PEER, ME]
    world.cache_catches_up()
    world.confirmed()
    assert world.ports.held() == set()


def test_with_the_store_unreachable_it_comes_back_at_once_where_no_peer_is_alive(world):
    world.router('r1', [ME, PEER], COMPUTE)   # gw-2 alive: serves r1 meanwhile
    world.router('r2', [ME, OTHER], COMPUTE2)  # gw-3 dead: r2 has no gateway at all
    world.ports.add(PEER, held=True)
    world.ports.add(COMPUTE, held=True)
    world.ports.add(OTHER, alive=False, held=True)
    world.ports.add(COMPUTE2, held=True)
    world.store.down = True
    world.confirmed()
    world.clock.now += SETTLE_SECONDS  # gw-3's session had its time: dead
    world.turn()
    assert world.ports.held() == {PEER, COMPUTE}  # r2's chassis see it alive; r1's do not
    world.store.down = False
    assert world.order('r1') == [ME, PEER] and world.order('r2') == [ME, OTHER]


def test_with_the_store_up_it_waits_for_the_failback_before_serving_a_shared_peer(world):
    world.router('r1', [ME, PEER], COMPUTE)
    world.router('r2', [ME, OTHER], COMPUTE)  # gw-3 dead; compute-1 also sends r1's traffic
    for peer in (PEER, COMPUTE):
        world.ports.add(peer, held=True)
    world.ports.add(OTHER, alive=False, held=True)
    world.confirmed()  # r1's new order written, not in the cache yet
    world.clock.now += SETTLE_SECONDS  # gw-3 dead: r2 has no gateway
    world.turn()
    assert world.ports.held() == {PEER, COMPUTE}  # compute-1 also sends r1's traffic
    world.cache_catches_up()
    world.confirmed()
    assert world.ports.held() == set()
    assert world.order('r1') == [PEER, ME] and world.order('r2') == [ME, OTHER]


def test_a_peer_whose_session_is_new_is_given_its_time_before_deciding(world):
    world.router('r1', [ME, PEER], COMPUTE)
    world.ports.add(PEER, alive=False, held=True)  # just made: not up yet
    world.ports.add(COMPUTE, held=True)
    world.confirmed()
    assert world.ports.held() == {PEER, COMPUTE}
    assert world.keeper.decision().due == world.clock.now + SETTLE_SECONDS
    world.ports.alive(PEER)  # up: gw-2 serves r1
    world.turn()
    assert world.order('r1') == [PEER, ME]


def test_a_peer_that_never_comes_up_is_dead_once_its_time_is_over(world):
    world.router('r1', [ME, PEER], COMPUTE)
    world.ports.add(PEER, alive=False, held=True)
    world.ports.add(COMPUTE, held=True)
    world.confirmed()
    world.clock.now += SETTLE_SECONDS
    world.turn()
    assert world.ports.held() == set()
    assert world.order('r1') == [ME, PEER]


class Racing:
    """A store where another writer changes the router between each read and our write,
    ``times`` times."""

    def __init__(self, store, times):
        self.store, self.times = store, times

    def __getattr__(self, name):
        return getattr(self.store, name)

    def put(self, table, id, value, expect=None):
        if self.times:
            self.times -= 1
            record = self.store.get(table, id)
            self.store.put(table, id, {**record.value, 'name': f'renamed-{self.times}'})
        return self.store.put(table, id, value, expect=expect)


def test_a_concurrent_change_of_the_router_is_kept_and_the_write_retried(withdrawn):
    world = withdrawn
    world.keeper.store = Racing(world.store.store, times=2)
    world.confirmed()
    record = world.store.get(Router.table, world.routers['r1'].id)
    assert record.value['gateway_chassis'] == [PEER, ME]
    assert record.value['name'] == 'renamed-0'


def test_a_router_reordered_by_someone_else_is_not_written_again(withdrawn):
    world = withdrawn
    router = world.store.get(Router.table, world.routers['r1'].id)
    world.store.put(Router.table, router.id, {**router.value,
                                              'gateway_chassis': [PEER, OTHER, ME]})
    revision = world.store.revision()
    world.confirmed()
    assert world.store.revision() == revision
    world.cache_catches_up()
    world.confirmed()
    assert world.ports.held() == set()


def test_conflicts_without_end_are_retried_later(withdrawn):
    world = withdrawn
    world.keeper.store = Racing(world.store.store, times=100)
    world.confirmed()
    assert world.ports.held() == {PEER, COMPUTE}
    assert world.order('r1') == [ME, PEER]


def test_with_the_store_unreachable_a_peer_a_router_without_gateway_needs_sees_it_back(world):
    world.router('r1', [ME, PEER], COMPUTE)   # gw-2 serves r1 meanwhile
    world.router('r2', [ME, OTHER], COMPUTE)  # gw-3 dead; compute-1 sends r2's traffic too
    world.ports.add(PEER, held=True)
    world.ports.add(COMPUTE, held=True)
    world.ports.add(OTHER, alive=False, held=True)
    world.store.down = True
    world.confirmed()
    world.clock.now += SETTLE_SECONDS
    world.turn()
    # r2 has no gateway at all: compute-1 gets one, so r1's traffic from it moves here too,
    # and gw-2 must see it back as well, or both would hold r1.
    assert world.ports.held() == set()
