"""Real Neutron with the ``df`` driver and ``df-l3`` plugin: what Neutron holds, the NB store
holds as df-api's model objects, through updates and deletes, with keys that stay; ports bind
only on registered chassis."""

import openstack
import pytest

from dragonflow.lab.cloud import wait_for
from dragonflow.lab.neutron import NOT_A_CHASSIS
from dragonflow.model import (
    Chassis,
    FloatingIP,
    Network,
    Port,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from dragonflow.model.objects import NOT_PLUGGED_OWNERS
from tests.neutron.conftest import dragonflow_plugins, unique
from tests.neutron.conftest import nb_object as nb

pytestmark = pytest.mark.skipif(dragonflow_plugins() != ('df', 'df-l3'),
                                reason='the df entry points are not installed')


@pytest.fixture
def conn(neutron):
    return neutron.sdk()


@pytest.fixture
def network(conn):
    network = conn.network.create_network(name=unique('net'))
    yield network
    for port in conn.network.ports(network_id=network.id):
        if not port.device_owner.startswith('network:'):
            conn.network.delete_port(port)
    conn.network.delete_network(network, ignore_missing=True)


def test_network_subnet_port_are_mirrored_and_follow_updates(conn, network, neutron_store):
    mirrored = nb(neutron_store, Network, network.id)
    assert mirrored is not None
    assert (mirrored.network_type, mirrored.segmentation_id, mirrored.mtu) == (
        'vxlan', network.provider_segmentation_id, network.mtu)
    assert mirrored.project_id == network.project_id
    subnet = conn.network.create_subnet(network_id=network.id, ip_version=4,
                                        cidr='10.20.0.0/24')
    assert nb(neutron_store, Subnet, subnet.id).cidr == '10.20.0.0/24'
    port = conn.network.create_port(network_id=network.id, name='vm1', allowed_address_pairs=[
        {'ip_address': '10.20.0.200'}])
    mirrored_port = nb(neutron_store, Port, port.id)
    assert mirrored_port.mac_address == port.mac_address
    assert [f.model_dump() for f in mirrored_port.fixed_ips] == port.fixed_ips
    assert mirrored_port.security_groups == port.security_group_ids != []
    assert mirrored_port.allowed_address_pairs[0].mac_address == port.mac_address
    assert mirrored_port.status_source == 'report'
    group = nb(neutron_store, SecurityGroup, port.security_group_ids[0])
    assert group is not None and group.name == 'default'

    conn.network.update_network(network, name='renamed', mtu=1400)
    conn.network.update_port(port, name='vm1-renamed')
    assert nb(neutron_store, Network, network.id).name == 'renamed'
    assert nb(neutron_store, Network, network.id).mtu == 1400
    assert nb(neutron_store, Network, network.id).key == mirrored.key
    assert nb(neutron_store, Port, port.id).name == 'vm1-renamed'
    assert nb(neutron_store, Port, port.id).key == mirrored_port.key

    conn.network.update_port(port, security_group_ids=[], port_security_enabled=False,
                             allowed_address_pairs=[])
    off = nb(neutron_store, Port, port.id)
    assert (off.port_security_enabled, off.security_groups) == (False, [])

    conn.network.delete_port(port)
    assert nb(neutron_store, Port, port.id) is None
    conn.network.delete_subnet(subnet)
    assert nb(neutron_store, Subnet, subnet.id) is None
    conn.network.delete_network(network)
    assert nb(neutron_store, Network, network.id) is None


def test_security_group_and_rules_are_mirrored(conn, neutron_store):
    group = conn.network.create_security_group(name=unique('sg'))
    try:
        mirrored = nb(neutron_store, SecurityGroup, group.id)
        assert mirrored is not None and mirrored.name == group.name
        defaults = [r['id'] for r in group.security_group_rules]
        assert defaults and all(nb(neutron_store, SecurityGroupRule, r) for r in defaults)
        rule = conn.network.create_security_group_rule(
            security_group_id=group.id, direction='ingress', ethertype='IPv6',
            protocol='icmp', remote_ip_prefix='2001:db8::/64')
        mirrored_rule = nb(neutron_store, SecurityGroupRule, rule.id)
        assert (mirrored_rule.direction, mirrored_rule.protocol,
                mirrored_rule.remote_ip_prefix) == ('ingress', 'ipv6-icmp', '2001:db8::/64')
        conn.network.delete_security_group_rule(rule)
        assert nb(neutron_store, SecurityGroupRule, rule.id) is None
    finally:
        conn.network.delete_security_group(group)
    assert nb(neutron_store, SecurityGroup, group.id) is None
    assert not [r for r in neutron_store.list(SecurityGroupRule.table)
                if r.value['security_group_id'] == group.id]


def test_router_interface_gateway_and_floating_ip(conn, neutron_store):
    external = conn.network.create_network(name=unique('ext'), is_router_external=True,
                                           provider_network_type='flat',
                                           provider_physical_network='physnet1')
    ext_subnet = conn.network.create_subnet(network_id=external.id, ip_version=4,
                                            cidr='172.24.9.0/24')
    inside = conn.network.create_network(name=unique('in'))
    subnet = conn.network.create_subnet(network_id=inside.id, ip_version=4,
                                        cidr='10.30.0.0/24')
    neutron_store.put(Chassis.table, 'gw1', Chassis(
        id='gw1', tunnel_ip='192.0.2.1', physical_networks=['physnet1'],
        gateway=True).to_doc())
    router = conn.network.create_router(name=unique('r'))
    try:
        mirrored = nb(neutron_store, Router, router.id)
        assert mirrored is not None and mirrored.interfaces == []
        conn.network.add_interface_to_router(router, subnet=subnet.id)
        mirrored = nb(neutron_store, Router, router.id)
        assert [i.subnet_id for i in mirrored.interfaces] == [subnet.id]
        interface_port = nb(neutron_store, Port, mirrored.interfaces[0].port_id)
        assert interface_port.device_owner == 'network:router_interface'
        assert interface_port.security_groups == []

        conn.network.update_router(router, external_gateway_info={'network_id': external.id})
        mirrored = nb(neutron_store, Router, router.id)
        assert mirrored.external_gateway_info.network_id == external.id
        assert mirrored.gateway_chassis == ['gw1']
        gateway_port = nb(neutron_store, Port, mirrored.gateway_port_id)
        assert gateway_port.device_owner == 'network:router_gateway'
        assert mirrored.key == nb(neutron_store, Router, router.id).key

        vm = conn.network.create_port(network_id=inside.id)
        fip = conn.network.create_ip(floating_network_id=external.id, port_id=vm.id)
        mirrored_fip = nb(neutron_store, FloatingIP, fip.id)
        assert (mirrored_fip.port_id, mirrored_fip.router_id,
                mirrored_fip.floating_ip_address) == (vm.id, router.id,
                                                      fip.floating_ip_address)
        assert nb(neutron_store, Port, mirrored_fip.floating_port_id).device_owner == \
            'network:floatingip'
        other = conn.network.create_port(network_id=inside.id)
        conn.network.update_ip(fip, port_id=other.id)
        moved = nb(neutron_store, FloatingIP, fip.id)
        assert (moved.port_id, moved.status) == (other.id, 'DOWN')
        assert conn.network.get_ip(fip.id).status == 'DOWN'  # until the new chassis reports
        conn.network.update_ip(fip, port_id=vm.id)
        conn.network.delete_port(other)
        conn.network.delete_port(vm)  # Neutron disassociates the floating IP
        assert nb(neutron_store, FloatingIP, fip.id).port_id is None
        conn.network.delete_ip(fip)
        assert nb(neutron_store, FloatingIP, fip.id) is None

        conn.network.update_router(router, external_gateway_info={})
        assert nb(neutron_store, Router, router.id).external_gateway_info is None
        assert nb(neutron_store, Port, mirrored.gateway_port_id) is None
        conn.network.remove_interface_from_router(router, subnet=subnet.id)
        assert nb(neutron_store, Router, router.id).interfaces == []
    finally:
        conn.network.delete_router(router, ignore_missing=True)
        neutron_store.delete(Chassis.table, 'gw1')
        conn.network.delete_network(inside)
        conn.network.delete_network(external)
    assert nb(neutron_store, Router, router.id) is None
    assert nb(neutron_store, Subnet, ext_subnet.id) is None


def test_a_new_gateway_chassis_joins_existing_routers_lists(conn, neutron_store):
    """The periodic workers run df-api's scheduler over the NB store."""
    physnet = unique('physnet')[:15]
    external = conn.network.create_network(name=unique('ext'), is_router_external=True,
                                           provider_network_type='flat',
                                           provider_physical_network=physnet)
    conn.network.create_subnet(network_id=external.id, ip_version=4, cidr='172.24.7.0/24')
    router = conn.network.create_router(name=unique('r'), external_gateway_info={
        'network_id': external.id})
    chassis = unique('gateway')
    try:
        assert nb(neutron_store, Router, router.id).gateway_chassis == []  # none can yet
        neutron_store.put(Chassis.table, chassis, Chassis(
            id=chassis, tunnel_ip='192.0.2.20', physical_networks=[physnet],
            gateway=True).to_doc())
        wait_for(lambda: nb(neutron_store, Router, router.id).gateway_chassis == [chassis],
                 timeout=30, what='the new gateway chassis in the router\'s list')
    finally:
        conn.network.delete_router(router)
        neutron_store.delete(Chassis.table, chassis)
        conn.network.delete_network(external)


def test_port_binds_on_a_registered_chassis_only(neutron, conn, network, neutron_store):
    conn.network.create_subnet(network_id=network.id, ip_version=4, cidr='10.40.0.0/24')
    host = unique('compute')
    neutron_store.put(Chassis.table, host, Chassis(
        id=host, tunnel_ip='192.0.2.7', tunnel_types=['vxlan']).to_doc())
    try:
        port = conn.network.create_port(network_id=network.id, binding_host_id=host)
        assert port.binding_vif_type == 'ovs'
        assert port.binding_vif_details['bridge_name'] == 'br-int'
        assert port.binding_vif_details['port_filter'] is True
        assert port.binding_vif_details['datapath_type'] == 'system'
        assert port.status == 'DOWN'  # until the chassis reports the flows in
        assert provisioning_blocks(neutron, port.id) == ['df']
        assert nb(neutron_store, Port, port.id).binding_host_id == host
        unbound = conn.network.create_port(network_id=network.id)
        assert provisioning_blocks(neutron, unbound.id) == []  # no host: nothing to wait for
        stranger = conn.network.create_port(network_id=network.id,
                                            binding_host_id=unique(NOT_A_CHASSIS))
        assert stranger.binding_vif_type == 'binding_failed'
    finally:
        neutron_store.delete(Chassis.table, host)


def test_vif_details_carry_the_chassis_datapath_type(conn, network, neutron_store):
    conn.network.create_subnet(network_id=network.id, ip_version=4, cidr='10.41.0.0/24')
    host = unique('dpdk')
    neutron_store.put(Chassis.table, host, Chassis(
        id=host, tunnel_ip='192.0.2.8', tunnel_types=['vxlan'],
        datapath_type='netdev').to_doc())
    try:
        port = conn.network.create_port(network_id=network.id, binding_host_id=host)
        assert port.binding_vif_details['datapath_type'] == 'netdev'
    finally:
        neutron_store.delete(Chassis.table, host)


def test_physical_segment_binds_only_where_its_physnet_is(conn, neutron_store):
    network = conn.network.create_network(name=unique('vlan'), provider_network_type='vlan',
                                          provider_physical_network='physnet1',
                                          provider_segmentation_id=150)
    conn.network.create_subnet(network_id=network.id, ip_version=4, cidr='10.42.0.0/24')
    tunnel_only, on_physnet = unique(NOT_A_CHASSIS), unique('physnet-host')
    neutron_store.put(Chassis.table, tunnel_only, Chassis(
        id=tunnel_only, tunnel_ip='192.0.2.10').to_doc())
    neutron_store.put(Chassis.table, on_physnet, Chassis(
        id=on_physnet, tunnel_ip='192.0.2.11', physical_networks=['physnet1']).to_doc())
    try:
        bound = conn.network.create_port(network_id=network.id, binding_host_id=on_physnet)
        refused = conn.network.create_port(network_id=network.id, binding_host_id=tunnel_only)
        assert bound.binding_vif_type == 'ovs'
        assert refused.binding_vif_type == 'binding_failed'
        mirrored = nb(neutron_store, Network, network.id)
        assert (mirrored.network_type, mirrored.physical_network,
                mirrored.segmentation_id) == ('vlan', 'physnet1', 150)
        for port in (bound, refused):
            conn.network.delete_port(port)
    finally:
        neutron_store.delete(Chassis.table, tunnel_only)
        neutron_store.delete(Chassis.table, on_physnet)
        conn.network.delete_network(network)


def test_vlan_id_changes_while_no_port_is_bound(conn, neutron_store):
    network = conn.network.create_network(name=unique('vlan'), provider_network_type='vlan',
                                          provider_physical_network='physnet1',
                                          provider_segmentation_id=160)
    try:
        key = nb(neutron_store, Network, network.id).key
        conn.network.update_network(network, provider_segmentation_id=161)
        mirrored = nb(neutron_store, Network, network.id)
        assert (mirrored.segmentation_id, mirrored.key) == (161, key)
    finally:
        conn.network.delete_network(network)


def test_extra_routes_and_group_updates_follow(conn, neutron_store):
    network = conn.network.create_network(name=unique('net'))
    subnet = conn.network.create_subnet(network_id=network.id, ip_version=4,
                                        cidr='10.43.0.0/24')
    router = conn.network.create_router(name=unique('r'))
    group = conn.network.create_security_group(name=unique('sg'))
    try:
        conn.network.add_interface_to_router(router, subnet=subnet.id)
        route = {'destination': '10.99.0.0/16', 'nexthop': '10.43.0.9'}
        conn.network.update_router(router, routes=[route])
        assert [r.model_dump() for r in nb(neutron_store, Router, router.id).routes] == [route]
        more = {'destination': '10.98.0.0/16', 'nexthop': '10.43.0.10'}
        conn.network.add_extra_routes_to_router(router, body={'router': {'routes': [more]}})
        assert sorted(r.destination for r in nb(neutron_store, Router, router.id).routes) == [
            '10.98.0.0/16', '10.99.0.0/16']
        conn.network.update_router(router, routes=[])
        conn.network.update_security_group(group, description='renamed')
        assert nb(neutron_store, SecurityGroup, group.id).description == 'renamed'
        conn.network.remove_interface_from_router(router, subnet=subnet.id)
    finally:
        conn.network.delete_security_group(group)
        conn.network.delete_router(router)
        conn.network.delete_network(network)


def provisioning_blocks(neutron, port_id: str) -> list[str]:
    """The entities Neutron waits for before the port goes ACTIVE (its provisioningblocks)."""
    import pymysql
    db = pymysql.connect(unix_socket=str(neutron.socket), user='root', database='neutron')
    try:
        with db.cursor() as cursor:
            cursor.execute('SELECT b.entity FROM provisioningblocks b JOIN ports p ON '
                           'p.standard_attr_id = b.standard_attr_id WHERE p.id = %s',
                           (port_id,))
            return sorted(row[0] for row in cursor.fetchall())
    finally:
        db.close()


def test_member_cannot_bind_but_mirror_is_per_project(neutron, neutron_store):
    project = unique('project')
    member = neutron.sdk(project=project, admin=False)
    network = member.network.create_network(name=unique('net'))
    try:
        assert nb(neutron_store, Network, network.id).project_id == project
        with pytest.raises(openstack.exceptions.HttpException):
            member.network.create_port(network_id=network.id, binding_host_id='h')
    finally:
        member.network.delete_network(network)


# What differs between two clouds by chance, not by shape: ids, keys, times, segment ids,
# MACs and addresses Neutron (like df-api) picks at random.
VOLATILE = {'id', 'key', 'created_at', 'updated_at', 'provider:segmentation_id',
            'mac_address', 'ip_address', 'floating_ip_address', 'fixed_ip_address', 'name',
            'gateway_chassis'}


def shape(value, ids):
    """The document with ids replaced by their table's name and chance values dropped."""
    if isinstance(value, dict):
        return {k: shape(v, ids) for k, v in sorted(value.items()) if k not in VOLATILE}
    if isinstance(value, list):
        return sorted((shape(v, ids) for v in value), key=repr)
    if isinstance(value, str) and value in ids:
        return f'<{ids[value]}>'
    return value


def as_df_api(doc: dict) -> dict:
    """The differences the contract makes: Neutron's objects take their status from chassis
    reports, and Neutron creates its network:* ports (router interface, gateway, floating IP)
    with port security off, which the data plane never reads for ports no VM plugs into."""
    doc = dict(doc)
    if doc.get('status_source') == 'report':
        doc['status_source'] = 'chassis'
    if doc.get('device_owner') in NOT_PLUGGED_OWNERS and doc.get('security_groups') == []:
        doc['port_security_enabled'] = True
    return doc


def same_calls(conn):
    """One small tenant: network, subnet, port with a pair, a rule, a router with an interface
    and a gateway, a floating IP. Returns the ids made."""
    external = conn.network.create_network(name='ext', is_router_external=True,
                                           provider_network_type='flat',
                                           provider_physical_network='physnet1')
    conn.network.create_subnet(network_id=external.id, ip_version=4, cidr='172.24.8.0/24')
    network = conn.network.create_network(name='net')
    subnet = conn.network.create_subnet(network_id=network.id, ip_version=4,
                                        cidr='10.50.0.0/24')
    port = conn.network.create_port(network_id=network.id, allowed_address_pairs=[
        {'ip_address': '10.50.0.250'}])
    group = conn.network.create_security_group(name='web')
    conn.network.create_security_group_rule(security_group_id=group.id, direction='ingress',
                                            ethertype='IPv4', protocol='tcp',
                                            port_range_min=80, port_range_max=80,
                                            remote_ip_prefix='192.0.2.0/24')
    router = conn.network.create_router(name='r', external_gateway_info={
        'network_id': external.id})
    conn.network.add_interface_to_router(router, subnet=subnet.id)
    conn.network.create_ip(floating_network_id=external.id, port_id=port.id)
    return {external.id, network.id, port.id, group.id, router.id}


def nb_shapes(store, roots):
    """Every mirrored object reachable from ``roots`` (and the ports, subnets, rules, FIPs
    of those), by table, as shapes."""
    tables = ('networks', 'subnets', 'ports', 'security_groups', 'security_group_rules',
              'routers', 'floatingips')
    records = {t: [r for r in store.list(t)] for t in tables}
    ids = {r.id: t for t, rs in records.items() for r in rs}
    networks = {r.id for r in records['networks'] if r.id in roots}
    groups = {r.id for r in records['security_groups'] if r.id in roots}
    keep = {
        'networks': lambda v: v['id'] in networks,
        'subnets': lambda v: v['network_id'] in networks,
        'ports': lambda v: v['network_id'] in networks,
        'security_groups': lambda v: v['id'] in groups,
        'security_group_rules': lambda v: v['security_group_id'] in groups,
        'routers': lambda v: v['id'] in roots,
        'floatingips': lambda v: v['floating_network_id'] in networks}
    return {t: sorted((shape(r.value, ids) for r in records[t] if keep[t](r.value)), key=repr)
            for t in tables}


def test_neutron_and_df_api_make_the_same_objects(conn, neutron_store, tmp_path):
    from tests.api.conftest import DfApi, connect

    df_api = DfApi(tmp_path, f'sqlite://{tmp_path / "df-api.sqlite"}',
                   config={'ml2_type_flat': {'flat_networks': '*'}}).wait_ready()
    try:
        from dragonflow import store as df_store
        df_api_store = df_store.connect(f'sqlite://{tmp_path / "df-api.sqlite"}')
        theirs = nb_shapes(df_api_store, same_calls(connect(df_api.url, project='demo',
                                                            admin=True)))
        ours = nb_shapes(neutron_store, same_calls(conn))
    finally:
        df_api.stop()
    for table in ours:
        assert [as_df_api(doc) for doc in ours[table]] == theirs[table], table
