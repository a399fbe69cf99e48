"""The selective cache: a chassis keeps the networks with a local port, the routers on them and
what those routers connect, and nothing of the rest of the deployment."""
import pytest

from dragonflow import store as df_store
from dragonflow.controller.cache import Cache, is_local, scope_of
from dragonflow.model import (
    Chassis,
    ExternalGateway,
    FixedIP,
    FloatingIP,
    Network,
    Port,
    Router,
    RouterInterface,
    Subnet,
)
from dragonflow.model.objects import (
    DEVICE_OWNER_CHASSIS_SNAT,
    DEVICE_OWNER_FLOATINGIP,
    DEVICE_OWNER_ROUTER_GATEWAY,
)

ME, OTHER = 'chassis-1', 'chassis-2'


class World:
    """A real (sqlite) store holding a small deployment, and a cache following it."""

    def __init__(self, path):
        self.store = df_store.connect(f'sqlite:///{path}/nb.db')
        self.cache = Cache(ME)
        self.keys = iter(range(1, 1000))

    def put(self, obj):
        self.store.put(obj.table, obj.id, obj.to_doc())
        return obj

    def network(self, name):
        net = self.put(Network(id=name, key=next(self.keys)))
        subnet = self.put(Subnet(id=f'{name}-subnet', network_id=name, cidr='10.0.0.0/24'))
        return net, subnet

    def port(self, name, network, host='', status='DOWN'):
        return self.put(Port(id=name, key=next(self.keys), network_id=network,
                             mac_address='fa:16:3e:00:00:01', status=status,
                             fixed_ips=[FixedIP(subnet_id=f'{network}-subnet',
                                                ip_address='10.0.0.5')],
                             **{'binding:host_id': host}))

    def router(self, name, *networks):
        return self.put(Router(id=name, key=next(self.keys), interfaces=[
            RouterInterface(port_id=f'{name}-{n}', subnet_id=f'{n}-subnet') for n in networks]))

    def refill(self):
        self.cache.load(*self.store.snapshot())

    def follow(self):
        """Apply what changed since the cache's revision; refill if it asks, as the
        controller does."""
        self.cache.apply(self.store.changes(self.cache.revision))
        if self.cache.needs_refill:
            self.refill()

    def cached(self, table):
        return set(self.cache.objects[table])


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    for name in ('a', 'b', 'c', 'd'):
        w.network(name)
    w.port('vm-a', 'a')
    w.port('vm-b', 'b', host=OTHER, status='ACTIVE')
    w.port('vm-c', 'c', host=OTHER, status='ACTIVE')
    w.port('vm-d', 'd', host=OTHER, status='ACTIVE')
    w.router('r-ac', 'a', 'c')
    w.router('r-bd', 'b', 'd')
    w.cache.set_local_ports({'vm-a'})
    w.refill()
    return w


def test_keeps_local_networks_their_routers_and_what_they_connect(world):
    assert world.cached('networks') == {'a', 'c'}
    assert world.cached('subnets') == {'a-subnet', 'c-subnet'}
    assert world.cached('ports') == {'vm-a', 'vm-c'}
    assert world.cached('routers') == {'r-ac'}


def test_changes_elsewhere_are_not_kept(world):
    world.port('vm-b2', 'b', host=OTHER, status='ACTIVE')
    world.put(Subnet(id='b-subnet', network_id='b', cidr='10.9.0.0/24'))
    world.follow()
    assert 'vm-b2' not in world.cached('ports')
    assert 'b-subnet' not in world.cached('subnets')
    assert world.cache.revision == world.store.revision()


def test_a_vm_plugged_on_a_new_network_widens_the_scope(world):
    world.cache.set_local_ports({'vm-a', 'vm-b'})
    assert world.cache.needs_refill
    world.refill()
    assert world.cached('networks') == {'a', 'b', 'c', 'd'}
    assert world.cached('routers') == {'r-ac', 'r-bd'}


def test_a_router_interface_to_a_new_network_widens_the_scope(world):
    world.router('r-ac', 'a', 'c', 'd')
    world.follow()
    assert world.cached('networks') == {'a', 'c', 'd'}
    assert 'vm-d' in world.cached('ports')


def test_the_last_local_port_going_narrows_the_scope(world):
    world.cache.set_local_ports(set())
    assert world.cached('networks') == set()
    assert world.cached('routers') == set()


def test_an_active_port_bound_here_stays_until_reported_down(world):
    world.port('vm-a', 'a', host=ME, status='ACTIVE')
    world.follow()
    world.cache.set_local_ports(set())
    assert 'vm-a' in world.cached('ports')  # the controller still has to report it DOWN
    world.port('vm-a', 'a', host='', status='DOWN')
    world.follow()
    assert world.cached('networks') == set()


def test_a_port_bound_here_before_its_vm_is_plugged_brings_its_network(world):
    world.port('vm-b', 'b', host=ME)  # Nova binds, then plugs
    world.follow()
    assert world.cached('networks') == {'a', 'b', 'c', 'd'}
    assert world.cached('routers') == {'r-ac', 'r-bd'}


def test_a_port_created_after_its_vm_was_plugged_arrives_as_an_event(world):
    world.cache.set_local_ports({'vm-a', 'vm-new'})
    world.refill()  # the store does not know vm-new yet
    assert not world.cache.needs_refill
    world.follow()
    assert not world.cache.needs_refill  # an unknown plugged port does not refill forever
    world.port('vm-new', 'b')
    world.follow()
    assert {'a', 'b'} <= world.cached('networks')


def test_commits_older_than_a_refill_are_skipped(world):
    before = world.cache.revision
    world.port('vm-c', 'c', host=OTHER, status='DOWN')
    old_batch = world.store.changes(before)
    world.port('vm-c', 'c', host=OTHER, status='ACTIVE')
    world.refill()
    world.cache.apply(old_batch)
    assert world.cache.objects['ports']['vm-c'].status == 'ACTIVE'


def test_what_this_chassis_wrote_is_kept_at_once_and_its_event_changes_nothing(world):
    port = world.cache.objects['ports']['vm-a']
    bound = port.model_copy(update={'binding_host_id': ME, 'status': 'ACTIVE'})
    revision = world.store.put('ports', 'vm-a', bound.to_doc(), expect=port.revision)
    world.cache.written(bound.model_copy(update={'revision': revision}))
    assert world.cache.objects['ports']['vm-a'].status == 'ACTIVE'
    assert not world.cache.apply(world.store.changes(world.cache.revision))
    assert world.cache.revision == revision


def test_a_write_older_than_the_cached_object_is_ignored(world):
    port = world.cache.objects['ports']['vm-a']
    world.port('vm-a', 'a', host=OTHER, status='ACTIVE')
    world.follow()
    world.cache.written(port.model_copy(update={'status': 'ACTIVE'}))
    assert world.cache.objects['ports']['vm-a'].binding_host_id == OTHER


def test_a_port_reported_down_here_narrows_the_scope_at_once(world):
    world.port('vm-a', 'a', host=ME, status='ACTIVE')
    world.follow()
    world.cache.set_local_ports(set())
    port = world.cache.objects['ports']['vm-a']
    down = port.model_copy(update={'binding_host_id': '', 'status': 'DOWN'})
    revision = world.store.put('ports', 'vm-a', down.to_doc(), expect=port.revision)
    assert world.cache.written(down.model_copy(update={'revision': revision}))
    assert world.cached('networks') == set()


def test_a_status_report_alone_changes_nothing_the_flows_use(world):
    port = world.cache.objects['ports']['vm-c']
    world.put(port.model_copy(update={'status': 'DOWN'}))
    assert not world.cache.apply(world.store.changes(world.cache.revision))
    world.put(port.model_copy(update={'binding_host_id': 'chassis-3'}))
    assert world.cache.apply(world.store.changes(world.cache.revision))


def test_chassis_records_cost_no_scope_computation(world, monkeypatch):
    computed = []
    monkeypatch.setattr('dragonflow.controller.cache.scope_of',
                        lambda *args: computed.append(1) or scope_of(*args))
    world.cache.missing_chassis()
    before = len(computed)
    for beat in range(3):
        world.put(Chassis(id=OTHER, tunnel_ip=f'172.31.0.{12 + beat}'))
        world.put(Chassis(id='chassis-9', tunnel_ip=f'172.31.1.{19 + beat}'))
        world.cache.apply(world.store.changes(world.cache.revision))
        world.cache.missing_chassis()
    assert len(computed) == before
    world.port('vm-c', 'c', host=ME, status='ACTIVE')
    world.follow()
    assert len(computed) > before  # anything else is looked at again


class NorthSouth:
    """An external network 'ext' (a gateway port per router, a floating IP port per floating
    IP, and ports of other projects' routers) joined to 'a' and 'b' by their routers."""

    def __init__(self, world):
        self.world = world
        world.put(Network(id='ext', key=next(world.keys), **{'router:external': True}))
        world.put(Subnet(id='ext-subnet', network_id='ext', cidr='172.24.4.0/24',
                         gateway_ip='172.24.4.1'))
        for router, networks in (('r-ac', ('a', 'c')), ('r-bd', ('b', 'd')),
                                 ('r-elsewhere', ())):
            self.gateway(router, *networks)

    def gateway(self, router, *networks, gateway_chassis=()):
        w = self.world
        w.put(Port(id=f'{router}-gw', key=next(w.keys), network_id='ext',
                   mac_address='fa:16:3e:00:01:01', device_owner=DEVICE_OWNER_ROUTER_GATEWAY,
                   fixed_ips=[FixedIP(subnet_id='ext-subnet', ip_address='172.24.4.2')]))
        w.put(Router(id=router, key=next(w.keys), gateway_port_id=f'{router}-gw',
                     external_gateway_info=ExternalGateway(network_id='ext'),
                     gateway_chassis=list(gateway_chassis),
                     interfaces=[RouterInterface(port_id=f'{router}-{n}', subnet_id=f'{n}-subnet')
                                 for n in networks]))

    def floating_ip(self, name, port=None, router=None, with_port=True):
        w = self.world
        if with_port:
            w.put(Port(id=f'{name}-port', key=next(w.keys), network_id='ext',
                       mac_address='fa:16:3e:00:02:01', device_owner=DEVICE_OWNER_FLOATINGIP,
                       fixed_ips=[FixedIP(subnet_id='ext-subnet', ip_address='172.24.4.9')]))
        return w.put(FloatingIP(id=name, floating_network_id='ext',
                                floating_ip_address='172.24.4.9', floating_port_id=f'{name}-port',
                                port_id=port, fixed_ip_address='10.0.0.5' if port else None,
                                router_id=router))


@pytest.fixture
def north_south(world):
    ns = NorthSouth(world)
    world.follow()
    return ns


def test_a_routers_external_network_is_kept_with_its_gateway_port_only(world, north_south):
    assert world.cached('networks') == {'a', 'c', 'ext'}
    assert 'ext-subnet' in world.cached('subnets')
    assert world.cached('ports') == {'vm-a', 'vm-c', 'r-ac-gw'}  # not the others' gateways
    assert world.cached('floatingips') == set()


def test_the_floating_ip_of_a_local_port_is_kept_with_its_own_port(world, north_south):
    north_south.floating_ip('fip-a', port='vm-a', router='r-ac')
    north_south.floating_ip('fip-b', port='vm-b', router='r-bd')  # bound elsewhere
    north_south.floating_ip('fip-free')  # associated with nothing
    world.follow()
    assert world.cached('floatingips') == {'fip-a'}
    assert world.cached('ports') == {'vm-a', 'vm-c', 'r-ac-gw', 'fip-a-port'}


def test_a_floating_ip_moved_away_is_evicted_and_one_moved_here_arrives(world, north_south):
    north_south.floating_ip('fip-a', port='vm-a', router='r-ac')
    world.follow()
    north_south.floating_ip('fip-a', port='vm-b', router='r-bd', with_port=False)
    world.follow()
    assert world.cached('floatingips') == set()
    assert 'fip-a-port' not in world.cached('ports')
    north_south.floating_ip('fip-a', port='vm-a', router='r-ac', with_port=False)
    world.follow()
    assert world.cached('floatingips') == {'fip-a'}
    assert 'fip-a-port' in world.cached('ports')


def test_a_floating_ip_whose_router_is_not_kept_brings_it(world, north_south):
    assert 'r-bd' not in world.cached('routers')
    north_south.floating_ip('fip-x', port='vm-a', router='r-bd')
    world.follow()
    assert {'r-ac', 'r-bd'} <= world.cached('routers')
    assert 'r-bd-gw' in world.cached('ports')


def test_a_gateway_cleared_takes_the_external_network_away(world, north_south):
    world.router('r-ac', 'a', 'c')  # external_gateway_info None
    world.follow()
    assert world.cached('networks') == {'a', 'c'}
    assert world.cached('ports') == {'vm-a', 'vm-c'}
    north_south.gateway('r-ac', 'a', 'c')
    world.follow()
    assert world.cached('networks') == {'a', 'c', 'ext'}


def test_the_last_local_port_going_takes_its_floating_ip(world, north_south):
    north_south.floating_ip('fip-a', port='vm-a', router='r-ac')
    world.follow()
    world.cache.set_local_ports(set())
    assert world.cached('floatingips') == set()
    assert world.cached('networks') == set()


def test_a_router_this_chassis_may_hold_the_gateway_of_is_kept_with_what_it_connects(
        world, north_south):
    """No VM here behind r-bd: its gateway may be here all the same, and the replies go to
    its VMs wherever they are."""
    north_south.gateway('r-bd', 'b', 'd', gateway_chassis=(OTHER, ME))
    world.follow()
    assert {'r-ac', 'r-bd'} <= world.cached('routers')
    assert world.cached('networks') == {'a', 'b', 'c', 'd', 'ext'}
    assert {'vm-b', 'vm-d', 'r-bd-gw'} <= world.cached('ports')
    assert 'r-elsewhere-gw' not in world.cached('ports')
    north_south.gateway('r-bd', 'b', 'd', gateway_chassis=(OTHER,))
    world.follow()
    assert 'r-bd' not in world.cached('routers')
    assert world.cached('networks') == {'a', 'c', 'ext'}


def test_the_gateway_chassis_of_a_router_in_scope_are_kept(world, north_south):
    for name, ip in (('gw-1', '172.31.0.21'), ('gw-2', '172.31.0.22'), ('gw-9', '172.31.0.29')):
        world.put(Chassis(id=name, tunnel_ip=ip, gateway=True))
    north_south.gateway('r-ac', 'a', 'c', gateway_chassis=('gw-1', 'gw-2'))
    north_south.gateway('r-bd', 'b', 'd', gateway_chassis=('gw-9',))  # not in scope
    world.follow()
    wanted = world.cached('chassis') | world.cache.missing_chassis()  # fetched one by one
    assert {'gw-1', 'gw-2'} <= wanted and 'gw-9' not in wanted
    world.refill()
    assert {'gw-1', 'gw-2'} <= world.cached('chassis')
    assert 'gw-9' not in world.cached('chassis')


def chassis_snat(world, name, host):
    return world.put(Port(id=name, key=next(world.keys), network_id='ext',
                          mac_address='fa:16:3e:00:03:01', device_owner=DEVICE_OWNER_CHASSIS_SNAT,
                          device_id='r-ac', fixed_ips=[FixedIP(subnet_id='ext-subnet',
                                                               ip_address='172.24.4.30')],
                          **{'binding:host_id': host}))


def test_this_chassis_snat_port_is_kept_and_does_not_bring_its_network(world, north_south):
    chassis_snat(world, 'snat-here', ME)
    chassis_snat(world, 'snat-there', OTHER)
    world.follow()
    assert 'snat-here' in world.cached('ports')
    assert 'snat-there' not in world.cached('ports')
    assert 'r-elsewhere-gw' not in world.cached('ports')  # ext is no local network
    world.refill()
    assert 'snat-here' in world.cached('ports')
    assert world.cached('ports') == {'vm-a', 'vm-c', 'r-ac-gw', 'snat-here'}


def test_a_chassis_snat_port_bound_here_is_not_local(world):
    port = chassis_snat(world, 'snat-here', ME)
    assert not is_local(port, ME, set())
    assert is_local(port, ME, {'snat-here'})  # plugged: whatever its owner says
