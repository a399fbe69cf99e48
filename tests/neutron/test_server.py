"""The lab's real Neutron: it serves the API through openstacksdk, applies Neutron's policy
to the identity headers as df-api does, and leaves nothing behind when it stops or fails
to start."""
import configparser
import ipaddress
import json
import os
import urllib.request
from pathlib import Path

import openstack
import pytest

from dragonflow.lab.neutron import NeutronServer, StartError, group_alive, processes_in
from tests.neutron.conftest import unique


def http_status(call, *args, **kwargs) -> int:
    with pytest.raises(openstack.exceptions.HttpException) as raised:
        call(*args, **kwargs)
    return raised.value.response.status_code


def test_admin_creates_network_subnet_and_port(neutron):
    conn = neutron.sdk()
    network = conn.network.create_network(name=unique('net'))
    try:
        subnet = conn.network.create_subnet(network_id=network.id, ip_version=4,
                                            cidr='10.1.0.0/24')
        port = conn.network.create_port(network_id=network.id)
        assert port.fixed_ips[0]['subnet_id'] == subnet.id
        assert ipaddress.ip_address(port.fixed_ips[0]['ip_address']) in \
            ipaddress.ip_network('10.1.0.0/24')
        assert conn.network.get_port(port.id).network_id == network.id
        # The ML2 configuration is the fixture's: project networks are VXLAN.
        assert network.provider_network_type == 'vxlan'
        assert 1 <= network.provider_segmentation_id <= 65535
        assert network.project_id == neutron.default_project_id
        conn.network.delete_port(port)
    finally:
        conn.network.delete_network(network)


def test_request_without_identity_headers_is_the_default_projects_admin(neutron):
    body = json.dumps({'network': {'name': unique('net')}}).encode()
    request = urllib.request.Request(neutron.url + '/v2.0/networks', data=body,
                                     headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(request, timeout=30) as reply:
        network = json.load(reply)['network']
    neutron.sdk().network.delete_network(network['id'])
    assert network['project_id'] == neutron.default_project_id
    assert network['provider:network_type'] == 'vxlan'  # an admin-only attribute


def test_member_of_another_project_gets_not_found(neutron):
    owner = neutron.sdk(project=unique('project'), admin=False)
    stranger = neutron.sdk(project=unique('project'), admin=False)
    network = owner.network.create_network(name=unique('net'))
    try:
        assert http_status(stranger.network.get_network, network.id) == 404
        assert http_status(stranger.network.update_network, network.id, name='mine') == 404
        assert http_status(stranger.network.delete_network, network.id,
                           ignore_missing=False) == 404
        assert network.id not in {n.id for n in stranger.network.networks()}
        assert owner.network.get_network(network.id).name == network.name
        assert neutron.sdk(project=unique('project')).network.get_network(network.id)
    finally:
        owner.network.delete_network(network)


def test_member_may_not_set_admin_only_attributes(neutron):
    member = neutron.sdk(project=unique('project'), admin=False)
    assert http_status(member.network.create_network, name=unique('net'),
                       provider_network_type='vlan', provider_physical_network='physnet1',
                       provider_segmentation_id=150) == 403
    assert http_status(member.network.create_network, name=unique('net'),
                       is_shared=True) == 403


def test_stack_runs_in_its_own_process_groups(neutron):
    groups = neutron.pgids()
    # MariaDB, the API, the periodic workers; the session's teardown checks they all end.
    assert len(groups) == 3, groups
    assert {os.getpgid(pid) for pid in processes_in(neutron.state_dir)} == set(groups)


def test_failed_start_stops_what_started_and_says_why():
    server = NeutronServer(mechanism_drivers='no-such-driver', service_plugins='router')
    with pytest.raises(StartError, match='no-such-driver'):
        server.start()
    # MariaDB's setup and server, the migration, the API and the periodic workers ran.
    assert len(server.spawned) == 5, server.spawned
    assert not [pgid for pgid in server.spawned if group_alive(pgid)]
    assert not processes_in(server.state_dir)
    assert not server.state_dir.exists()


def test_mariadb_listens_on_no_address(neutron):
    mariadb = neutron.procs['mariadb'].pid
    sockets = {os.readlink(f'/proc/{mariadb}/fd/{fd}') for fd in os.listdir(f'/proc/{mariadb}/fd')}
    inodes = {link[len('socket:['):-1] for link in sockets if link.startswith('socket:[')}
    listening = set()
    for table in ('tcp', 'tcp6', 'udp', 'udp6'):
        for line in Path(f'/proc/net/{table}').read_text().splitlines()[1:]:
            listening.add(line.split()[9])  # the socket's inode
    assert inodes, 'MariaDB has no socket at all: not the process expected'
    assert not inodes & listening


def test_config_sections_go_to_the_file_neutron_reads_them_from(tmp_path):
    server = NeutronServer(store_url='sqlite:///nb.sqlite', config={
        'df': {'repair_interval': 5}, 'ml2_type_vlan': {'network_vlan_ranges': 'physnet2'},
        'DEFAULT': {'debug': 'true'}, 'quotas': {'quota_network': 7}},
        state_dir=str(tmp_path / 'state'))
    server.state_dir.mkdir()
    server._write_config()
    ml2 = configparser.ConfigParser()
    ml2.read(server.state_dir / 'ml2_conf.ini')
    neutron = configparser.ConfigParser()
    neutron.read(server.state_dir / 'neutron.conf')
    assert dict(ml2['df']) == {'store_url': 'sqlite:///nb.sqlite', 'repair_interval': '5'}
    assert ml2['ml2_type_vlan']['network_vlan_ranges'] == 'physnet2'
    assert ml2['ml2']['mechanism_drivers'] == 'df'
    assert neutron['DEFAULT']['debug'] == 'true'
    assert neutron['DEFAULT']['service_plugins'] == 'df-l3'
    assert neutron['quotas']['quota_network'] == '7'
    assert 'df' not in neutron and 'quotas' not in ml2
