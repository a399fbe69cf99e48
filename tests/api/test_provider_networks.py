"""Provider networks and segment allocation against a real df-api, as Neutron's ML2 answers.

The server of this module has VLAN ids 100-102 on physnet1, physnet2 for provider VLANs
only, and flat networks on physnet1 and physnet3 (conftest.ML2_CONFIG).
"""
import pytest

from dragonflow import conf as df_conf
from dragonflow.model import Network
from dragonflow.store import api as store_api

from .conftest import ML2_CONFIG, cli_for, connect, error_of, in_process, neutron_error, raw, unique


def invalid(conn, message: str, **attrs):
    """A network create refused as ML2 refuses it: InvalidInput, 400, ``message``."""
    status, error = neutron_error(conn.network.create_network, **attrs)
    assert (status, error['type'], error['message']) == (
        400, 'InvalidInput', f'Invalid input for operation: {message}.'), error


def segment(net) -> tuple:
    return (net.provider_network_type, net.provider_physical_network,
            net.provider_segmentation_id)


def test_flat_network_one_per_physnet(admin):
    net = admin.network.create_network(name='flat1', provider_network_type='flat',
                                       provider_physical_network='physnet1')
    assert segment(net) == ('flat', 'physnet1', None) and net.mtu == 1500
    status, error = neutron_error(admin.network.create_network, provider_network_type='flat',
                                  provider_physical_network='physnet1')
    assert (status, error['type'], error['message']) == (
        409, 'FlatNetworkInUse',
        'Unable to create the flat network. Physical network physnet1 is in use.')
    admin.network.delete_network(net)   # its segment goes with it
    again = admin.network.create_network(provider_network_type='flat',
                                         provider_physical_network='physnet1')
    admin.network.delete_network(again)


def test_flat_network_errors(admin):
    invalid(admin, "physical_network 'physnet2' unknown for flat provider network",
            provider_network_type='flat', provider_physical_network='physnet2')
    invalid(admin, 'physical_network required for flat provider network',
            provider_network_type='flat')
    invalid(admin, 'segmentation_id prohibited for flat provider network',
            provider_network_type='flat', provider_physical_network='physnet3',
            provider_segmentation_id=5)


def test_vlan_network_ids_are_unique_per_physnet(admin):
    net = admin.network.create_network(provider_network_type='vlan',
                                       provider_physical_network='physnet2',
                                       provider_segmentation_id=7)
    assert segment(net) == ('vlan', 'physnet2', 7) and net.mtu == 1500
    status, error = neutron_error(admin.network.create_network, provider_network_type='vlan',
                                  provider_physical_network='physnet2',
                                  provider_segmentation_id=7)
    assert (status, error['type'], error['message']) == (
        409, 'VlanIdInUse', 'Unable to create the network. The VLAN 7 on physical network '
                            'physnet2 is in use.')
    # The same id on another physnet is another segment; an id outside the ranges is fine.
    other = admin.network.create_network(provider_network_type='vlan',
                                         provider_physical_network='physnet1',
                                         provider_segmentation_id=7)
    for n in (net, other):
        admin.network.delete_network(n)


def test_vlan_network_errors(admin):
    invalid(admin, 'segmentation_id out of range (1 through 4094)',
            provider_network_type='vlan', provider_physical_network='physnet1',
            provider_segmentation_id=4095)
    invalid(admin, 'segmentation_id requires physical_network for VLAN provider network',
            provider_network_type='vlan', provider_segmentation_id=100)
    invalid(admin, "physical_network 'physnet9' unknown for VLAN provider network",
            provider_network_type='vlan', provider_physical_network='physnet9')
    invalid(admin, 'network_type required', provider_physical_network='physnet1')


def test_vlan_ids_allocated_from_the_ranges_until_none_is_left(admin):
    nets = [admin.network.create_network(provider_network_type='vlan',
                                         provider_physical_network='physnet1')
            for _ in range(3)]
    assert sorted(n.provider_segmentation_id for n in nets) == [100, 101, 102]
    status, error = neutron_error(admin.network.create_network, provider_network_type='vlan',
                                  provider_physical_network='physnet1')
    assert (status, error['type'], error['message']) == (
        503, 'NoNetworkAvailable',
        'Unable to create the network. No project network is available for allocation.')
    # physnet2 has no range: only named ids.
    assert neutron_error(admin.network.create_network, provider_network_type='vlan',
                         provider_physical_network='physnet2')[0] == 503
    admin.network.delete_network(nets[1])
    again = admin.network.create_network(provider_network_type='vlan',
                                         provider_physical_network='physnet1')
    assert again.provider_segmentation_id == nets[1].provider_segmentation_id
    for n in (nets[0], nets[2], again):
        admin.network.delete_network(n)


@pytest.mark.parametrize('network_type, mtu', [('vxlan', 1450), ('geneve', 1450),
                                               ('gre', 1458)])
def test_tunnel_networks(admin, network_type, mtu):
    net = admin.network.create_network(provider_network_type=network_type,
                                       provider_segmentation_id=5000)
    assert segment(net) == (network_type, None, 5000) and net.mtu == mtu
    status, error = neutron_error(admin.network.create_network,
                                  provider_network_type=network_type,
                                  provider_segmentation_id=5000)
    assert (status, error['type'], error['message']) == (
        409, 'TunnelIdInUse', 'Unable to create the network. The tunnel ID 5000 is in use.')
    invalid(admin, f'provider:physical_network specified for {network_type} network',
            provider_network_type=network_type, provider_physical_network='physnet1')
    partial = admin.network.create_network(provider_network_type=network_type)
    assert 1 <= partial.provider_segmentation_id <= 65535
    for n in (net, partial):
        admin.network.delete_network(n)


def test_tunnel_ids_the_encapsulation_cannot_carry(admin):
    invalid(admin, 'segmentation_id out of range (1 through 16777215)',
            provider_network_type='vxlan', provider_segmentation_id=2 ** 24)
    invalid(admin, 'segmentation_id out of range (1 through 4294967295)',
            provider_network_type='gre', provider_segmentation_id=2 ** 32)
    net = admin.network.create_network(provider_network_type='gre',
                                       provider_segmentation_id=2 ** 32 - 1)
    admin.network.delete_network(net)


def test_unknown_types_are_not_supported(admin):
    for network_type in ('local', 'bogus'):
        invalid(admin, f"network_type value '{network_type}' not supported",
                provider_network_type=network_type)


def test_tenant_networks_get_a_vni_and_do_not_see_provider_attributes(admin, user):
    nets = [user.network.create_network(name=unique('tenant')) for _ in range(3)]
    shown = [admin.network.get_network(n.id) for n in nets]
    assert {s.provider_network_type for s in shown} == {'vxlan'}
    assert {s.provider_physical_network for s in shown} == {None}
    vnis = [s.provider_segmentation_id for s in shown]
    assert len(set(vnis)) == 3 and all(1 <= v <= 65535 for v in vnis)
    assert {n.mtu for n in nets} == {1450}
    # Neutron's policy shows provider:* to admins only.
    for path in (f'/networks/{nets[0].id}', '/networks'):
        status, body = raw(user, 'get', path)
        for network in body.get('networks', [body.get('network')]):
            assert not [k for k in network if k.startswith('provider:')], network
    status, body = raw(user, 'post', '/networks', json={'network': {}})
    assert status == 201 and 'provider:network_type' not in body['network']
    for n in nets:
        user.network.delete_network(n)


def test_only_admins_set_provider_attributes(user):
    status, error = neutron_error(user.network.create_network, provider_network_type='vlan',
                                  provider_physical_network='physnet1')
    assert (status, error['type']) == (403, 'PolicyNotAuthorized')


def test_requested_mtu_above_the_types_is_refused(admin):
    invalid(admin, 'Requested MTU is too big, maximum is 1450', mtu=1500)
    net = admin.network.create_network(mtu=1400)
    assert net.mtu == 1400
    status, error = neutron_error(admin.network.update_network, net.id, mtu=9000)
    assert (status, error['type']) == (400, 'InvalidInput')
    flat = admin.network.create_network(provider_network_type='flat',
                                        provider_physical_network='physnet3', mtu=1500)
    assert flat.mtu == 1500
    for n in (net, flat):
        admin.network.delete_network(n)


def test_provider_updates_as_ml2_allows_them(admin):
    vxlan = admin.network.create_network(provider_network_type='vxlan')
    before = segment(vxlan)   # (the SDK keeps a refused update's values in its object)
    status, error = neutron_error(admin.network.update_network, vxlan,
                                  provider_network_type='vlan')
    assert (status, error['type'], error['message']) == (
        400, 'InvalidInput', 'Invalid input for operation: Plugin does not support updating '
                             'the following provider network attributes: '
                             'provider:network_type, provider:physical_network.')
    status, error = neutron_error(admin.network.update_network, vxlan.id,
                                  provider_segmentation_id=77)
    assert (status, error['message']) == (
        400, 'Invalid input for operation: Only VLAN type networks can be updated..')  # sic
    # The same values are no change.
    same = admin.network.update_network(vxlan.id, provider_network_type='vxlan', name='same')
    assert segment(same) == before

    vlan = admin.network.create_network(provider_network_type='vlan',
                                        provider_physical_network='physnet2',
                                        provider_segmentation_id=20)
    moved = admin.network.update_network(vlan, provider_segmentation_id=21)
    assert segment(moved) == ('vlan', 'physnet2', 21)
    freed = admin.network.create_network(provider_network_type='vlan',
                                         provider_physical_network='physnet2',
                                         provider_segmentation_id=20)   # 20 is free again
    assert neutron_error(admin.network.update_network, vlan.id,
                         provider_segmentation_id=20)[1]['type'] == 'VlanIdInUse'
    port = admin.network.create_port(network_id=vlan.id, binding_host_id='compute-1')
    status, error = neutron_error(admin.network.update_network, vlan.id,
                                  provider_segmentation_id=22)
    assert (status, error['message']) == (400, (
        'Invalid input for operation: Provider network attribute provider:segmentation_id '
        'cannot be updated if any port in the network has not the following '
        'binding:vif_type: unbound, binding_failed.'))
    admin.network.delete_port(port)
    for n in (vxlan, vlan, freed):
        admin.network.delete_network(n)


def test_tenant_range_spent_is_no_network_available(start_apis):
    server, = start_apis(1, {'ml2_type_vxlan': {'vni_ranges': '10:11'}})
    conn = connect(server.url)
    nets = [conn.network.create_network() for _ in range(2)]
    admin = connect(server.url, admin=True)
    assert sorted(admin.network.get_network(n.id).provider_segmentation_id
                  for n in nets) == [10, 11]
    status, error = neutron_error(conn.network.create_network)
    assert (status, error['type']) == (503, 'NoNetworkAvailable')
    conn.network.delete_network(nets[0])
    conn.network.create_network()
    assert not server.errors_logged()


def test_tenant_types_in_order_and_type_drivers(start_apis):
    """[ml2] tenant_network_types: the first with a free id; type_drivers: what exists."""
    server, = start_apis(1, {'ml2': {'type_drivers': 'vxlan,vlan',
                                     'tenant_network_types': 'vlan,vxlan'},
                             'ml2_type_vlan': {'network_vlan_ranges': 'physnet1:5:5'}})
    admin = connect(server.url, admin=True)
    first, second = (admin.network.create_network() for _ in range(2))
    assert segment(first) == ('vlan', 'physnet1', 5) and first.mtu == 1500
    assert second.provider_network_type == 'vxlan' and second.mtu == 1450
    invalid(admin, "network_type value 'gre' not supported", provider_network_type='gre')
    invalid(admin, "network_type value 'flat' not supported", provider_network_type='flat',
            provider_physical_network='physnet1')
    assert not server.errors_logged()


def test_cli_creates_provider_networks(start_apis, tmp_path):
    server, = start_apis(1, {**ML2_CONFIG, 'api': {'default_roles': 'admin'}})
    cli = cli_for(server, tmp_path)
    public = cli('network', 'create', '--external', '--provider-network-type', 'flat',
                 '--provider-physical-network', 'physnet1', 'public')
    assert (public['router:external'], public['provider:network_type'],
            public['provider:physical_network'], public['mtu']) == (True, 'flat', 'physnet1',
                                                                    1500)
    vlan = cli('network', 'create', '--provider-network-type', 'vlan',
               '--provider-physical-network', 'physnet1', '--provider-segment', '101', 'v101')
    assert (vlan['provider:network_type'], vlan['provider:segmentation_id']) == ('vlan', 101)
    shown = cli('network', 'show', 'v101')
    assert shown['provider:segmentation_id'] == 101
    cli('network', 'delete', 'v101', 'public', json_output=False)
    assert not server.errors_logged()


def test_networks_from_before_segments_keep_their_vni(sqlite_store):
    """A network recorded without a segment crosses tunnels with its key as VNI: no new
    tunnel network may be given that VNI."""
    old = Network(id='old', key=10, project_id='demo')
    sqlite_store.commit([store_api.Put(old.table, old.id, old.to_doc())])
    conf = df_conf.load([])
    conf.set_override('vni_ranges', ['10:11'], group='ml2_type_vxlan')
    admin = {'X-Roles': 'admin'}
    with in_process(sqlite_store, conf) as client:
        new = client.post('/v2.0/networks', json={'network': {}}, headers=admin).json()
        assert new['network']['provider:segmentation_id'] == 11
        refused = client.post('/v2.0/networks', json={'network': {
            'provider:network_type': 'vxlan', 'provider:segmentation_id': 10}}, headers=admin)
        assert (refused.status_code, error_of(refused)['type']) == (409, 'TunnelIdInUse')
        assert client.delete('/v2.0/networks/old').status_code == 204
