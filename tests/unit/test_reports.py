"""What the reporter writes about floating IPs: ACTIVE from the chassis of their port once
br-int has confirmed all their flows, only on the version those flows are for, and after a
store outage as soon as the store is back."""
import dataclasses
import threading

import pytest

from dragonflow import store as df_store
from dragonflow.controller.cache import Cache
from dragonflow.controller.reports import Reporter
from dragonflow.controller.topology import Topology
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
    DEVICE_OWNER_FLOATINGIP,
    DEVICE_OWNER_ROUTER_GATEWAY,
    DEVICE_OWNER_ROUTER_INTERFACE,
)
from dragonflow.store import api
from tests.unit.clock import Clock
from tests.unit.test_controller import Outage

ME = 'chassis-1'
GATEWAY_IP, GATEWAY_MAC = '172.24.4.1', 'fa:16:3e:ee:ee:01'


def _port(id, key, network, subnet, ip, **attrs):
    return Port(id=id, key=key, network_id=network, mac_address=f'fa:16:3e:00:00:{key:02x}',
                fixed_ips=[FixedIP(subnet_id=subnet, ip_address=ip)], **attrs)


class World:
    def __init__(self, path):
        self.store = Outage(df_store.connect(f'sqlite:///{path}/nb.db'))
        self.cache = Cache(ME)
        self.confirmed = []
        self.reporter = Reporter(self.store, self.cache, Chassis(id=ME, tunnel_ip='172.31.0.11'),
                                 10.0, threading.Event(), wake_loop=lambda: None,
                                 clock=Clock(), on_confirmed=(self.confirmed.append,))
        for obj in (
                Network(id='private', key=1), Subnet(id='s', network_id='private',
                                                     cidr='10.0.0.0/24', gateway_ip='10.0.0.1'),
                Network(id='public', key=2, external=True, network_type='flat',
                        physical_network='physnet1'),
                Subnet(id='ext', network_id='public', cidr='172.24.4.0/24',
                       gateway_ip=GATEWAY_IP),
                _port('vm', 3, 'private', 's', '10.0.0.5', status='ACTIVE',
                      **{'binding:host_id': ME}),
                _port('vm2', 4, 'private', 's', '10.0.0.6', status='ACTIVE',
                      **{'binding:host_id': ME}),
                _port('ri', 5, 'private', 's', '10.0.0.1',
                      device_owner=DEVICE_OWNER_ROUTER_INTERFACE),
                _port('gw', 6, 'public', 'ext', '172.24.4.10',
                      device_owner=DEVICE_OWNER_ROUTER_GATEWAY),
                _port('fip-port', 7, 'public', 'ext', '172.24.4.100',
                      device_owner=DEVICE_OWNER_FLOATINGIP),
                Router(id='r', key=8, interfaces=[RouterInterface(port_id='ri', subnet_id='s')],
                       external_gateway_info=ExternalGateway(network_id='public'),
                       gateway_port_id='gw')):
            self.put(obj)
        self.associate('vm', '10.0.0.5')
        self.cache.set_local_ports({'vm', 'vm2'})
        self.cache.load(*self.store.snapshot())

    def put(self, obj):
        self.store.put(obj.table, obj.id, obj.to_doc())

    def associate(self, port, ip):
        self.put(FloatingIP(id='fip', floating_network_id='public',
                            floating_ip_address='172.24.4.100', floating_port_id='fip-port',
                            port_id=port, fixed_ip_address=ip, router_id='r'))

    def follow(self):
        self.cache.apply(self.store.changes(self.cache.revision))

    def topology(self, gateway_mac=GATEWAY_MAC):
        return Topology.from_objects(
            ME, self.cache.objects, {'vm': 1, 'vm2': 2}, None, self.cache.revision,
            patch_ofports={'physnet1': 100},
            gateway_macs={('public', GATEWAY_IP): gateway_mac} if gateway_mac else {},
            nat_zones={'fip': 0x8000})

    def status(self):
        return self.store.get(FloatingIP.table, 'fip').value['status']


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


def test_a_floating_ip_is_active_once_all_its_flows_are_confirmed(world):
    topology = world.topology(gateway_mac=None)  # no way out yet
    world.reporter.ports_confirmed(topology)
    world.reporter.report()
    assert world.status() == 'DOWN'
    world.reporter.ports_confirmed(world.topology())
    world.reporter.report()
    assert world.status() == 'ACTIVE'
    assert world.confirmed[-1].local_floating_ips()  # the neighbours hear of it too


def test_what_it_wrote_is_kept_and_its_echo_changes_nothing(world):
    world.reporter.ports_confirmed(world.topology())
    world.reporter.report()
    assert world.cache.objects['floatingips']['fip'].status == 'ACTIVE'
    assert not world.cache.apply(world.store.changes(world.cache.revision))


def test_a_floating_ip_moved_since_the_flows_were_built_is_not_reported(world):
    topology = world.topology()
    world.associate('vm2', '10.0.0.6')  # df-api wrote DOWN with the new association
    world.follow()
    world.reporter.ports_confirmed(topology)
    world.reporter.report()
    assert world.status() == 'DOWN'
    world.reporter.ports_confirmed(world.topology())
    world.reporter.report()
    assert world.status() == 'ACTIVE'


def test_a_store_outage_delays_the_report_only(world):
    world.store.down = True
    world.reporter.ports_confirmed(world.topology())  # the loop's call does not touch it
    with pytest.raises(api.StoreError):
        world.reporter.report()
    world.store.down = False
    world.reporter.report()
    assert world.status() == 'ACTIVE'


def test_a_floating_ip_of_a_port_elsewhere_is_left_to_its_chassis(world):
    topology = Topology.from_objects(ME, world.cache.objects, {'vm2': 2}, None,
                                     world.cache.revision, patch_ofports={'physnet1': 100},
                                     gateway_macs={('public', GATEWAY_IP): GATEWAY_MAC},
                                     nat_zones={'fip': 0x8000})
    world.reporter.ports_confirmed(topology)
    world.reporter.report()
    assert world.status() == 'DOWN'


def test_a_floating_ip_goes_down_with_its_port_unplugged_here(world):
    world.reporter.ports_confirmed(world.topology())
    world.reporter.report()
    assert world.status() == 'ACTIVE'
    unplugged = Topology.from_objects(ME, world.cache.objects, {'vm2': 2}, None,
                                      world.cache.revision, patch_ofports={'physnet1': 100})
    world.reporter.ports_confirmed(unplugged)
    world.reporter.report()
    assert world.status() == 'DOWN'
    assert world.store.get('ports', 'vm').value['status'] == 'DOWN'


def test_the_heartbeat_names_the_routers_whose_gateway_this_chassis_holds(world):
    router = world.cache.objects['routers']['r']
    world.put(router.model_copy(update={'gateway_chassis': [ME, 'gw-2']}))
    world.follow()
    holding = dataclasses.replace(world.topology(), is_gateway=True)
    world.reporter.ports_confirmed(holding)
    world.reporter.report()
    assert world.store.heartbeats()[ME]['active_gateways'] == ['r']
    # Its uplink lost, the next gateway chassis alive: said at once, not an interval later.
    world.reporter.ports_confirmed(dataclasses.replace(
        holding, uplinks_down=frozenset({'physnet1'}), live_peers=frozenset({'gw-2'})))
    world.reporter.report()
    assert world.store.heartbeats()[ME]['active_gateways'] == []
