"""Floating IPs against a real df-api, as Neutron's l3_db (and fip-port-details) answers.

A floating IP holds its address in its own port (network:floatingip, device_id = its id, no
project); associating it finds the router between the port's subnet and the external
network. Every error case gets Neutron's type, HTTP code and message.
"""
import dataclasses
import ipaddress

import pytest

from .conftest import cli_for, connect, neutron_error, raw, unique

PORT_DETAILS = ['name', 'network_id', 'mac_address', 'admin_state_up', 'status', 'device_id',
                'device_owner']


@dataclasses.dataclass
class Topology:
    public: object
    public_subnet: object
    net: object
    subnet: object
    router: object
    port: object


@pytest.fixture
def topo(admin, user):
    """An admin's external network; the user's network behind the user's router, a VM port."""
    public = admin.network.create_network(name=unique('public'), is_router_external=True)
    public_subnet = admin.network.create_subnet(network_id=public.id, cidr='203.0.113.0/24',
                                                ip_version=4)
    net = user.network.create_network(name=unique('net'))
    subnet = user.network.create_subnet(network_id=net.id, cidr='10.0.0.0/24', ip_version=4)
    router = user.network.create_router(external_gateway_info={'network_id': public.id})
    user.network.add_interface_to_router(router, subnet=subnet.id)
    port = user.network.create_port(network_id=net.id, name='vm', device_owner='compute:nova',
                                    device_id=unique('vm'))
    return Topology(public, public_subnet, net, subnet, router, port)


def bad(call, message: str, *args, **kwargs):
    status, error = neutron_error(call, *args, **kwargs)
    assert (status, error['type'], error['message']) == (
        400, 'BadRequest', f'Bad floatingip request: {message}.'), error


def fip_port(admin, fip):
    ports = list(admin.network.ports(device_id=fip.id, device_owner='network:floatingip'))
    assert len(ports) <= 1
    return ports[0] if ports else None


def test_create_without_a_port_and_delete(admin, user, topo):
    fip = user.network.create_ip(floating_network_id=topo.public.id, description='spare')
    assert (fip.port_id, fip.router_id, fip.fixed_ip_address, fip.status,
            fip.port_details) == (None, None, None, 'DOWN', None)
    assert fip.description == 'spare' and fip.project_id == user.session.additional_headers[
        'X-Project-Id']
    assert ipaddress.ip_address(fip.floating_ip_address) in ipaddress.ip_network(
        topo.public_subnet.cidr)
    port = fip_port(admin, fip)
    assert (port.project_id, port.network_id, port.status) == ('', topo.public.id, 'N/A')
    assert port.fixed_ips == [{'subnet_id': topo.public_subnet.id,
                               'ip_address': fip.floating_ip_address}]
    assert port.mac_address.startswith('fa:16:3e:')
    user.network.delete_ip(fip)
    assert fip_port(admin, fip) is None
    status, error = neutron_error(user.network.get_ip, fip.id)
    assert (status, error['type'], error['message']) == (
        404, 'FloatingIPNotFound', f'Floating IP {fip.id} could not be found')


def test_associate_disassociate_reassociate(admin, user, topo):
    fip = user.network.create_ip(floating_network_id=topo.public.id, port_id=topo.port.id)
    address = topo.port.fixed_ips[0]['ip_address']
    assert (fip.port_id, fip.fixed_ip_address, fip.router_id, fip.status) == (
        topo.port.id, address, topo.router.id, 'DOWN')
    assert list(fip.port_details) == PORT_DETAILS
    assert fip.port_details == {
        'name': 'vm', 'network_id': topo.net.id, 'mac_address': topo.port.mac_address,
        'admin_state_up': True, 'status': 'DOWN', 'device_id': topo.port.device_id,
        'device_owner': 'compute:nova'}
    fip = user.network.update_ip(fip, port_id=None)
    assert (fip.port_id, fip.fixed_ip_address, fip.router_id, fip.port_details,
            fip.status) == (None, None, None, None, 'DOWN')
    other = user.network.create_port(network_id=topo.net.id)
    fip = user.network.update_ip(fip, port_id=topo.port.id)
    fip = user.network.update_ip(fip, port_id=other.id)   # moved straight to another port
    assert (fip.port_id, fip.fixed_ip_address) == (other.id, other.fixed_ips[0]['ip_address'])
    fip = user.network.update_ip(fip, description='web')   # the association stays
    assert (fip.port_id, fip.description, fip.router_id) == (other.id, 'web', topo.router.id)
    status, body = raw(user, 'put', f'/floatingips/{fip.id}',
                       json={'floatingip': {'status': 'ACTIVE'}})
    assert (status, body['NeutronError']['message']) == (
        400, 'Cannot update read-only attribute status')
    user.network.delete_ip(fip)


def test_fixed_ip_choice_for_a_port_with_several(admin, user, topo):
    second = user.network.create_subnet(network_id=topo.net.id, cidr='10.0.1.0/24',
                                        ip_version=4)
    user.network.add_interface_to_router(topo.router, subnet=second.id)
    v6 = user.network.create_subnet(network_id=topo.net.id, cidr='fd00::/64', ip_version=6)
    port = user.network.create_port(network_id=topo.net.id, fixed_ips=[
        {'subnet_id': topo.subnet.id}, {'subnet_id': second.id}, {'subnet_id': v6.id}])
    v4 = [f['ip_address'] for f in port.fixed_ips if ':' not in f['ip_address']]
    v6_address = next(f['ip_address'] for f in port.fixed_ips if ':' in f['ip_address'])
    bad(user.network.create_ip, f'Port {port.id} has multiple fixed IPv4 addresses.  Must '
        'provide a specific IPv4 address when assigning a floating IP',
        floating_network_id=topo.public.id, port_id=port.id)
    fip = user.network.create_ip(floating_network_id=topo.public.id, port_id=port.id,
                                 fixed_ip_address=v4[1])
    assert fip.fixed_ip_address == v4[1]
    fip = user.network.update_ip(fip.id, port_id=port.id, fixed_ip_address=v4[0])
    assert fip.fixed_ip_address == v4[0]
    bad(user.network.update_ip, f'Port {port.id} does not have fixed ip 10.0.0.250',
        fip.id, port_id=port.id, fixed_ip_address='10.0.0.250')
    bad(user.network.update_ip, f'Cannot process floating IP association with {v6_address}, '
        'since that is not an IPv4 address', fip.id, port_id=port.id,
        fixed_ip_address=v6_address)
    bad(user.network.create_ip, 'fixed_ip_address cannot be specified without a port_id',
        floating_network_id=topo.public.id, fixed_ip_address=v4[0])


def test_one_floating_ip_per_fixed_ip(admin, user, topo):
    fip = user.network.create_ip(floating_network_id=topo.public.id, port_id=topo.port.id)
    other = user.network.create_ip(floating_network_id=topo.public.id)
    status, error = neutron_error(user.network.update_ip, other.id, port_id=topo.port.id)
    address = topo.port.fixed_ips[0]['ip_address']
    assert (status, error['type'], error['message']) == (
        409, 'FloatingIPPortAlreadyAssociated',
        f'Cannot associate floating IP {other.floating_ip_address} ({other.id}) with port '
        f'{topo.port.id} using fixed IP {address}, as that fixed IP already has a floating IP '
        f'on external network {topo.public.id}.')
    # The same association again is no change.
    assert user.network.update_ip(fip.id, port_id=topo.port.id).port_id == topo.port.id


def test_no_router_to_the_external_network(admin, user, topo):
    lonely = user.network.create_network()
    lonely_subnet = user.network.create_subnet(network_id=lonely.id, cidr='10.7.0.0/24',
                                               ip_version=4)
    port = user.network.create_port(network_id=lonely.id)
    status, error = neutron_error(user.network.create_ip, floating_network_id=topo.public.id,
                                  port_id=port.id)
    assert (status, error['type'], error['message']) == (
        404, 'ExternalGatewayForFloatingIPNotFound',
        f'External network {topo.public.id} is not reachable from subnet {lonely_subnet.id}.  '
        f'Therefore, cannot associate Port {port.id} with a Floating IP.')
    # A router on the subnet without a gateway does not reach it either.
    router = user.network.create_router()
    user.network.add_interface_to_router(router, subnet=lonely_subnet.id)
    assert neutron_error(user.network.create_ip, floating_network_id=topo.public.id,
                         port_id=port.id)[1]['type'] == 'ExternalGatewayForFloatingIPNotFound'
    assert not [f for f in user.network.ips() if f.port_id == port.id]


def test_ports_that_cannot_have_one(admin, user, topo):
    empty = user.network.create_port(network_id=topo.net.id, fixed_ips=[])
    bad(user.network.create_ip, f'Cannot add floating IP to port {empty.id} that has no fixed '
        'IPv4 addresses', floating_network_id=topo.public.id, port_id=empty.id)
    dhcp = user.network.create_port(network_id=topo.net.id, device_owner='network:dhcp')
    # Neutron's message, unformatted as Neutron leaves it.
    bad(user.network.create_ip, 'Port %(id)s is unable to be assigned a floating IP',
        floating_network_id=topo.public.id, port_id=dhcp.id)
    (interface,) = user.network.ports(device_owner='network:router_interface',
                                      network_id=topo.net.id)
    bad(user.network.create_ip, 'Port %(id)s is unable to be assigned a floating IP',
        floating_network_id=topo.public.id, port_id=interface.id)


def test_another_projects_port(admin, user, topo, ml2_server):
    stranger = connect(ml2_server.url, project=unique('stranger'))
    status, error = neutron_error(stranger.network.create_ip,
                                  floating_network_id=topo.public.id, port_id=topo.port.id)
    assert (status, error['type']) == (404, 'PortNotFound')
    # Nor another project's port on the user's own network (df-api shows a port to its
    # project only, so Neutron's 'owned by a different project' is a 404 here).
    theirs = admin.network.create_port(network_id=topo.net.id, project_id='someone-else')
    status, error = neutron_error(user.network.create_ip, floating_network_id=topo.public.id,
                                  port_id=theirs.id)
    assert (status, error['type']) == (404, 'PortNotFound')
    # A user may float its own port on an external network it does not own (the admin's).
    assert user.network.create_ip(floating_network_id=topo.public.id, port_id=topo.port.id)


def test_chosen_address_and_subnet(admin, user, topo):
    status, error = neutron_error(user.network.create_ip, floating_network_id=topo.public.id,
                                  floating_ip_address='203.0.113.50')
    assert (status, error['type'], error['message']) == (
        403, 'PolicyNotAuthorized', '(rule:create_floatingip and '
                                    'rule:create_floatingip:floating_ip_address) is disallowed '
                                    'by policy')
    fip = admin.network.create_ip(floating_network_id=topo.public.id,
                                  floating_ip_address='203.0.113.50')
    assert fip.floating_ip_address == '203.0.113.50'
    status, error = neutron_error(admin.network.create_ip, floating_network_id=topo.public.id,
                                  floating_ip_address='203.0.113.50')
    assert (status, error['type']) == (409, 'IpAddressAlreadyAllocated')
    status, error = neutron_error(admin.network.create_ip, floating_network_id=topo.public.id,
                                  floating_ip_address='198.51.100.7')
    assert (status, error['type']) == (400, 'InvalidIpForNetwork')
    more = admin.network.create_subnet(network_id=topo.public.id, cidr='198.51.100.0/24',
                                       ip_version=4)
    chosen = user.network.create_ip(floating_network_id=topo.public.id, subnet_id=more.id)
    assert ipaddress.ip_address(chosen.floating_ip_address) in ipaddress.ip_network(more.cidr)
    status, error = neutron_error(admin.network.create_ip, floating_network_id=topo.public.id,
                                  subnet_id=more.id, floating_ip_address='203.0.113.9')
    assert (status, error['type']) == (400, 'InvalidIpForSubnet')


def test_networks_that_cannot_have_one(admin, user, topo):
    bad(user.network.create_ip, f'Network {topo.net.id} is not a valid external network',
        floating_network_id=topo.net.id)
    bare = admin.network.create_network(is_router_external=True)
    bad(user.network.create_ip, f'Network {bare.id} does not contain any IPv4 subnet',
        floating_network_id=bare.id)
    admin.network.create_subnet(network_id=bare.id, cidr='fd99::/64', ip_version=6)
    bad(user.network.create_ip, f'Network {bare.id} does not contain any IPv4 subnet',
        floating_network_id=bare.id)
    status, error = neutron_error(user.network.create_ip,
                                  floating_network_id='00000000-0000-4000-8000-000000000000')
    assert (status, error['type']) == (404, 'NetworkNotFound')
    status, body = raw(user, 'post', '/floatingips', json={'floatingip': {}})
    assert (status, body['NeutronError']['message']) == (
        400, "Failed to parse request. Required attribute 'floating_network_id' not specified")


def test_no_address_left(admin, user):
    small = admin.network.create_network(is_router_external=True)
    admin.network.create_subnet(network_id=small.id, cidr='192.0.2.0/30', ip_version=4)
    user.network.create_ip(floating_network_id=small.id)
    status, error = neutron_error(user.network.create_ip, floating_network_id=small.id)
    assert (status, error['type']) == (409, 'IpAddressGenerationFailure')


def test_what_a_floating_ip_keeps(admin, user, topo):
    fip = user.network.create_ip(floating_network_id=topo.public.id, port_id=topo.port.id)
    status, error = neutron_error(admin.network.delete_port, fip_port(admin, fip).id)
    assert (status, error['type']) == (409, 'ServicePortInUse')
    status, error = neutron_error(admin.network.delete_network, topo.public.id)
    assert (status, error['type']) == (409, 'NetworkInUse')
    status, error = neutron_error(user.network.update_router, topo.router.id,
                                  external_gateway_info=None)
    assert (status, error['type'], error['message']) == (
        409, 'RouterExternalGatewayInUseByFloatingIp',
        f'Gateway cannot be updated for router {topo.router.id}, since a gateway to external '
        f'network {topo.public.id} is required by one or more floating IPs.')
    status, error = neutron_error(user.network.remove_interface_from_router, topo.router,
                                  subnet_id=topo.subnet.id)
    assert (status, error['type'], error['message']) == (
        409, 'RouterInterfaceInUseByFloatingIP',
        f'Router interface for subnet {topo.subnet.id} on router {topo.router.id} cannot be '
        'deleted, as it is required by one or more floating IPs.')
    status, error = neutron_error(user.network.delete_router, topo.router.id)
    assert (status, error['type']) == (409, 'RouterInUse')
    status, error = neutron_error(user.network.update_port, topo.port.id,
                                  fixed_ips=[{'subnet_id': topo.subnet.id,
                                              'ip_address': '10.0.0.200'}])
    assert (status, error['message']) == (
        400, f'Bad port request: Cannot update the fixed_ips of the port {topo.port.id}, '
             'because its original fixed_ip has been associated to a floating ip.')
    # Deleting the port disassociates the floating IP, in the same commit.
    user.network.delete_port(topo.port)
    fip = user.network.get_ip(fip.id)
    assert (fip.port_id, fip.fixed_ip_address, fip.router_id, fip.status) == (
        None, None, None, 'DOWN')
    user.network.update_router(topo.router.id, external_gateway_info=None)
    user.network.delete_ip(fip)
    assert fip_port(admin, fip) is None


def test_list_filters_and_visibility(admin, user, topo, ml2_server):
    second = user.network.create_port(network_id=topo.net.id)
    bound = user.network.create_ip(floating_network_id=topo.public.id, port_id=topo.port.id)
    spare = user.network.create_ip(floating_network_id=topo.public.id, description='spare')
    user.network.set_tags(spare, ['blue'])
    other = user.network.create_ip(floating_network_id=topo.public.id, port_id=second.id)

    def ids(**query):
        return {f.id for f in user.network.ips(**query)} & {bound.id, spare.id, other.id}

    assert ids() == {bound.id, spare.id, other.id}
    assert ids(port_id=topo.port.id) == {bound.id}
    assert ids(router_id=topo.router.id) == {bound.id, other.id}
    assert ids(floating_network_id=topo.public.id) == {bound.id, spare.id, other.id}
    assert ids(floating_ip_address=spare.floating_ip_address) == {spare.id}
    assert ids(fixed_ip_address=second.fixed_ips[0]['ip_address']) == {other.id}
    assert ids(status='DOWN') == {bound.id, spare.id, other.id}
    assert ids(status='ACTIVE') == set()
    assert ids(tags='blue') == {spare.id}
    assert ids(description='spare') == {spare.id}
    assert ids(project_id=bound.project_id) == {bound.id, spare.id, other.id}
    status, body = raw(user, 'get', f'/floatingips?fields=floating_ip_address&id={spare.id}')
    assert body == {'floatingips': [{'floating_ip_address': spare.floating_ip_address}]}
    status, body = raw(user, 'get', '/floatingips?sort_key=floating_ip_address&sort_dir=desc')
    addresses = [f['floating_ip_address'] for f in body['floatingips']]
    assert addresses == sorted(addresses, reverse=True)
    status, body = raw(user, 'get', '/floatingips?limit=2')
    assert len(body['floatingips']) == 2 and body['floatingips_links'][0]['rel'] == 'next'
    status, body = raw(user, 'get', '/floatingips?subnet_id=x')   # input only, not a filter
    assert status == 400
    # Only their project (and admins) see them.
    stranger = connect(ml2_server.url, project=unique('stranger'))
    assert not [f for f in stranger.network.ips() if f.id in {bound.id, spare.id}]
    status, error = neutron_error(stranger.network.get_ip, bound.id)
    assert (status, error['type']) == (404, 'FloatingIPNotFound')
    assert neutron_error(stranger.network.delete_ip, bound.id, ignore_missing=False)[0] == 404
    assert {bound.id, spare.id, other.id} <= {f.id for f in admin.network.ips()}


def test_extensions_advertised(user):
    aliases = {e.alias for e in user.network.extensions()}
    assert {'router', 'ext-gw-mode', 'external-net', 'extraroute', 'fip-port-details',
            'provider'} <= aliases


def test_cli_floating_ips(start_apis, tmp_path):
    server, = start_apis(1, {'api': {'default_roles': 'admin'}})
    cli = cli_for(server, tmp_path)
    cli('network', 'create', '--external', 'public')
    cli('subnet', 'create', '--network', 'public', '--subnet-range', '203.0.113.0/24',
        '--no-dhcp', 'public-subnet')
    cli('network', 'create', 'private')
    cli('subnet', 'create', '--network', 'private', '--subnet-range', '10.0.0.0/24',
        'private-subnet')
    cli('router', 'create', 'r')
    cli('router', 'set', '--external-gateway', 'public', 'r', json_output=False)
    cli('router', 'add', 'subnet', 'r', 'private-subnet', json_output=False)
    port = cli('port', 'create', '--network', 'private', 'vm')
    fip = cli('floating', 'ip', 'create', 'public')
    assert (fip['port_id'], fip['status']) == (None, 'DOWN')
    cli('floating', 'ip', 'set', '--port', 'vm', fip['floating_ip_address'], json_output=False)
    shown = cli('floating', 'ip', 'show', fip['id'])
    assert (shown['port_id'], shown['fixed_ip_address']) == (
        port['id'], port['fixed_ips'][0]['ip_address'])
    listed = cli('floating', 'ip', 'list', '--port', 'vm')
    assert [f['ID'] for f in listed] == [fip['id']]
    assert listed[0]['Fixed IP Address'] == port['fixed_ips'][0]['ip_address']
    cli('floating', 'ip', 'unset', '--port', fip['id'], json_output=False)
    assert cli('floating', 'ip', 'show', fip['id'])['port_id'] is None
    chosen = cli('floating', 'ip', 'create', '--floating-ip-address', '203.0.113.77',
                 '--port', 'vm', 'public')
    assert (chosen['floating_ip_address'], chosen['port_id']) == ('203.0.113.77', port['id'])
    cli('floating', 'ip', 'delete', fip['id'], chosen['id'], json_output=False)
    assert cli('floating', 'ip', 'list') == []
    assert not server.errors_logged()
