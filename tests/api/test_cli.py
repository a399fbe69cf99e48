"""The openstack CLI (python-openstackclient) against df-api, with a clouds.yaml as a user has."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import connect

OPENSTACK = str(Path(sys.executable).parent / 'openstack')


@pytest.fixture
def cli(api_server, tmp_path):
    clouds = tmp_path / 'clouds.yaml'
    clouds.write_text('clouds:\n'
                      '  df:\n'
                      '    auth_type: none\n'
                      '    auth:\n'
                      f'      endpoint: {api_server.url}\n'
                      f'    network_endpoint_override: {api_server.url}/\n')
    env = {**os.environ, 'OS_CLIENT_CONFIG_FILE': str(clouds)}
    env = {k: v for k, v in env.items() if not k.startswith('OS_') or k == 'OS_CLIENT_CONFIG_FILE'}

    def openstack(*args: str, json_output: bool = True):
        command = [OPENSTACK, '--os-cloud', 'df', *args] + (['-f', 'json'] if json_output else [])
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f'{" ".join(args)}: {done.stderr}'
        return json.loads(done.stdout) if json_output else done.stdout

    return openstack


def test_cli_builds_and_shows_a_topology(cli):
    net = cli('network', 'create', 'cli-net')
    assert (net['name'], net['status'], net['mtu']) == ('cli-net', 'ACTIVE', 1450)
    subnet = cli('subnet', 'create', '--network', 'cli-net', '--subnet-range', '10.30.0.0/24',
                 'cli-subnet')
    assert (subnet['cidr'], subnet['gateway_ip']) == ('10.30.0.0/24', '10.30.0.1')
    assert subnet['allocation_pools'] == [{'start': '10.30.0.2', 'end': '10.30.0.254'}]
    router = cli('router', 'create', 'cli-router')
    assert router['status'] == 'ACTIVE'
    cli('router', 'add', 'subnet', 'cli-router', 'cli-subnet', json_output=False)
    port = cli('port', 'create', '--network', 'cli-net', '--fixed-ip',
               'subnet=cli-subnet,ip-address=10.30.0.20', 'cli-port')
    assert port['fixed_ips'] == [{'subnet_id': subnet['id'], 'ip_address': '10.30.0.20'}]
    assert port['status'] == 'DOWN' and port['mac_address'].startswith('fa:16:3e:')

    assert [n['Name'] for n in cli('network', 'list') if n['ID'] == net['id']] == ['cli-net']
    assert cli('network', 'show', 'cli-net')['subnets'] == [subnet['id']]
    assert [s['Subnet'] for s in cli('subnet', 'list')
            if s['ID'] == subnet['id']] == ['10.30.0.0/24']
    assert cli('subnet', 'show', 'cli-subnet')['network_id'] == net['id']
    assert [r['Name'] for r in cli('router', 'list')] == ['cli-router']
    shown = cli('router', 'show', 'cli-router')
    assert [i['ip_address'] for i in shown['interfaces_info']] == ['10.30.0.1']
    ports = cli('port', 'list', '--network', 'cli-net')
    assert sorted(p['Name'] for p in ports) == ['', 'cli-port']
    assert cli('port', 'show', 'cli-port')['id'] == port['id']
    assert cli('port', 'list', '--router', 'cli-router')[0]['Fixed IP Addresses'][0][
        'ip_address'] == '10.30.0.1'

    cli('router', 'remove', 'subnet', 'cli-router', 'cli-subnet', json_output=False)
    cli('port', 'delete', 'cli-port', json_output=False)
    cli('router', 'delete', 'cli-router', json_output=False)
    cli('network', 'delete', 'cli-net', json_output=False)
    assert not [n for n in cli('network', 'list') if n['ID'] == net['id']]


def test_cli_security_groups(cli, api_server):
    group = cli('security', 'group', 'create', 'cli-sg')
    assert (group['name'], group['description']) == ('cli-sg', 'cli-sg')
    assert sorted((r['direction'], r['ethertype']) for r in group['rules']) == [
        ('egress', 'IPv4'), ('egress', 'IPv6')]
    listed = {g['Name']: g for g in cli('security', 'group', 'list')}
    assert set(listed) == {'cli-sg', 'default'}   # the project's default came first
    assert listed['cli-sg']['ID'] == group['id']
    assert cli('security', 'group', 'show', 'cli-sg')['id'] == group['id']
    rule = cli('security', 'group', 'rule', 'create', '--protocol', 'tcp', '--dst-port', '22',
               '--remote-ip', '10.0.0.0/24', 'cli-sg')
    assert (rule['protocol'], rule['port_range_min'], rule['port_range_max'],
            rule['remote_ip_prefix'], rule['direction'], rule['security_group_id']) == (
        'tcp', 22, 22, '10.0.0.0/24', 'ingress', group['id'])

    net = connect(api_server.url).network.create_network(name='cli-sg-net')
    port = cli('port', 'create', '--network', net.id, '--security-group', 'cli-sg',
               'cli-sg-port')
    assert (port['security_group_ids'], port['port_security_enabled']) == ([group['id']], True)
    cli('port', 'set', '--no-security-group', '--disable-port-security', 'cli-sg-port',
        json_output=False)
    shown = cli('port', 'show', 'cli-sg-port')
    assert (shown['security_group_ids'], shown['port_security_enabled']) == ([], False)
