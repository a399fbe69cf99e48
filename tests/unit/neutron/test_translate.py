"""Neutron's API dicts become the objects df-api writes for the same requests."""
import pytest

from dragonflow.neutron import translate

MAC = 'fa:16:3e:00:00:01'


def neutron_port(**fields) -> dict:
    port = {'id': 'p1', 'project_id': 'demo', 'tenant_id': 'demo', 'name': 'vm',
            'network_id': 'n1', 'mac_address': MAC, 'admin_state_up': True,
            'status': 'DOWN', 'device_owner': 'compute:nova', 'device_id': 'vm-1',
            'fixed_ips': [{'subnet_id': 's1', 'ip_address': '10.0.0.5'}],
            'security_groups': ['sg1'], 'port_security_enabled': True,
            'allowed_address_pairs': [], 'binding:host_id': 'compute-1',
            'binding:profile': {}, 'binding:vnic_type': 'normal',
            'binding:vif_type': 'ovs', 'revision_number': 3, 'tags': [],
            'created_at': '2026-01-01T00:00:00Z', 'updated_at': '2026-01-01T00:00:00Z',
            'description': '', 'extra_dhcp_opts': []}
    port.update(fields)
    return port


def test_network_takes_its_segment_and_keeps_the_key_apart_from_the_vni():
    network = translate.network({
        'id': 'n1', 'project_id': 'demo', 'name': 'net', 'mtu': 1450, 'shared': False,
        'router:external': True, 'port_security_enabled': False, 'status': 'ACTIVE',
        'admin_state_up': True, 'provider:network_type': 'vxlan',
        'provider:physical_network': None, 'provider:segmentation_id': 4242,
        'subnets': [], 'revision_number': 1, 'availability_zones': []}, key=7)
    assert (network.key, network.segmentation_id, network.tunnel_key) == (7, 4242, 4242)
    assert network.external and not network.port_security_enabled


def test_network_of_several_segments_takes_the_first():
    network = translate.network({'id': 'n1', 'segments': [
        {'provider:network_type': 'vlan', 'provider:physical_network': 'physnet1',
         'provider:segmentation_id': 120},
        {'provider:network_type': 'vxlan', 'provider:physical_network': None,
         'provider:segmentation_id': 9}]}, key=1)
    assert (network.network_type, network.physical_network, network.segmentation_id) == (
        'vlan', 'physnet1', 120)


def test_port_carries_binding_groups_and_pairs_with_the_ports_mac():
    port = translate.port(neutron_port(allowed_address_pairs=[
        {'ip_address': '10.0.0.200'}, {'ip_address': '10.0.0.201', 'mac_address': None}]),
        key=11)
    assert port.key == 11 and port.binding_host_id == 'compute-1'
    assert port.security_groups == ['sg1']
    assert [p.mac_address for p in port.allowed_address_pairs] == [MAC, MAC]
    assert port.status_source == 'report'


def test_network_owned_ports_and_ports_without_security_have_no_groups():
    interface = translate.port(neutron_port(device_owner='network:router_interface'), key=1)
    insecure = translate.port(neutron_port(port_security_enabled=False), key=2)
    assert interface.security_groups == [] and insecure.security_groups == []


def test_rule_protocols_are_df_apis():
    def rule(protocol, ethertype='IPv4'):
        return translate.security_group_rule({
            'id': 'r1', 'security_group_id': 'sg1', 'direction': 'ingress',
            'ethertype': ethertype, 'protocol': protocol, 'port_range_min': None,
            'port_range_max': None, 'remote_ip_prefix': None, 'remote_group_id': None,
            'remote_address_group_id': None, 'normalized_cidr': None,
            'belongs_to_default_sg': False}, key=5).protocol
    assert rule(None) is None and rule('any') is None and rule('0') is None
    assert rule('icmp', 'IPv6') == 'ipv6-icmp' and rule('1', 'IPv6') == '58'
    assert rule('icmp') == 'icmp' and rule(6) == '6' and rule('TCP') == 'tcp'


def test_rule_with_an_address_group_is_refused_not_widened():
    with pytest.raises(translate.Unsupported):
        translate.security_group_rule({
            'id': 'r1', 'security_group_id': 'sg1', 'direction': 'ingress',
            'ethertype': 'IPv4', 'protocol': 'tcp', 'remote_ip_prefix': None,
            'remote_group_id': None, 'remote_address_group_id': 'ag1'}, key=5)


def test_router_interfaces_one_per_subnet_oldest_port_first():
    ports = [{'id': 'p2', 'created_at': '2026-01-02', 'fixed_ips': [
                 {'subnet_id': 's2', 'ip_address': '10.2.0.1'}]},
             {'id': 'p1', 'created_at': '2026-01-01', 'fixed_ips': [
                 {'subnet_id': 's1', 'ip_address': '10.1.0.1'},
                 {'subnet_id': 's6', 'ip_address': 'fd00::1'}]}]
    router = translate.router({
        'id': 'r1', 'project_id': 'demo', 'name': 'r', 'admin_state_up': True,
        'status': 'ACTIVE', 'routes': [{'destination': '10.9.0.0/16', 'nexthop': '10.1.0.9'}],
        'gw_port_id': 'gw', 'external_gateway_info': {
            'network_id': 'ext', 'enable_snat': False, 'external_fixed_ips': [
                {'subnet_id': 'es', 'ip_address': '172.24.4.10'}]}}, key=3,
        interface_ports=ports, gateway_chassis=['c1'])
    assert [(i.port_id, i.subnet_id) for i in router.interfaces] == [
        ('p1', 's1'), ('p1', 's6'), ('p2', 's2')]
    assert router.gateway_port_id == 'gw' and router.gateway_chassis == ['c1']
    assert router.external_gateway_info.enable_snat is False
    bare = translate.router({'id': 'r2', 'gw_port_id': None, 'external_gateway_info': None},
                            key=4, gateway_chassis=['c1'])
    assert bare.gateway_port_id is None and bare.gateway_chassis == []


def test_floating_ip_takes_its_port_from_the_caller():
    fip = translate.floating_ip({
        'id': 'f1', 'tenant_id': 'demo', 'floating_network_id': 'ext',
        'floating_ip_address': '172.24.4.20', 'port_id': 'p1', 'fixed_ip_address': '10.0.0.5',
        'router_id': 'r1', 'status': 'DOWN', 'standard_attr_id': 9}, floating_port_id='fp')
    assert (fip.floating_port_id, fip.project_id, fip.router_id) == ('fp', 'demo', 'r1')
