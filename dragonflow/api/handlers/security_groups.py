"""Security groups, their rules, and each project's default group (Neutron's securitygroups_db).

A group and its rules are separate objects, as in Neutron: a rule names its group by
``security_group_id``. Every change to a group's rules also writes the group (a new
revision, as Neutron's revision plugin bumps it), so two concurrent changes of one group's
rules cannot both pass the duplicate check. A port or a rule that comes to depend on a group
(a port using it, a rule naming it as remote group) requires in its commit the group at the
revision read and no delete of it in progress (its fence), exactly as ports do networks.

The default group is created on a project's first use (a network or port created, security
groups or rules listed, a group created), with Neutron's rules: egress anywhere and ingress
from the group's own ports, for IPv4 and IPv6. A record keyed by the project
(``default_security_groups``) is created only if absent in the same commit, so concurrent
first uses from any number of df-api processes make exactly one.
"""
from typing import Optional

from dragonflow.api import attributes, definitions, errors
from dragonflow.api import txn as txns
from dragonflow.api.handlers.base import Handler, now
from dragonflow.model import DefaultSecurityGroup, Port, SecurityGroup, SecurityGroupRule
from dragonflow.model.objects import IP_PROTOCOLS

DEFAULT_NAME = 'default'
DEFAULT_DESCRIPTION = 'Default security group'
ETHERTYPES = ('IPv4', 'IPv6')
# Protocols with ports (neutron's SG_PORT_PROTO_NAMES) and with ICMP type/code.
PORT_PROTOCOLS = ('dccp', 'sctp', 'tcp', 'udp', 'udplite')
PORT_PROTOCOL_NUMBERS = {IP_PROTOCOLS[name] for name in PORT_PROTOCOLS}
ICMP_NUMBERS = (IP_PROTOCOLS['icmp'], IP_PROTOCOLS['ipv6-icmp'])
IPV6_ICMP_LEGACY = ('icmp', 'icmpv6')
IPV6_ONLY_PROTOCOLS = {'ipv6-encap', 'ipv6-frag', 'ipv6-icmp', 'icmpv6', 'ipv6-nonxt',
                       'ipv6-opts', 'ipv6-route', '41', '44', '58', '59', '60', '43'}
PROTOCOL_NAMES = {str(number): name for name, number in IP_PROTOCOLS.items()
                  if name != 'icmpv6'}
ANY_PREFIX = ('0.0.0.0/0', '::/0', None)


def ensure_default(txn: txns.Txn, keys: txns.Keys, project_id: str) -> SecurityGroup:
    """The project's default group; created (with its rules) in this Txn if it has none."""
    record = txn.get(DefaultSecurityGroup, project_id)
    group = txn.get(SecurityGroup, record.security_group_id) if record else None
    if group is not None:
        return group
    stamp = now()
    group = SecurityGroup(id=txns.new_id(), key=keys.next('security_group'),
                          project_id=project_id, name=DEFAULT_NAME,
                          description=DEFAULT_DESCRIPTION, created_at=stamp, updated_at=stamp)
    txn.create(group)
    if record is None:
        txn.create(DefaultSecurityGroup(id=project_id, security_group_id=group.id))
    else:  # the group it named is gone
        txn.update(record.model_copy(update={'security_group_id': group.id}))
    for ethertype in ETHERTYPES:
        txn.create(_rule(group, keys, stamp, direction='ingress', ethertype=ethertype,
                         remote_group_id=group.id))
        txn.create(_rule(group, keys, stamp, direction='egress', ethertype=ethertype))
    return group


def ensure_default_now(store, project_id: str) -> None:
    """ensure_default in a commit of its own (reads that touch security groups)."""
    if store.get(DefaultSecurityGroup.table, project_id) is None:
        txns.run(store, lambda txn, keys: ensure_default(txn, keys, project_id))


def _ensure_for_listing(store, ctx, filters: dict) -> None:
    """Neutron creates the default group of the project a listing of groups or rules is for
    (the caller's, or the one the filter names if the caller may act for it)."""
    projects = filters.get('project_id') or filters.get('tenant_id')
    project = projects[0] if projects else ctx.project_id
    if ctx.owns(project):
        ensure_default_now(store, project)


def _rule(group: SecurityGroup, keys: txns.Keys, stamp: str, **fields) -> SecurityGroupRule:
    return SecurityGroupRule(id=txns.new_id(), key=keys.next('security_group_rule'),
                             project_id=group.project_id, security_group_id=group.id,
                             created_at=stamp, updated_at=stamp, **fields)


def use_group(txn: txns.Txn, group: SecurityGroup) -> None:
    """Make the commit require ``group`` as read and not being deleted."""
    txn.require(group)
    txns.require_unfenced(txn, SecurityGroup, group.id)


def port_groups(txn: txns.Txn, ctx, project_id: str, requested: list[str]) -> list[str]:
    """The groups a port of ``project_id`` asks for: each must exist and be the project's
    (SecurityGroupNotFound naming the others, as Neutron); the commit requires them."""
    ids = list(dict.fromkeys(requested))
    groups = {i: txn.get(SecurityGroup, i) for i in ids}
    missing = [i for i, g in groups.items()
               if g is None or not (ctx.is_admin or g.project_id == project_id)]
    if missing:
        raise errors.SecurityGroupNotFound(id=', '.join(missing))
    for group in groups.values():
        use_group(txn, group)
    return ids


def rules_of(reader: txns.Txn, group_id: str) -> list[SecurityGroupRule]:
    rules = [r for r in reader.all(SecurityGroupRule) if r.security_group_id == group_id]
    return sorted(rules, key=lambda r: (r.created_at, r.id))


def touch(txn: txns.Txn, group: SecurityGroup) -> None:
    """A new revision of ``group`` in this commit: its rules changed."""
    txn.update(group.model_copy(update={'updated_at': now()}))


class SecurityGroupHandler(Handler):
    rdef = definitions.SECURITY_GROUP
    model = SecurityGroup

    def before_list(self, store, ctx, filters):
        _ensure_for_listing(store, ctx, filters)

    def create(self, txn, keys, ctx, body):
        ensure_default(txn, keys, body['project_id'])
        group = self.build(body, id=txns.new_id(), key=keys.next('security_group'))
        txn.create(group)
        for ethertype in ETHERTYPES:
            txn.create(_rule(group, keys, group.created_at, direction='egress',
                             ethertype=ethertype))
        return group

    def update(self, txn, keys, ctx, group, changes):
        if group.name == DEFAULT_NAME and 'name' in changes:
            raise errors.SecurityGroupCannotUpdateDefault()
        return self.apply(txn, group, changes)

    def fence(self, store, id):
        return txns.fenced(store, SecurityGroup, id)

    def delete(self, txn, ctx, group):
        if any(group.id in p.security_groups for p in txn.all(Port)):
            raise errors.SecurityGroupInUse(id=group.id)
        if group.name == DEFAULT_NAME and not ctx.is_admin:
            raise errors.SecurityGroupCannotRemoveDefault()
        touched = {}
        for rule in txn.all(SecurityGroupRule):
            if rule.security_group_id == group.id:
                txn.delete(rule)
            elif rule.remote_group_id == group.id:  # Neutron's ON DELETE CASCADE
                txn.delete(rule)
                touched.setdefault(rule.security_group_id,
                                   txn.get(SecurityGroup, rule.security_group_id))
        for other in filter(None, touched.values()):
            touch(txn, other)
        record = txn.get(DefaultSecurityGroup, group.project_id)
        if record is not None and record.security_group_id == group.id:
            txn.delete(record)
        txn.delete(group)

    def full(self, group, reader):
        doc = super().full(group, reader)
        rules = SecurityGroupRuleHandler(self.conf)
        doc.update(shared=False, security_group_rules=[
            attributes.view(rules.rdef, rules.full(r, reader))
            for r in rules_of(reader, group.id)])
        return doc


class SecurityGroupRuleHandler(Handler):
    rdef = definitions.SECURITY_GROUP_RULE
    model = SecurityGroupRule

    def before_list(self, store, ctx, filters):
        _ensure_for_listing(store, ctx, filters)

    def create(self, txn, keys, ctx, body):
        return self.create_many(txn, keys, ctx, [body])[0]

    def create_many(self, txn, keys, ctx, bodies: list[dict]) -> list[SecurityGroupRule]:
        """Neutron's checks in Neutron's order: one group and project per bulk, each rule
        valid, no duplicate in the request, then none of the group's rules the same."""
        if len({b['security_group_id'] for b in bodies}) > 1:
            raise errors.SecurityGroupNotSingleGroupRules()
        if len({b['project_id'] for b in bodies}) > 1:
            raise errors.SecurityGroupRulesNotSingleTenant()
        rules = [self._checked(txn, ctx, body, keys.next('security_group_rule'))
                 for body in bodies]
        keys_seen: dict[str, SecurityGroupRule] = {}
        for rule in rules:
            if keys_seen.setdefault(rule_key(rule), rule) is not rule:
                raise errors.DuplicateSecurityGroupRuleInPost()
        group = txn.get(SecurityGroup, rules[0].security_group_id)
        for existing in rules_of(txn, group.id):
            if rule_key(existing) in keys_seen:
                raise errors.SecurityGroupRuleExists(rule_id=existing.id)
        for rule in rules:
            txn.create(rule)
        touch(txn, group)
        return rules

    def _checked(self, txn, ctx, body: dict, key: int) -> SecurityGroupRule:
        rule = self.build(body, id=txns.new_id(), key=key)
        if rule.ethertype == 'IPv6':  # legacy names and numbers of ICMPv6
            if rule.protocol in IPV6_ICMP_LEGACY:
                rule.protocol = 'ipv6-icmp'
            elif rule.protocol == '1':
                rule.protocol = '58'
        _check_port_range(rule)
        if rule.remote_ip_prefix is not None:
            if rule.ethertype != f'IPv{_version(rule.remote_ip_prefix)}':
                raise errors.SecurityGroupRuleParameterConflict(ethertype=rule.ethertype,
                                                                cidr=rule.remote_ip_prefix)
        if rule.protocol in IPV6_ONLY_PROTOCOLS and rule.ethertype == 'IPv4':
            raise errors.SecurityGroupEthertypeConflictWithProtocol(ethertype=rule.ethertype,
                                                                    protocol=rule.protocol)
        if rule.remote_ip_prefix and rule.remote_group_id:
            raise errors.SecurityGroupRemoteGroupAndRemoteIpPrefix()
        if rule.remote_group_id:
            use_group(txn, self._group(txn, ctx, rule.remote_group_id, rule.project_id))
        self._group(txn, ctx, rule.security_group_id, rule.project_id)
        return rule

    @staticmethod
    def _group(txn, ctx, group_id: str, project_id: str) -> SecurityGroup:
        """A group the rule's project may use (Neutron's _check_security_group)."""
        group = txn.get(SecurityGroup, group_id)
        if group is None or not (ctx.is_admin or group.project_id == project_id):
            raise errors.SecurityGroupNotFound(id=group_id)
        return group

    def delete(self, txn, ctx, rule):
        txn.delete(rule)
        group = txn.get(SecurityGroup, rule.security_group_id)
        if group is not None:
            touch(txn, group)

    def get(self, txn, ctx, id, action=''):
        """The rule's project and its group's project both may see and change it."""
        rule = txn.get(SecurityGroupRule, id)
        if rule is None or not self.visible_to(ctx, rule, txn):
            raise errors.SecurityGroupRuleNotFound(id=id)
        return rule

    def visible_to(self, ctx, rule, reader):
        if ctx.owns(rule.project_id):
            return True
        group = reader.get(SecurityGroup, rule.security_group_id)
        return group is not None and ctx.owns(group.project_id)

    def full(self, rule, reader):
        doc = super().full(rule, reader)
        doc['normalized_cidr'] = rule.normalized_cidr
        return doc


def _version(prefix: str) -> int:
    return 6 if ':' in prefix else 4


def _protocol_number(protocol: str) -> int:
    if protocol == 'icmpv6':
        protocol = 'ipv6-icmp'
    return IP_PROTOCOLS[protocol] if protocol in IP_PROTOCOLS else int(protocol)


def _check_port_range(rule: SecurityGroupRule) -> None:
    """Neutron's _validate_port_range: ports for port protocols, type/code for ICMP."""
    low, high = rule.port_range_min, rule.port_range_max
    if low is None and high is None:
        return
    if not rule.protocol:
        raise errors.SecurityGroupProtocolRequiredWithPorts()
    number = _protocol_number(rule.protocol)
    if number in PORT_PROTOCOL_NUMBERS:
        if low == 0 or high == 0:
            raise errors.SecurityGroupInvalidPortValue(port=0)
        if low is None or high is None or low > high:
            raise errors.SecurityGroupInvalidPortRange()
    elif number in ICMP_NUMBERS:
        for attr, field, value in (('port_range_min', 'type', low),
                                   ('port_range_max', 'code', high)):
            if value is not None and not 0 <= value <= 255:
                raise errors.SecurityGroupInvalidIcmpValue(field=field, attr=attr, value=value)
        if low is None:
            raise errors.SecurityGroupMissingIcmpType(value=high)
    else:
        raise errors.SecurityGroupInvalidProtocolForPort(
            protocol=number, valid_port_protocols=', '.join(p.upper() for p in PORT_PROTOCOLS))


def _protocol_key(protocol: str, ethertype: str) -> list[str]:
    """Neutron's _get_ip_proto_name_and_num: 'tcp' and '6' are the same protocol."""
    if ethertype == 'IPv6':
        if protocol in IPV6_ICMP_LEGACY:
            protocol = 'ipv6-icmp'
        elif protocol == '1':
            protocol = '58'
    if protocol in IP_PROTOCOLS:
        return [protocol, str(IP_PROTOCOLS[protocol])]
    if protocol in PROTOCOL_NAMES:
        return [PROTOCOL_NAMES[protocol], protocol]
    return [protocol, protocol]


def rule_key(rule: SecurityGroupRule) -> str:
    """What makes two rules the same (Neutron's _rule_to_key): every attribute but id and
    description; any address ('0.0.0.0/0', '::/0' or none) is one value."""
    def value(name: str) -> Optional[str]:
        v = getattr(rule, name)
        if (name == 'remote_ip_prefix' and v in ANY_PREFIX) or v is None:
            return '+'
        if name == 'protocol':
            return str(_protocol_key(v, rule.ethertype))
        return str(v)
    return '_'.join(value(name) for name in (
        'direction', 'ethertype', 'port_range_max', 'port_range_min', 'protocol',
        'remote_group_id', 'remote_ip_prefix', 'security_group_id'))

