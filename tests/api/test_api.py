"""df-api through openstacksdk, the client Nova, Heat and the openstack CLI are built on.

Every test makes its own networks in one shared df-api process; they look only at what they
created (by id or by a name of their own), so they do not depend on each other's order.
"""
import ipaddress
import uuid

import pytest
from openstack.network.v2.network import Network

from .conftest import connect, neutron_error, raw, unique

ROUTER_INTERFACE = 'network:router_interface'


@pytest.fixture
def network(conn):
    """A network with a /24 subnet; deleted afterwards with everything left on it."""
    net = conn.network.create_network(name=unique('net'))
    subnet = conn.network.create_subnet(network_id=net.id, cidr='10.0.0.0/24', ip_version=4,
                                        name=unique('subnet'))
    yield net, subnet
    for port in conn.network.ports(network_id=net.id):
        if port.device_owner != ROUTER_INTERFACE:
            conn.network.delete_port(port)
    for router in conn.network.routers():
        for port in conn.network.ports(device_id=router.id, network_id=net.id):
            conn.network.remove_interface_from_router(router, port=port.id)
    conn.network.delete_network(net)


# Discovery

def test_version_discovery_and_extensions(conn, api_server):
    status, versions = raw(conn, 'get', api_server.url + '/')
    assert status == 200
    assert versions['versions'][0]['id'] == 'v2.0'
    assert versions['versions'][0]['links'][0]['href'] == api_server.url + '/v2.0/'
    aliases = {e.alias for e in conn.network.extensions()}
    assert {'router', 'extraroute', 'binding', 'port-security', 'standard-attr-revisions',
            'standard-attr-tag', 'standard-attr-timestamp', 'external-net'} <= aliases
    assert conn.network.find_extension('router').name == 'Neutron L3 Router'
    assert conn.network.find_extension('no-such-extension') is None


# The scenario of the issue: 2 networks, 2 subnets, a router, both interfaces, 20 ports

def test_topology_lifecycle(conn, api_server):
    nets = [conn.network.create_network(name=unique('topo')) for _ in range(2)]
    subnets = [conn.network.create_subnet(network_id=net.id, cidr=f'10.{i + 1}.0.0/24',
                                          ip_version=4, name=unique('topo'))
               for i, net in enumerate(nets)]
    assert [conn.network.get_network(n.id).subnet_ids for n in nets] == [[s.id] for s in subnets]
    router = conn.network.create_router(name=unique('topo'))
    interfaces = [conn.network.add_interface_to_router(router, subnet=s.id) for s in subnets]
    assert [i['subnet_id'] for i in interfaces] == [s.id for s in subnets]

    # Router interfaces are Neutron ports holding the gateway addresses.
    for interface, subnet in zip(interfaces, subnets, strict=True):
        port = conn.network.get_port(interface['port_id'])
        assert (port.device_owner, port.device_id) == (ROUTER_INTERFACE, router.id)
        assert port.fixed_ips == [{'subnet_id': subnet.id, 'ip_address': subnet.gateway_ip}]
    assert {p.id for p in conn.network.ports(device_id=router.id)} == \
        {i['port_id'] for i in interfaces}

    # 20 ports: 10 in one bulk request, 10 one by one.
    ports = list(conn.network.create_ports([{'network_id': nets[0].id, 'name': f'bulk-{i}'}
                                            for i in range(10)]))
    ports += [conn.network.create_port(network_id=nets[1].id, name=f'single-{i}')
              for i in range(10)]
    _check_ports(ports, subnets)
    _check_listing(conn, nets, ports)
    _check_updates(conn, ports[0], subnets[0], api_server)
    _check_extra_routes(conn, router, subnets)

    # Tear down in Neutron's order.
    for port in ports:
        conn.network.delete_port(port)
    conn.network.remove_interface_from_router(router, subnet=subnets[0].id)
    conn.network.remove_interface_from_router(router, port=interfaces[1]['port_id'])
    assert list(conn.network.ports(device_id=router.id)) == []
    conn.network.delete_router(router)
    for subnet in subnets:
        conn.network.delete_subnet(subnet)
    for net in nets:
        conn.network.delete_network(net)
    assert not [n for n in conn.network.networks() if n.id in {x.id for x in nets}]
    assert not [p for p in conn.network.ports() if p.id in {x.id for x in ports}]


def _check_ports(ports, subnets):
    assert len(ports) == 20
    ips = [p.fixed_ips[0]['ip_address'] for p in ports]
    macs = [p.mac_address for p in ports]
    assert len(set(ips)) == len(set(macs)) == 20
    assert all(mac.startswith('fa:16:3e:') for mac in macs)
    gateways = {s.gateway_ip for s in subnets}
    for port in ports:
        fixed, = port.fixed_ips
        subnet = next(s for s in subnets if s.id == fixed['subnet_id'])
        assert ipaddress.ip_address(fixed['ip_address']) in ipaddress.ip_network(subnet.cidr)
        assert fixed['ip_address'] not in gateways
        assert port.status == 'DOWN' and port.is_admin_state_up
        assert port.binding_host_id == '' and port.binding_vif_type == 'unbound'
        assert port.device_owner == '' and port.device_id == ''
        assert port.project_id == 'demo' and port.revision_number > 0
        assert port.created_at and port.updated_at


def _check_listing(conn, nets, ports):
    on_first = list(conn.network.ports(network_id=nets[0].id))
    assert len(on_first) == 11  # 10 ports and the router interface
    assert {p.id for p in conn.network.ports(network_id=nets[0].id, device_owner='')} == \
        {p.id for p in ports[:10]}
    target = ports[3]
    by_ip = list(conn.network.ports(fixed_ips=[f"ip_address={target.fixed_ips[0]['ip_address']}"]))
    assert [p.id for p in by_ip] == [target.id]
    assert [p.id for p in conn.network.ports(mac_address=target.mac_address)] == [target.id]
    assert [p.id for p in conn.network.ports(name='single-4')] == [ports[14].id]
    assert [n.id for n in conn.network.networks(name=nets[1].name)] == [nets[1].id]
    # Paging with limit/marker (the SDK follows the next links) returns the same set.
    paged = [p.id for p in conn.network.ports(network_id=nets[1].id, limit=3)]
    assert sorted(paged) == sorted(p.id for p in conn.network.ports(network_id=nets[1].id))
    assert len(paged) == len(set(paged)) == 11
    status, body = raw(conn, 'get', f'/ports?network_id={nets[0].id}&limit=4&fields=id&fields=name')
    assert status == 200 and len(body['ports']) == 4
    assert all(sorted(p) == ['id', 'name'] for p in body['ports'])
    assert body['ports_links'][0]['rel'] == 'next'
    status, body = raw(conn, 'get', f'/ports?network_id={nets[1].id}&device_owner='
                                    '&sort_key=name&sort_dir=desc&fields=name')
    assert [p['name'] for p in body['ports']] == [f'single-{i}' for i in reversed(range(10))]


def _check_updates(conn, port, subnet, api_server):
    revision = port.revision_number
    status, body = raw(conn, 'put', f'/ports/{port.id}',
                       json={'port': {'binding:host_id': 'compute-1'}})
    assert (status, body['NeutronError']['type']) == (403, 'PolicyNotAuthorized')  # Nova's
    admin = connect(api_server.url, admin=True)
    updated = admin.network.update_port(port, name='renamed', is_admin_state_up=False,
                                        binding_host_id='compute-1', device_id='vm-1',
                                        device_owner='compute:nova')
    assert (updated.name, updated.is_admin_state_up, updated.binding_host_id) == \
        ('renamed', False, 'compute-1')
    assert (updated.device_id, updated.device_owner) == ('vm-1', 'compute:nova')
    assert updated.revision_number > revision
    assert updated.binding_vif_type == 'ovs'
    assert updated.status == 'DOWN'  # only a controller binding the port makes it ACTIVE
    old_ip = port.fixed_ips[0]['ip_address']
    taken = {f['ip_address'] for p in conn.network.ports(network_id=port.network_id)
             for f in p.fixed_ips}   # addresses are drawn at random: pick a free one
    new_ip = next(ip for ip in (f'10.1.0.{i}' for i in range(250, 2, -1)) if ip not in taken)
    moved = conn.network.update_port(port, fixed_ips=[{'subnet_id': subnet.id,
                                                       'ip_address': new_ip}])
    assert moved.fixed_ips == [{'subnet_id': subnet.id, 'ip_address': new_ip}]
    # The old address went back to the pool, in the same commit.
    taker = conn.network.create_port(network_id=port.network_id,
                                     fixed_ips=[{'ip_address': old_ip}])
    conn.network.delete_port(taker)


def _check_extra_routes(conn, router, subnets):
    routes = [{'destination': '192.168.0.0/24', 'nexthop': '10.1.0.250'}]
    assert conn.network.update_router(router, routes=routes).routes == routes
    status, error = neutron_error(conn.network.update_router, router, routes=[
        {'destination': '192.168.1.0/24', 'nexthop': '172.16.0.1'}])
    assert (status, error['type']) == (400, 'InvalidRoutes')
    assert 'not connected' in error['message']
    status, error = neutron_error(conn.network.remove_interface_from_router, router,
                                  subnet=subnets[0].id)
    assert (status, error['type']) == (409, 'RouterInterfaceInUseByRoute')
    conn.network.add_extra_routes_to_router(
        router, {'router': {'routes': [{'destination': '192.168.2.0/24',
                                        'nexthop': '10.2.0.9'}]}})
    assert len(conn.network.get_router(router.id).routes) == 2
    assert conn.network.update_router(router, routes=[]).routes == []


# Errors: Neutron's codes, types and bodies

def test_bad_input_is_400(conn, network):
    net, subnet = network
    cases = [
        (conn.network.create_subnet, dict(network_id=net.id, cidr='10.5.0/24', ip_version=4),
         'HTTPBadRequest', "'10.5.0/24' is not a valid IP subnet"),
        (conn.network.create_subnet, dict(network_id=net.id, cidr='10.5.0.1/24', ip_version=4),
         'HTTPBadRequest', "isn't a recognized IP subnet cidr"),
        (conn.network.create_subnet, dict(network_id='not-a-uuid', cidr='10.5.0.0/24',
                                          ip_version=4),
         'HTTPBadRequest', "'not-a-uuid' is not a valid UUID"),
        (conn.network.create_subnet, dict(network_id=net.id, cidr='10.0.0.128/25',
                                          ip_version=4),
         'InvalidInput', 'overlaps with another subnet'),
        (conn.network.create_port, dict(network_id=net.id, fixed_ips=[
            {'subnet_id': subnet.id, 'ip_address': '10.9.9.9'}]),
         'InvalidIpForSubnet', 'IP address 10.9.9.9 is not a valid IP for the specified subnet'),
        (conn.network.create_port, dict(network_id=net.id, fixed_ips=[{'ip_address': '10.9.9.9'}]),
         'InvalidIpForNetwork', 'not a valid IP for any of the subnets'),
        (conn.network.create_port, dict(network_id=net.id, fixed_ips=[{'ip_address': 'x'}]),
         'HTTPBadRequest', "'x' is not a valid IP address"),
        (conn.network.create_port, dict(network_id=net.id, mac_address='01:00:5e:00:00:01'),
         'HTTPBadRequest', 'is not a valid MAC address'),
    ]
    for call, attrs, type_, text in cases:
        status, error = neutron_error(call, **attrs)
        assert (status, error['type']) == (400, type_), (attrs, error)
        assert text in error['message'], error
    status, body = raw(conn, 'post', '/networks', json={'network': {'name': 'x', 'colour': 1}})
    assert status == 400
    assert body['NeutronError'] == {'type': 'HTTPBadRequest', 'detail': '',
                                    'message': "Unrecognized attribute(s) 'colour'"}
    status, body = raw(conn, 'put', f'/networks/{net.id}', json={'network': {'id': 'x'}})
    assert (status, body['NeutronError']['message']) == (
        400, 'Cannot update read-only attribute id')
    status, body = raw(conn, 'post', '/subnets', json={'subnet': {'network_id': net.id}})
    assert (status, body['NeutronError']['message']) == (
        400, "Failed to parse request. Required attribute 'ip_version' not specified")
    status, body = raw(conn, 'post', '/networks', data=b'{not json',
                       headers={'Content-Type': 'application/json'})
    assert (status, body['NeutronError']['type']) == (400, 'HTTPBadRequest')
    status, body = raw(conn, 'get', '/ports?colour=red')
    assert (status, body['NeutronError']['message']) == (
        400, '[colour] is invalid attribute for filtering')
    assert [p for p in conn.network.ports(network_id=net.id)] == []  # nothing half-written


def test_unknown_ids_are_404(conn):
    missing = str(uuid.uuid4())
    for call, type_, message in [
            (conn.network.get_network, 'NetworkNotFound', f'Network {missing} could not be found.'),
            (conn.network.get_subnet, 'SubnetNotFound', f'Subnet {missing} could not be found.'),
            (conn.network.get_port, 'PortNotFound', f'Port {missing} could not be found.'),
            (conn.network.get_router, 'RouterNotFound', f'Router {missing} could not be found'),
            (lambda i: conn.network.update_network(i, name='x'), 'NetworkNotFound', None),
            (lambda i: conn.network.delete_port(i, ignore_missing=False), 'PortNotFound', None),
            (lambda i: conn.network.create_port(network_id=i), 'NetworkNotFound', None),
            (lambda i: conn.network.create_subnet(network_id=i, cidr='10.0.0.0/24',
                                                  ip_version=4), 'NetworkNotFound', None)]:
        status, error = neutron_error(call, missing)
        assert (status, error['type']) == (404, type_)
        assert message is None or error['message'] == message
    status, body = raw(conn, 'get', '/no-such-collection')
    assert (status, body['NeutronError']['type']) == (404, 'HTTPNotFound')


def test_conflicts_are_409(conn, network):
    net, subnet = network
    port = conn.network.create_port(network_id=net.id, fixed_ips=[{'ip_address': '10.0.0.10'}])
    status, error = neutron_error(conn.network.create_port, network_id=net.id,
                                  fixed_ips=[{'ip_address': '10.0.0.10'}])
    assert (status, error['type']) == (409, 'IpAddressAlreadyAllocated')
    assert error['message'] == f'IP address 10.0.0.10 already allocated in subnet {subnet.id}'
    status, error = neutron_error(conn.network.create_port, network_id=net.id,
                                  mac_address=port.mac_address)
    assert (status, error['type']) == (409, 'MacAddressInUse')
    status, error = neutron_error(conn.network.delete_network, net, ignore_missing=False)
    assert (status, error['type']) == (409, 'NetworkInUse')
    assert error['message'] == (f'Unable to complete operation on network {net.id}. '
                                'There are one or more ports still in use on the network.')
    status, error = neutron_error(conn.network.delete_subnet, subnet, ignore_missing=False)
    assert (status, error['type']) == (409, 'SubnetInUse')
    assert conn.network.get_network(net.id).subnet_ids == [subnet.id]  # nothing half-deleted


def test_pool_exhaustion_is_409(conn, network):
    net, _ = network
    tiny = conn.network.create_subnet(network_id=net.id, cidr='10.7.0.0/29', ip_version=4,
                                      allocation_pools=[{'start': '10.7.0.2', 'end': '10.7.0.3'}])
    for _ in range(2):
        conn.network.create_port(network_id=net.id, fixed_ips=[{'subnet_id': tiny.id}])
    status, error = neutron_error(conn.network.create_port, network_id=net.id,
                                  fixed_ips=[{'subnet_id': tiny.id}])
    assert (status, error['type']) == (409, 'IpAddressGenerationFailure')
    assert error['message'] == f'No more IP addresses available on network {net.id}.'


def test_router_interface_errors(conn, network):
    net, subnet = network
    router = conn.network.create_router(name=unique('r'))
    conn.network.add_interface_to_router(router, subnet=subnet.id)
    status, error = neutron_error(conn.network.add_interface_to_router, router,
                                  subnet=subnet.id)
    assert (status, error['type']) == (400, 'BadRequest')
    assert error['message'] == (f'Bad router request: Router already has a port on subnet '
                                f'{subnet.id}.')
    other = conn.network.create_network(name=unique('net'))
    overlapping = conn.network.create_subnet(network_id=other.id, cidr='10.0.0.0/16',
                                             ip_version=4)
    status, error = neutron_error(conn.network.add_interface_to_router, router,
                                  subnet=overlapping.id)
    assert (status, error['type']) == (400, 'BadRequest')
    assert 'overlaps with cidr 10.0.0.0/24' in error['message']
    status, body = raw(conn, 'put', f'/routers/{router.id}/add_router_interface', json={})
    assert (status, body['NeutronError']['message']) == (
        400, 'Bad router request: Either subnet_id or port_id must be specified.')
    interface_port, = conn.network.ports(device_id=router.id)
    status, error = neutron_error(conn.network.delete_port, interface_port, ignore_missing=False)
    assert (status, error['type']) == (409, 'ServicePortInUse')
    status, error = neutron_error(conn.network.update_port, interface_port, device_id='')
    assert (status, error['type']) == (400, 'BadRequest')
    status, error = neutron_error(conn.network.delete_router, router, ignore_missing=False)
    assert (status, error['type']) == (409, 'RouterInUse')
    status, error = neutron_error(conn.network.delete_subnet, subnet, ignore_missing=False)
    assert (status, error['type']) == (409, 'SubnetInUse')
    status, error = neutron_error(conn.network.remove_interface_from_router, router,
                                  subnet=overlapping.id)
    assert (status, error['type']) == (404, 'RouterInterfaceNotFoundForSubnet')
    # A port already attached to a device cannot become an interface.
    vm_port = conn.network.create_port(network_id=other.id, device_id='vm-1')
    status, error = neutron_error(conn.network.add_interface_to_router, router,
                                  port=vm_port.id)
    assert (status, error['type']) == (409, 'PortInUse')
    # Gateway address taken by a port: the interface cannot be added.
    free = conn.network.create_network(name=unique('net'))
    gw_subnet = conn.network.create_subnet(network_id=free.id, cidr='10.8.0.0/24', ip_version=4)
    squatter = conn.network.create_port(network_id=free.id, fixed_ips=[{'ip_address': '10.8.0.1'}])
    status, error = neutron_error(conn.network.add_interface_to_router, router,
                                  subnet=gw_subnet.id)
    assert (status, error['type']) == (409, 'IpAddressAlreadyAllocated')
    assert [p.id for p in conn.network.ports(network_id=free.id)] == [squatter.id]
    # Adding by port: the port becomes the interface and goes with it.
    conn.network.delete_port(squatter)
    conn.network.delete_port(vm_port)
    by_port = conn.network.create_port(network_id=free.id, fixed_ips=[{'ip_address': '10.8.0.1'}])
    result = conn.network.add_interface_to_router(router, port=by_port.id)
    assert (result['port_id'], result['subnet_ids']) == (by_port.id, [gw_subnet.id])
    attached = conn.network.get_port(by_port.id)
    assert (attached.device_owner, attached.device_id) == (ROUTER_INTERFACE, router.id)
    conn.network.remove_interface_from_router(router, port=by_port.id)
    assert conn.network.find_port(by_port.id) is None
    conn.network.remove_interface_from_router(router, subnet=subnet.id)
    conn.network.delete_router(router)
    for n in (other, free):
        conn.network.delete_network(n)


# Atomicity

def test_bulk_create_is_all_or_nothing(conn, network):
    net, subnet = network
    conn.network.create_port(network_id=net.id, fixed_ips=[{'ip_address': '10.0.0.50'}])
    bulk = [{'network_id': net.id, 'name': 'ok-1', 'fixed_ips': [{'ip_address': '10.0.0.40'}]},
            {'network_id': net.id, 'name': 'ok-2', 'fixed_ips': [{'ip_address': '10.0.0.41'}]},
            {'network_id': net.id, 'name': 'clash', 'fixed_ips': [{'ip_address': '10.0.0.50'}]}]
    status, error = neutron_error(lambda: list(conn.network.create_ports(bulk)))
    assert (status, error['type']) == (409, 'IpAddressAlreadyAllocated')
    assert sorted(p.name for p in conn.network.ports(network_id=net.id)) == ['']
    # Two ports of one bulk asking for the same address: the second one fails, and with it all.
    status, error = neutron_error(lambda: list(conn.network.create_ports(bulk[:1] + bulk[:1])))
    assert (status, error['type']) == (409, 'IpAddressAlreadyAllocated')
    # The addresses the failed bulks asked for are free.
    created = list(conn.network.create_ports(bulk[:2]))
    assert [p.fixed_ips[0]['ip_address'] for p in created] == ['10.0.0.40', '10.0.0.41']
    networks = [{'name': unique('bulk')}, {'name': unique('bulk'), 'mtu': 10}]
    status, error = neutron_error(lambda: list(Network.bulk_create(conn.network, networks)))
    assert status == 400
    assert not [n for n in conn.network.networks() if n.name in {x['name'] for x in networks}]


def test_failed_port_create_reserves_nothing(conn, network):
    net, subnet = network
    conn.network.create_port(network_id=net.id, fixed_ips=[{'ip_address': '10.0.0.60'}])
    status, _ = neutron_error(conn.network.create_port, network_id=net.id, fixed_ips=[
        {'ip_address': '10.0.0.61'}, {'ip_address': '10.0.0.60'}])
    assert status == 409
    port = conn.network.create_port(network_id=net.id, fixed_ips=[{'ip_address': '10.0.0.61'}])
    assert port.fixed_ips[0]['ip_address'] == '10.0.0.61'


# Projects

def test_projects(api_server):
    mine = connect(api_server.url)                      # no header: [api] default_project_id
    other = connect(api_server.url, project='other')
    admin = connect(api_server.url, project='ops', admin=True)
    net = mine.network.create_network(name=unique('mine'))
    assert (net.project_id, net.tenant_id) == ('demo', 'demo')
    theirs = other.network.create_network(name=unique('theirs'))
    assert theirs.project_id == 'other'
    named = mine.network.create_network(name=unique('named'), project_id='p3')
    assert named.project_id == 'p3'   # noauth: the body may name the project

    assert net.id in {n.id for n in mine.network.networks()}
    assert theirs.id not in {n.id for n in mine.network.networks()}
    assert {n.project_id for n in other.network.networks()} == {'other'}
    everyone = {n.id for n in admin.network.networks()}
    assert {net.id, theirs.id, named.id} <= everyone
    assert [n.id for n in admin.network.networks(project_id='other')] == [theirs.id]
    status, error = neutron_error(other.network.get_network, net.id)
    assert (status, error['type']) == (404, 'NetworkNotFound')
    status, error = neutron_error(other.network.create_network, name='x', project_id='demo')
    assert status == 400
    shared = admin.network.create_network(name=unique('shared'), is_shared=True,
                                          project_id='ops')
    assert shared.id in {n.id for n in other.network.networks()}
    for conn, network in ((mine, net), (other, theirs), (admin, named), (admin, shared)):
        conn.network.delete_network(network)


# Tags and revisions

def test_tags_and_if_match(conn):
    net = conn.network.create_network(name=unique('tags'))
    conn.network.set_tags(net, ['red', 'blue'])
    assert sorted(conn.network.get_network(net.id).tags) == ['blue', 'red']
    assert net.id in {n.id for n in conn.network.networks(tags='red')}
    assert net.id not in {n.id for n in conn.network.networks(tags='green')}
    conn.network.remove_tag(conn.network.get_network(net.id), 'red')
    assert conn.network.get_network(net.id).tags == ['blue']
    current = conn.network.get_network(net.id)
    status, error = neutron_error(conn.network.update_network, net, name='stale',
                                  if_revision=current.revision_number - 1)
    assert (status, error['type']) == (412, 'PreconditionFailed')
    revision = current.revision_number
    renamed = conn.network.update_network(net, name='fresh', if_revision=revision)
    assert renamed.name == 'fresh' and renamed.revision_number > revision
    conn.network.delete_network(net)


def test_ipv6_slaac_subnet(conn):
    net = conn.network.create_network(name=unique('v6'))
    conn.network.create_subnet(network_id=net.id, cidr='fd00:1::/64', ip_version=6,
                               ipv6_address_mode='slaac', ipv6_ra_mode='slaac')
    port = conn.network.create_port(network_id=net.id, mac_address='fa:16:3e:11:22:33')
    assert port.fixed_ips[0]['ip_address'] == 'fd00:1::f816:3eff:fe11:2233'
    conn.network.delete_port(port)
    conn.network.delete_network(net)
