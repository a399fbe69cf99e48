"""Security groups, rules, port security and allowed address pairs through openstacksdk.

Every test acts for a project of its own (``project`` fixture), so the default group it sees
is its own and is created by the test's first use.
"""
import uuid

import pytest

from .conftest import connect, neutron_error, raw, unique

ANY = {'protocol': None, 'port_range_min': None, 'port_range_max': None,
       'remote_ip_prefix': None}


@pytest.fixture
def project(api_server):
    """An SDK connection acting for a new project."""
    return connect(api_server.url, project=unique('p'))


@pytest.fixture
def admin(api_server):
    return connect(api_server.url, project='ops', admin=True)


def _rules(group) -> list[tuple]:
    """A group's rules as (direction, ethertype, protocol, ports, remote prefix, remote group)."""
    rules = group['security_group_rules'] if isinstance(group, dict) else group.security_group_rules
    return sorted((r['direction'], r['ethertype'], r['protocol'], r['port_range_min'],
                   r['port_range_max'], r['remote_ip_prefix'], r['remote_group_id'])
                  for r in rules)


def _default(conn):
    groups = [g for g in conn.network.security_groups() if g.name == 'default']
    assert len(groups) == 1, groups
    return groups[0]


def _network(conn, **attrs):
    net = conn.network.create_network(name=unique('sg-net'), **attrs)
    conn.network.create_subnet(network_id=net.id, cidr='10.9.0.0/24', ip_version=4)
    return net


def _rule(conn, group, **attrs):
    return conn.network.create_security_group_rule(
        **{'security_group_id': group.id, 'direction': 'ingress', **attrs})


def test_extensions(conn):
    aliases = {e.alias for e in conn.network.extensions()}
    assert {'security-group', 'port-security', 'allowed-address-pairs',
            'security-groups-shared-filtering', 'security-groups-normalized-cidr'} <= aliases


# The default group

def test_default_group_is_made_on_first_use(project, admin, api_server):
    default = _default(project)
    assert (default.description, default.project_id) == ('Default security group',
                                                         project.session.additional_headers[
                                                             'X-Project-Id'])
    assert _rules(default) == [
        ('egress', 'IPv4', None, None, None, None, None),
        ('egress', 'IPv6', None, None, None, None, None),
        ('ingress', 'IPv4', None, None, None, None, default.id),
        ('ingress', 'IPv6', None, None, None, None, default.id)]
    assert _default(project).id == default.id  # listing again makes no second one
    listed = {r.id for r in project.network.security_group_rules(security_group_id=default.id)}
    assert listed == {r['id'] for r in default.security_group_rules}

    # A network, a port: each makes its project's default group the first time.
    other = connect(api_server.url, project=unique('p'))
    net = _network(other)
    ports = [other.network.create_port(network_id=net.id) for _ in range(2)]
    default = _default(other)
    assert [p.security_group_ids for p in ports] == [[default.id]] * 2
    assert [g.name for g in admin.network.security_groups(project_id=net.project_id)] == \
        ['default']


def test_default_group_cannot_be_deleted_or_renamed(project, admin):
    default = _default(project)
    status, error = neutron_error(project.network.delete_security_group, default,
                                  ignore_missing=False)
    assert (status, error['type'], error['message']) == (
        409, 'SecurityGroupCannotRemoveDefault',
        'Insufficient rights for removing default security group.')
    status, error = neutron_error(project.network.update_security_group, default.id,
                                  name='mine')
    assert (status, error['type']) == (409, 'SecurityGroupCannotUpdateDefault')
    assert project.network.update_security_group(default.id, description='d').description == 'd'
    for name in ('default', 'Default'):
        status, error = neutron_error(project.network.create_security_group, name=name)
        assert (status, error['type'], error['message']) == (
            409, 'SecurityGroupDefaultAlreadyExists', 'Default security group already exists.')
    other = project.network.create_security_group(name=unique('sg'))
    status, error = neutron_error(project.network.update_security_group, other, name='default')
    assert (status, error['type']) == (409, 'SecurityGroupDefaultAlreadyExists')
    # An admin may delete it (as in Neutron); the project's next use makes a new one.
    admin.network.delete_security_group(default, ignore_missing=False)
    assert _default(project).id != default.id


# Groups

def test_group_lifecycle(project):
    made = [project.network.create_security_group(name=unique('web'), description='web tier')
            for _ in range(3)]
    group = made[0]
    assert (group.description, group.revision_number > 0, group.is_shared) == \
        ('web tier', True, False)
    assert _rules(group) == [('egress', 'IPv4', None, None, None, None, None),
                             ('egress', 'IPv6', None, None, None, None, None)]
    assert [g.id for g in project.network.security_groups(name=group.name)] == [group.id]
    shown = project.network.get_security_group(group.id)
    assert (shown.name, shown.created_at, len(shown.security_group_rules)) == \
        (group.name, group.created_at, 2)
    paged = [g.id for g in project.network.security_groups(limit=1)]
    assert sorted(paged) == sorted([g.id for g in made] + [_default(project).id])
    status, body = raw(project, 'get', '/security-groups?fields=id&fields=name&limit=2')
    assert status == 200 and all(sorted(g) == ['id', 'name'] for g in body['security_groups'])
    assert body['security_groups_links'][0]['rel'] == 'next'
    assert {g.id for g in project.network.security_groups(is_shared=False)} >= {group.id}

    revision = group.revision_number
    renamed = project.network.update_security_group(group.id, name='app', description='')
    assert (renamed.name, renamed.description) == ('app', '')
    assert renamed.revision_number > revision
    project.network.set_tags(renamed, ['blue'])
    assert [g.id for g in project.network.security_groups(tags='blue')] == [group.id]
    status, body = raw(project, 'put', f'/security-groups/{group.id}',
                       json={'security_group': {'security_group_rules': []}})
    assert (status, body['NeutronError']['message']) == (
        400, 'Cannot update read-only attribute security_group_rules')

    for g in made:
        project.network.delete_security_group(g, ignore_missing=False)
    status, error = neutron_error(project.network.get_security_group, group.id)
    assert (status, error['type'], error['message']) == (
        404, 'SecurityGroupNotFound', f'Security group {group.id} does not exist')
    assert not [r for r in project.network.security_group_rules()
                if r.security_group_id == group.id]


def test_bulk_group_create_is_all_or_nothing(project):
    names = [unique('bulk'), unique('bulk')]
    status, body = raw(project, 'post', '/security-groups', json={'security_groups': [
        {'name': names[0]}, {'name': names[1], 'description': 'x'}]})
    assert status == 201 and [g['name'] for g in body['security_groups']] == names
    assert all(len(g['security_group_rules']) == 2 for g in body['security_groups'])
    status, body = raw(project, 'post', '/security-groups', json={'security_groups': [
        {'name': unique('never')}, {'name': 'default'}]})
    assert (status, body['NeutronError']['type']) == (409, 'SecurityGroupDefaultAlreadyExists')
    assert not [g for g in project.network.security_groups() if g.name.startswith('never')]


def test_other_projects_groups_are_invisible(project, api_server):
    group = project.network.create_security_group(name=unique('mine'))
    rule = _rule(project, group, protocol='tcp', port_range_min=80, port_range_max=80)
    stranger = connect(api_server.url, project=unique('p'))
    assert group.id not in {g.id for g in stranger.network.security_groups()}
    assert rule.id not in {r.id for r in stranger.network.security_group_rules()}
    for call, args, type_ in ((stranger.network.get_security_group, (group.id,),
                               'SecurityGroupNotFound'),
                              (stranger.network.get_security_group_rule, (rule.id,),
                               'SecurityGroupRuleNotFound'),
                              (_rule, (stranger, group), 'SecurityGroupNotFound')):
        status, error = neutron_error(call, *args)
        assert (status, error['type']) == (404, type_)
    net = _network(stranger)
    status, error = neutron_error(stranger.network.create_port, network_id=net.id,
                                  security_group_ids=[group.id])
    assert (status, error['type'], error['message']) == (
        404, 'SecurityGroupNotFound', f'Security group {group.id} does not exist')


# Rules

def test_rules(project):
    group = project.network.create_security_group(name=unique('sg'))
    peer = project.network.create_security_group(name=unique('peer'))
    ssh = _rule(project, group, protocol='tcp', port_range_min=22, port_range_max=22,
                remote_ip_prefix='10.0.0.0/24', description='ssh')
    assert (ssh.protocol, ssh.port_range_min, ssh.port_range_max, ssh.remote_ip_prefix,
            ssh.ether_type, ssh.description) == ('tcp', 22, 22, '10.0.0.0/24', 'IPv4', 'ssh')
    cases = [
        (dict(protocol='UDP', port_range_min='5000', port_range_max=5100),
         ('udp', 5000, 5100, None)),
        (dict(protocol='icmp', port_range_min=8, port_range_max=0), ('icmp', 8, 0, None)),
        (dict(protocol='icmp', port_range_min=3), ('icmp', 3, None, None)),
        (dict(protocol='icmpv6', ether_type='IPv6'), ('ipv6-icmp', None, None, None)),
        (dict(protocol='1', ether_type='ipv6', direction='egress'), ('58', None, None, None)),
        (dict(protocol='47'), ('47', None, None, None)),
        (dict(protocol='any', remote_ip_prefix='192.168.1.7'),
         (None, None, None, '192.168.1.7/32')),
        (dict(protocol='sctp', port_range_min=1, port_range_max=65535,
              remote_ip_prefix='fd00::5/64', ether_type='IPv6'),
         ('sctp', 1, 65535, 'fd00::5/64')),
    ]
    made = []
    for attrs, expected in cases:
        rule = _rule(project, group, **attrs)
        made.append(rule)
        assert (rule.protocol, rule.port_range_min, rule.port_range_max,
                rule.remote_ip_prefix) == expected, attrs
    remote = _rule(project, group, remote_group_id=peer.id)
    assert (remote.remote_group_id, remote.remote_ip_prefix) == (peer.id, None)
    status, body = raw(project, 'get', f'/security-group-rules/{made[-1].id}')
    assert body['security_group_rule']['normalized_cidr'] == 'fd00::/64'

    shown = project.network.get_security_group(group.id)
    assert len(shown.security_group_rules) == 2 + 1 + len(cases) + 1
    assert shown.revision_number > group.revision_number  # rules change their group
    listed = project.network.security_group_rules(security_group_id=group.id,
                                                  direction='ingress', protocol='tcp')
    assert [r.id for r in listed] == [ssh.id]
    assert {r.id for r in project.network.security_group_rules(remote_group_id=peer.id)} == \
        {remote.id}
    assert project.network.get_security_group_rule(ssh.id).description == 'ssh'

    # Only a rule's description may change (rules are otherwise immutable, as in Neutron).
    status, body = raw(project, 'put', f'/security-group-rules/{ssh.id}',
                       json={'security_group_rule': {'description': 'admin ssh'}})
    assert (status, body['security_group_rule']['description']) == (200, 'admin ssh')
    status, body = raw(project, 'put', f'/security-group-rules/{ssh.id}',
                       json={'security_group_rule': {'port_range_max': 23}})
    assert (status, body['NeutronError']['message']) == (
        400, 'Cannot update read-only attribute port_range_max')

    before = project.network.get_security_group(group.id).revision_number
    project.network.delete_security_group_rule(ssh, ignore_missing=False)
    assert project.network.get_security_group(group.id).revision_number > before
    status, error = neutron_error(project.network.get_security_group_rule, ssh.id)
    assert (status, error['type'], error['message']) == (
        404, 'SecurityGroupRuleNotFound', f'Security group rule {ssh.id} does not exist')
    status, error = neutron_error(project.network.delete_security_group_rule, ssh,
                                  ignore_missing=False)
    assert (status, error['type']) == (404, 'SecurityGroupRuleNotFound')

    # Deleting a group takes the rules naming it as remote group along (Neutron's cascade).
    project.network.delete_security_group(peer, ignore_missing=False)
    assert remote.id not in {r.id for r in project.network.security_group_rules()}


def test_rule_errors(project):
    group = project.network.create_security_group(name=unique('sg'))
    other = project.network.create_security_group(name=unique('sg'))
    kept = _rule(project, group, protocol='tcp', port_range_min=80, port_range_max=80)
    rules_before = _rules(project.network.get_security_group(group.id))
    missing = str(uuid.uuid4())
    cases = [
        (dict(protocol='tcp', port_range_min=30, port_range_max=20), 400,
         'SecurityGroupInvalidPortRange',
         'For TCP/UDP protocols, port_range_min must be <= port_range_max'),
        (dict(protocol='tcp', port_range_min=22), 400, 'SecurityGroupInvalidPortRange', None),
        (dict(protocol='tcp', port_range_min=1, port_range_max=70000), 400,
         'SecurityGroupInvalidPortValue', 'Invalid value for port 70000'),
        (dict(protocol='udp', port_range_min=0, port_range_max=10), 400,
         'SecurityGroupInvalidPortValue', 'Invalid value for port 0'),
        (dict(port_range_min=22, port_range_max=22), 400,
         'SecurityGroupProtocolRequiredWithPorts',
         'Must also specify protocol if port range is given.'),
        (dict(protocol='gre', port_range_min=22, port_range_max=22), 400,
         'SecurityGroupInvalidProtocolForPort',
         'Invalid protocol 47 for port range, only supported for DCCP, SCTP, TCP, UDP, '
         'UDPLITE protocols.'),
        (dict(protocol='icmp', port_range_min=300), 400, 'SecurityGroupInvalidIcmpValue',
         'Invalid value for ICMP type (port_range_min) 300. It must be 0 to 255.'),
        (dict(protocol='icmp', port_range_min=8, port_range_max=256), 400,
         'SecurityGroupInvalidIcmpValue', None),
        (dict(protocol='icmp', port_range_max=0), 400, 'SecurityGroupMissingIcmpType',
         'ICMP code (port-range-max) 0 is provided but ICMP type (port-range-min) is '
         'missing.'),
        (dict(protocol='bogus'), 400, 'SecurityGroupRuleInvalidProtocol', None),
        (dict(protocol='256'), 400, 'SecurityGroupRuleInvalidProtocol', None),
        (dict(ether_type='IPv5'), 400, 'SecurityGroupRuleInvalidEtherType',
         "Security group rule for ethertype 'IPv5' not supported. Allowed values are "
         "['IPv4', 'IPv6']."),
        (dict(remote_ip_prefix='fd00::/64'), 400, 'SecurityGroupRuleParameterConflict',
         'Conflicting value ethertype IPv4 for CIDR fd00::/64'),
        (dict(protocol='icmpv6'), 400, 'SecurityGroupEthertypeConflictWithProtocol',
         'Invalid ethertype IPv4 for protocol icmpv6.'),
        (dict(remote_ip_prefix='10.0.0.0/8', remote_group_id=other.id), 400,
         'SecurityGroupRemoteGroupAndRemoteIpPrefix',
         'Only remote_ip_prefix or remote_group_id may be provided.'),
        (dict(remote_ip_prefix='10.0.0.300/8'), 400, 'InvalidCIDR',
         'Invalid CIDR 10.0.0.300/8 given as IP prefix.'),
        (dict(direction='sideways'), 400, 'HTTPBadRequest',
         "Invalid input for direction. Reason: 'sideways' is not in ['ingress', 'egress']."),
        (dict(remote_group_id=missing), 404, 'SecurityGroupNotFound',
         f'Security group {missing} does not exist'),
        (dict(security_group_id=missing), 404, 'SecurityGroupNotFound', None),
        # Duplicates: the same rule however it is spelled (protocol number, any address).
        (dict(protocol='6', port_range_min=80, port_range_max=80, remote_ip_prefix='0.0.0.0/0'),
         409, 'SecurityGroupRuleExists',
         f'Security group rule already exists. Rule id is {kept.id}.'),
        (dict(direction='egress'), 409, 'SecurityGroupRuleExists', None),
        (dict(direction='egress', ether_type='IPv6', remote_ip_prefix='::/0'), 409,
         'SecurityGroupRuleExists', None),
    ]
    for attrs, status_, type_, message in cases:
        status, error = neutron_error(_rule, project, group, **attrs)
        assert (status, error['type']) == (status_, type_), (attrs, error)
        assert message is None or error['message'] == message, error
    status, body = raw(project, 'post', '/security-group-rules', json={'security_group_rule': {
        'security_group_id': group.id}})
    assert (status, body['NeutronError']['message']) == (
        400, "Failed to parse request. Required attribute 'direction' not specified")
    # A different description does not make a different rule.
    status, error = neutron_error(_rule, project, group, protocol='tcp', port_range_min=80,
                                  port_range_max=80, description='again')
    assert (status, error['type']) == (409, 'SecurityGroupRuleExists')
    assert _rules(project.network.get_security_group(group.id)) == rules_before


def test_bulk_rules(project):
    group = project.network.create_security_group(name=unique('sg'))
    other = project.network.create_security_group(name=unique('sg'))

    def bulk(*rules):
        return raw(project, 'post', '/security-group-rules', json={'security_group_rules': [
            {'security_group_id': group.id, 'direction': 'ingress', **r} for r in rules]})

    status, body = bulk({'protocol': 'tcp', 'port_range_min': 1, 'port_range_max': 2},
                        {'protocol': 'udp'})
    assert status == 201 and [r['protocol'] for r in body['security_group_rules']] == \
        ['tcp', 'udp']
    for rules, status_, type_ in [
            (({'protocol': 'icmp'}, {'protocol': 'icmp'}), 409,
             'DuplicateSecurityGroupRuleInPost'),
            (({'protocol': 'icmp'}, {'protocol': 'udp'}), 409, 'SecurityGroupRuleExists'),
            (({'protocol': 'icmp'}, {'security_group_id': other.id}), 400,
             'SecurityGroupNotSingleGroupRules'),
            (({'protocol': 'icmp'}, {'protocol': 'tcp', 'port_range_min': 9}), 400,
             'SecurityGroupInvalidPortRange')]:
        status, body = bulk(*rules)
        assert (status, body['NeutronError']['type']) == (status_, type_)
    assert len(project.network.get_security_group(group.id).security_group_rules) == 4


def test_group_in_use(project):
    group = project.network.create_security_group(name=unique('sg'))
    net = _network(project)
    port = project.network.create_port(network_id=net.id, security_group_ids=[group.id])
    status, error = neutron_error(project.network.delete_security_group, group,
                                  ignore_missing=False)
    assert (status, error['type'], error['message']) == (
        409, 'SecurityGroupInUse', f'Security Group {group.id} in use.')
    assert project.network.get_security_group(group.id).id == group.id
    project.network.update_port(port, security_group_ids=[])
    project.network.delete_security_group(group, ignore_missing=False)


# Ports: security groups and port security

def test_port_security_groups(project):
    net = _network(project)
    default = _default(project)
    web, db = (project.network.create_security_group(name=unique(n)) for n in ('web', 'db'))
    port = project.network.create_port(network_id=net.id, security_group_ids=[web.id, db.id,
                                                                               web.id])
    assert port.security_group_ids == [web.id, db.id] and port.is_port_security_enabled
    assert [p.id for p in project.network.ports(security_group_ids=[db.id])] == [port.id]
    assert project.network.update_port(port, security_group_ids=[db.id]).security_group_ids \
        == [db.id]
    status, body = raw(project, 'put', f'/ports/{port.id}',
                       json={'port': {'security_groups': None}})
    assert (status, body['port']['security_groups']) == (200, [])
    none = project.network.create_port(network_id=net.id, security_group_ids=[])
    assert none.security_group_ids == []
    status, body = raw(project, 'post', '/ports', json={'port': {'network_id': net.id,
                                                                 'security_groups': None}})
    assert (status, body['port']['security_groups']) == (201, [default.id])

    missing = str(uuid.uuid4())
    status, error = neutron_error(project.network.create_port, network_id=net.id,
                                  security_group_ids=[web.id, missing])
    assert (status, error['type'], error['message']) == (
        404, 'SecurityGroupNotFound', f'Security group {missing} does not exist')
    status, error = neutron_error(project.network.update_port, port,
                                  security_group_ids=[missing])
    assert (status, error['type']) == (404, 'SecurityGroupNotFound')
    status, error = neutron_error(project.network.create_port, network_id=net.id,
                                  security_group_ids=['nope'])
    assert (status, error['type'], error['message']) == (
        400, 'InvalidInput', "Invalid input for operation: 'nope' is not an integer or uuid.")

    # Neutron's own ports (router interfaces...) get no groups.
    router = project.network.create_router(name=unique('r'))
    subnet_id = project.network.get_network(net.id).subnet_ids[0]
    interface = project.network.add_interface_to_router(router, subnet=subnet_id)
    assert project.network.get_port(interface['port_id']).security_group_ids == []
    project.network.remove_interface_from_router(router, subnet=subnet_id)


def test_port_security(project):
    net = _network(project)
    group = project.network.create_security_group(name=unique('sg'))
    status, error = neutron_error(project.network.create_port, network_id=net.id,
                                  is_port_security_enabled=False,
                                  security_group_ids=[group.id])
    assert (status, error['type'], error['message']) == (
        400, 'PortSecurityAndIPRequiredForSecurityGroups',
        'Port security must be enabled and port must have an IP address in order to use '
        'security groups.')
    open_port = project.network.create_port(network_id=net.id, is_port_security_enabled=False)
    assert (open_port.is_port_security_enabled, open_port.security_group_ids) == (False, [])
    status, error = neutron_error(project.network.update_port, open_port,
                                  security_group_ids=[group.id])
    assert (status, error['type']) == (400, 'PortSecurityAndIPRequiredForSecurityGroups')

    port = project.network.create_port(network_id=net.id, security_group_ids=[group.id])
    status, error = neutron_error(project.network.update_port, port,
                                  is_port_security_enabled=False)
    assert (status, error['type'], error['message']) == (
        409, 'PortSecurityPortHasSecurityGroup',
        'Port has security group associated. Cannot disable port security or IP address '
        'until security group is removed.')
    assert project.network.get_port(port.id).is_port_security_enabled  # nothing half-written
    off = project.network.update_port(port, is_port_security_enabled=False,
                                      security_group_ids=[])
    assert (off.is_port_security_enabled, off.security_group_ids) == (False, [])
    on = project.network.update_port(port, is_port_security_enabled=True)
    assert (on.is_port_security_enabled, on.security_group_ids) == (True, [])

    # A network's port_security_enabled is the default of its new ports.
    insecure = _network(project, is_port_security_enabled=False)
    inherited = project.network.create_port(network_id=insecure.id)
    assert (inherited.is_port_security_enabled, inherited.security_group_ids) == (False, [])
    secured = project.network.create_port(network_id=insecure.id,
                                          is_port_security_enabled=True)
    assert secured.security_group_ids == [_default(project).id]


def test_allowed_address_pairs(project):
    net = _network(project)
    port = project.network.create_port(network_id=net.id, allowed_address_pairs=[
        {'ip_address': '10.9.0.100'}, {'ip_address': '10.9.1.0/24',
                                       'mac_address': 'FA:16:3E:00:00:01'}])
    assert port.allowed_address_pairs == [
        {'ip_address': '10.9.0.100', 'mac_address': port.mac_address},
        {'ip_address': '10.9.1.0/24', 'mac_address': 'fa:16:3e:00:00:01'}]
    updated = project.network.update_port(port.id, allowed_address_pairs=[
        {'ip_address': 'fd00::7'}])
    pairs_now = [{'ip_address': 'fd00::7', 'mac_address': port.mac_address}]
    assert updated.allowed_address_pairs == pairs_now
    cases = [
        ([{'mac_address': 'fa:16:3e:00:00:02'}], 400, 'AllowedAddressPairsMissingIP',
         'AllowedAddressPair must contain ip_address'),
        ([{'ip_address': '10.9.0.5'}, {'ip_address': '10.9.0.5'}], 400,
         'DuplicateAddressPairInRequest',
         'Request contains duplicate address pair: mac_address None ip_address 10.9.0.5.'),
        ([{'ip_address': '10.9.0.x'}], 400, 'HTTPBadRequest',
         "'10.9.0.x' is not a valid IP address"),
        ([{'ip_address': '10.9.0/24'}], 400, 'HTTPBadRequest', None),
        ([{'ip_address': '10.9.0.5', 'mac_address': 'zz'}], 400, 'HTTPBadRequest',
         "'zz' is not a valid MAC address"),
        ([{'ip_address': '10.9.0.5', 'colour': 'red'}], 400, 'HTTPBadRequest',
         "Unrecognized attribute(s) 'colour'"),
        ([{'ip_address': f'10.9.2.{i}'} for i in range(11)], 400,
         'AllowedAddressPairExhausted',
         'The number of allowed address pair exceeds the maximum 10.'),
    ]
    for pairs, status_, type_, message in cases:
        for call, args in ((project.network.create_port, {'network_id': net.id}),
                           (project.network.update_port, {'port': port.id})):
            status, error = neutron_error(call, **args, allowed_address_pairs=pairs)
            assert (status, error['type']) == (status_, type_), (pairs, error)
            assert message is None or error['message'] == message, error
    # The same pair once the port's MAC is filled in.
    status, error = neutron_error(project.network.update_port, port.id, allowed_address_pairs=[
        {'ip_address': '10.9.0.5'}, {'ip_address': '10.9.0.5', 'mac_address': port.mac_address}])
    assert (status, error['type']) == (400, 'DuplicateAddressPairInRequest')
    status, body = raw(project, 'post', '/ports', json={'port': {
        'network_id': net.id, 'allowed_address_pairs': {'ip_address': '10.9.0.5'}}})
    assert (status, body['NeutronError']) == (400, {
        'type': 'HTTPBadRequest', 'message': 'Allowed address pairs must be a list.',
        'detail': ''})
    status, error = neutron_error(project.network.create_port, network_id=net.id,
                                  is_port_security_enabled=False,
                                  allowed_address_pairs=[{'ip_address': '10.9.0.5'}])
    assert (status, error['type']) == (409, 'AddressPairAndPortSecurityRequired')
    status, error = neutron_error(project.network.update_port, port.id,
                                  is_port_security_enabled=False, security_group_ids=[])
    assert (status, error['type']) == (409, 'AddressPairAndPortSecurityRequired')
    assert project.network.get_port(port.id).allowed_address_pairs == pairs_now
    assert len(list(project.network.ports(network_id=net.id))) == 1  # nothing half-written
