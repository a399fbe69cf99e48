"""Routers' external gateways against a real df-api, as Neutron's l3_db answers.

The gateway is a port (network:router_gateway, no project, as Neutron makes it) holding the
router's address on the external network; it is created, readdressed, moved and deleted with
the router's external_gateway_info, in the same commit.
"""
import ipaddress

from .conftest import cli_for, neutron_error, raw, unique


def external(admin, cidr='203.0.113.0/24', **subnet):
    """An admin's external network with one subnet."""
    net = admin.network.create_network(name=unique('public'), is_router_external=True)
    sub = admin.network.create_subnet(network_id=net.id, cidr=cidr, ip_version=4, **subnet)
    return net, sub


def gateway_ports(admin, router_id):
    return list(admin.network.ports(device_id=router_id, device_owner='network:router_gateway'))


def test_router_created_with_a_gateway(admin, user):
    public, sub = external(admin)
    router = user.network.create_router(name='r', external_gateway_info={
        'network_id': public.id})
    info = router.external_gateway_info
    assert list(info) == ['network_id', 'external_fixed_ips', 'enable_snat']
    assert (info['network_id'], info['enable_snat']) == (public.id, True)
    (fixed,) = info['external_fixed_ips']
    assert fixed['subnet_id'] == sub.id
    assert ipaddress.ip_address(fixed['ip_address']) in ipaddress.ip_network(sub.cidr)
    assert fixed['ip_address'] != sub.gateway_ip
    (port,) = gateway_ports(admin, router.id)
    assert (port.project_id, port.network_id, port.fixed_ips) == ('', public.id, [fixed])
    assert port.mac_address.startswith('fa:16:3e:')
    # As in Neutron, the port has no project: its router's owner does not see it.
    assert not list(user.network.ports(device_id=router.id))
    assert user.network.get_router(router.id).external_gateway_info == info
    user.network.delete_router(router)
    assert not gateway_ports(admin, router.id)   # the port goes with its router


def test_gateway_set_changed_and_cleared(admin, user):
    public, sub = external(admin)
    other, other_sub = external(admin, '198.51.100.0/24')
    router = user.network.create_router()
    assert router.external_gateway_info is None
    router = user.network.update_router(router, external_gateway_info={'network_id': public.id})
    (first,) = gateway_ports(admin, router.id)
    # The same network again changes nothing.
    router = user.network.update_router(router.id, external_gateway_info={
        'network_id': public.id})
    assert [p.id for p in gateway_ports(admin, router.id)] == [first.id]
    # Another external network: a new port there, the old one gone.
    router = user.network.update_router(router.id, external_gateway_info={
        'network_id': other.id})
    (moved,) = gateway_ports(admin, router.id)
    assert moved.id != first.id and moved.fixed_ips[0]['subnet_id'] == other_sub.id
    assert admin.network.find_port(first.id) is None
    for cleared in (None, {}):
        router = user.network.update_router(router.id, external_gateway_info={
            'network_id': public.id})
        router = user.network.update_router(router.id, external_gateway_info=cleared)
        assert router.external_gateway_info is None and not gateway_ports(admin, router.id)
    user.network.delete_router(router)


def test_admin_chooses_addresses_and_snat(admin, user):
    public, sub = external(admin)
    router = admin.network.create_router(external_gateway_info={
        'network_id': public.id, 'enable_snat': False,
        'external_fixed_ips': [{'subnet_id': sub.id, 'ip_address': '203.0.113.10'}]})
    assert router.external_gateway_info == {
        'network_id': public.id, 'enable_snat': False,
        'external_fixed_ips': [{'subnet_id': sub.id, 'ip_address': '203.0.113.10'}]}
    (port,) = gateway_ports(admin, router.id)
    # Another address on the same network: the same port, readdressed.
    router = admin.network.update_router(router.id, external_gateway_info={
        'network_id': public.id, 'external_fixed_ips': [{'ip_address': '203.0.113.11'}]})
    assert router.external_gateway_info['external_fixed_ips'] == [
        {'subnet_id': sub.id, 'ip_address': '203.0.113.11'}]
    assert router.external_gateway_info['enable_snat'] is True   # not given: the default
    assert [p.id for p in gateway_ports(admin, router.id)] == [port.id]
    # The old address is free again, the new one taken.
    assert admin.network.create_port(network_id=public.id, fixed_ips=[
        {'ip_address': '203.0.113.10'}])
    status, error = neutron_error(admin.network.create_port, network_id=public.id,
                                  fixed_ips=[{'ip_address': '203.0.113.11'}])
    assert (status, error['type']) == (409, 'IpAddressAlreadyAllocated')

    mine = user.network.create_router()
    for key, value in (('enable_snat', False), ('external_fixed_ips', [{'subnet_id': sub.id}])):
        status, error = neutron_error(user.network.update_router, mine.id,
                                      external_gateway_info={'network_id': public.id,
                                                             key: value})
        assert (status, error['type'], error['message']) == (
            403, 'PolicyNotAuthorized',
            '(rule:update_router and (rule:update_router:external_gateway_info and '
            '(rule:update_router:external_gateway_info:network_id and '
            f'rule:update_router:external_gateway_info:{key}))) is disallowed by policy')
    status, error = neutron_error(user.network.create_router, external_gateway_info={
        'network_id': public.id, 'enable_snat': True})
    assert (status, error['type']) == (403, 'PolicyNotAuthorized')


def test_gateway_errors(admin, user):
    public, sub = external(admin)
    internal = user.network.create_network()
    router = user.network.create_router()
    status, error = neutron_error(user.network.update_router, router.id, external_gateway_info={
        'network_id': internal.id})
    assert (status, error['type'], error['message']) == (
        400, 'BadRequest', f'Bad router request: Network {internal.id} is not an external '
                           'network.')
    missing = '00000000-0000-4000-8000-000000000000'
    status, error = neutron_error(user.network.update_router, router.id, external_gateway_info={
        'network_id': missing})
    assert (status, error['type']) == (404, 'NetworkNotFound')
    status, error = neutron_error(admin.network.update_router, router.id, external_gateway_info={
        'network_id': public.id, 'external_fixed_ips': [{'ip_address': sub.gateway_ip}]})
    assert (status, error['message']) == (
        400, f'Bad router request: External IP {sub.gateway_ip} is the same as the gateway IP.')
    status, body = raw(user, 'put', f'/routers/{router.id}', json={'router': {
        'external_gateway_info': {'enable_snat': True}}})
    assert (status, body['NeutronError']['type']) == (400, 'HTTPBadRequest')
    assert body['NeutronError']['message'].startswith(
        "Invalid input for external_gateway_info. Reason: Validation of dictionary's keys "
        "failed. Expected keys: {'network_id'}")
    status, body = raw(user, 'put', f'/routers/{router.id}', json={'router': {
        'external_gateway_info': {'network_id': public.id, 'bogus': 1}}})
    assert (status, body['NeutronError']['message']) == (
        400, 'Invalid input for external_gateway_info. Reason: Unexpected keys supplied: bogus.')
    assert user.network.get_router(router.id).external_gateway_info is None


def test_gateway_port_and_network_stay_while_used(admin, user):
    public, sub = external(admin)
    router = user.network.create_router(external_gateway_info={'network_id': public.id})
    (port,) = gateway_ports(admin, router.id)
    status, error = neutron_error(admin.network.delete_port, port.id)
    assert (status, error['type'], error['message']) == (
        409, 'ServicePortInUse', f'Port {port.id} cannot be deleted directly via the port API: '
                                 'has device owner network:router_gateway.')
    status, error = neutron_error(admin.network.delete_network, public.id)
    assert (status, error['type']) == (409, 'NetworkInUse')
    status, error = neutron_error(admin.network.update_network, public.id,
                                  is_router_external=False)
    assert (status, error['type'], error['message']) == (
        409, 'ExternalNetworkInUse', f'External network {public.id} cannot be updated to be '
                                     'made non-external, since it has existing gateway ports.')
    status, error = neutron_error(admin.network.delete_subnet, sub.id)
    assert (status, error['type']) == (409, 'SubnetInUse')
    user.network.delete_router(router)
    admin.network.delete_network(public.id)


def test_interfaces_may_not_overlap_the_external_subnets(admin, user):
    public, sub = external(admin, '10.60.0.0/24')
    net = user.network.create_network()
    inside = user.network.create_subnet(network_id=net.id, cidr='10.60.0.0/25', ip_version=4)
    router = user.network.create_router(external_gateway_info={'network_id': public.id})
    status, error = neutron_error(user.network.add_interface_to_router, router,
                                  subnet=inside.id)
    assert (status, error['type']) == (400, 'BadRequest') and 'overlaps' in error['message']
    # And the other way round: a gateway whose subnets overlap an interface's.
    other = user.network.create_router()
    user.network.add_interface_to_router(other, subnet=inside.id)
    status, error = neutron_error(user.network.update_router, other.id,
                                  external_gateway_info={'network_id': public.id})
    assert (status, error['type']) == (400, 'BadRequest') and 'overlaps' in error['message']


def test_no_address_left_for_the_gateway(admin, user):
    public, sub = external(admin, '192.0.2.0/30')   # one address besides the gateway
    first = user.network.create_router(external_gateway_info={'network_id': public.id})
    status, error = neutron_error(user.network.create_router, external_gateway_info={
        'network_id': public.id})
    assert (status, error['type']) == (409, 'IpAddressGenerationFailure')
    assert len(list(admin.network.routers(id=first.id))) == 1
    user.network.delete_router(first)


def test_extra_routes_through_the_gateway(admin, user):
    """A route's nexthop may be on the external subnet while the gateway is there."""
    public, sub = external(admin, '198.18.0.0/24')
    router = user.network.create_router(external_gateway_info={'network_id': public.id})
    router = user.network.update_router(router.id, routes=[
        {'destination': '10.99.0.0/16', 'nexthop': '198.18.0.254'}])
    assert router.routes == [{'destination': '10.99.0.0/16', 'nexthop': '198.18.0.254'}]
    status, error = neutron_error(user.network.update_router, router.id,
                                  external_gateway_info=None)
    assert (status, error['type']) == (400, 'InvalidRoutes')
    user.network.update_router(router.id, routes=[])
    user.network.update_router(router.id, external_gateway_info=None)


def test_cli_sets_and_unsets_the_gateway(start_apis, tmp_path):
    server, = start_apis(1, {'api': {'default_roles': 'admin'}})
    cli = cli_for(server, tmp_path)
    cli('network', 'create', '--external', 'public')
    subnet = cli('subnet', 'create', '--network', 'public', '--subnet-range', '203.0.113.0/24',
                 '--no-dhcp', 'public-subnet')
    cli('router', 'create', 'r')
    cli('router', 'set', '--external-gateway', 'public', 'r', json_output=False)
    info = cli('router', 'show', 'r')['external_gateway_info']
    assert info['enable_snat'] is True
    assert [f['subnet_id'] for f in info['external_fixed_ips']] == [subnet['id']]
    cli('router', 'set', '--external-gateway', 'public', '--disable-snat', '--fixed-ip',
        'subnet=public-subnet,ip-address=203.0.113.5', 'r', json_output=False)
    info = cli('router', 'show', 'r')['external_gateway_info']
    assert (info['enable_snat'], info['external_fixed_ips']) == (
        False, [{'subnet_id': subnet['id'], 'ip_address': '203.0.113.5'}])
    cli('router', 'unset', '--external-gateway', 'r', json_output=False)
    assert cli('router', 'show', 'r')['external_gateway_info'] in (None, '')
    cli('router', 'delete', 'r', json_output=False)
    cli('network', 'delete', 'public', json_output=False)
    assert not server.errors_logged()
