"""Neutron's API dicts (an ML2 context's ``current``, the L3 plugin's results) as the NB model
objects df-api writes for the same resources.

Pure functions: the data-plane ``key`` of an object is the caller's (kept from the NB record,
see mirror.py), and whatever Neutron knows that the model has no field for (revision_number,
tenant_id, extensions' attributes) is left out. Where df-api decides a field rather than
copying it (no security groups on network:* ports or with port security off, the port's MAC in
address pairs that name none, protocol names of ICMPv6 rules) the same rule applies here, so
the controllers see one shape whichever API made the object.
"""
from typing import Iterable, Optional

from dragonflow.model import (
    FloatingIP,
    Network,
    Port,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from dragonflow.model.objects import STATUS_BY_REPORT

# Model fields Neutron's dicts carry under the same names.
RESOURCE_FIELDS = ('id', 'project_id', 'name', 'description', 'tags', 'created_at',
                   'updated_at')
PROVIDER = ('provider:network_type', 'provider:physical_network', 'provider:segmentation_id')
# Under Neutron the chassis reports a port's or floating IP's status (a StatusReport) and the
# driver's status worker tells Neutron; it never writes the object (Port.status_source).
STATUS_SOURCE = STATUS_BY_REPORT
IPV6_ICMP_LEGACY = ('icmp', 'icmpv6')
ANY_PROTOCOL = ('any', '0')


def _common(neutron: dict, names: Iterable[str] = RESOURCE_FIELDS) -> dict:
    doc = {name: neutron[name] for name in names if neutron.get(name) is not None}
    if 'project_id' not in doc and neutron.get('tenant_id'):
        doc['project_id'] = neutron['tenant_id']
    return doc


def segment_of(neutron: dict) -> dict:
    """The provider fields of a network: its provider:* attributes, or its first segment
    (a network of several segments shows them in ``segments``)."""
    if neutron.get('provider:network_type'):
        return {name: neutron.get(name) for name in PROVIDER}
    segments = neutron.get('segments') or []
    if not segments:
        return {}
    first = segments[0]
    return {name: first.get(name) for name in PROVIDER}


def network(neutron: dict, key: int) -> Network:
    doc = _common(neutron)
    doc.update(key=key, **segment_of(neutron))
    for name in ('admin_state_up', 'status', 'shared', 'router:external', 'mtu',
                 'port_security_enabled'):
        if neutron.get(name) is not None:
            doc[name] = neutron[name]
    return Network.model_validate(doc)


def subnet(neutron: dict) -> Subnet:
    doc = _common(neutron)
    for name in ('network_id', 'cidr', 'gateway_ip', 'ipv6_ra_mode', 'ipv6_address_mode'):
        doc[name] = neutron.get(name)
    doc['ip_version'] = neutron.get('ip_version') or 4
    doc['enable_dhcp'] = bool(neutron.get('enable_dhcp', True))
    doc['allocation_pools'] = [{'start': p['start'], 'end': p['end']}
                               for p in neutron.get('allocation_pools') or []]
    doc['dns_nameservers'] = list(neutron.get('dns_nameservers') or [])
    doc['host_routes'] = [{'destination': r['destination'], 'nexthop': r['nexthop']}
                          for r in neutron.get('host_routes') or []]
    return Subnet.model_validate(doc)


def port(neutron: dict, key: int) -> Port:
    """df-api's rules: a network:* port (router interface, gateway, floating IP, DHCP) and a
    port without port security are filtered by no group."""
    doc = _common(neutron)
    mac = neutron['mac_address']
    port_security = neutron.get('port_security_enabled', True)
    port_security = True if port_security is None else bool(port_security)
    trusted = (neutron.get('device_owner') or '').startswith('network:')
    doc.update(
        key=key, network_id=neutron['network_id'], mac_address=mac,
        fixed_ips=[{'subnet_id': f['subnet_id'], 'ip_address': f['ip_address']}
                   for f in neutron.get('fixed_ips') or []],
        device_owner=neutron.get('device_owner') or '',
        device_id=neutron.get('device_id') or '',
        admin_state_up=neutron.get('admin_state_up', True),
        status=neutron.get('status') or 'DOWN',
        port_security_enabled=port_security,
        security_groups=[] if trusted or not port_security else
        list(neutron.get('security_groups') or []),
        allowed_address_pairs=[{'ip_address': p['ip_address'],
                                'mac_address': p.get('mac_address') or mac}
                               for p in neutron.get('allowed_address_pairs') or []],
        **{'binding:host_id': neutron.get('binding:host_id') or '',
           'binding:profile': neutron.get('binding:profile') or {},
           'binding:vnic_type': neutron.get('binding:vnic_type') or 'normal'})
    return Port.model_validate({**doc, 'status_source': STATUS_SOURCE})


def security_group(neutron: dict, key: int) -> SecurityGroup:
    return SecurityGroup.model_validate({**_common(neutron), 'key': key})


def protocol(value, ethertype: str) -> Optional[str]:
    """df-api's protocol: None for any, ICMPv6 under its one name, numbers as strings."""
    if value is None:
        return None
    value = str(value).lower()
    if value in ANY_PROTOCOL:
        return None
    if ethertype == 'IPv6':
        if value in IPV6_ICMP_LEGACY:
            return 'ipv6-icmp'
        if value == '1':
            return '58'
    return value


class Unsupported(ValueError):
    """Neutron has the object, the model cannot say what it means: not mirrored."""


def security_group_rule(neutron: dict, key: int) -> SecurityGroupRule:
    """Refuses (Unsupported) a rule whose remote is an address group: the model has no such
    remote, and without it the rule would allow any address, more than Neutron's."""
    if neutron.get('remote_address_group_id'):
        raise Unsupported(f"security group rule {neutron['id']}: remote address groups are "
                          'not supported; the rule is not applied')
    doc = _common(neutron, ('id', 'project_id', 'description', 'tags', 'created_at',
                            'updated_at'))
    ethertype = neutron.get('ethertype') or 'IPv4'
    doc.update(key=key, security_group_id=neutron['security_group_id'],
               direction=neutron['direction'], ethertype=ethertype,
               protocol=protocol(neutron.get('protocol'), ethertype),
               port_range_min=neutron.get('port_range_min'),
               port_range_max=neutron.get('port_range_max'),
               remote_ip_prefix=neutron.get('remote_ip_prefix'),
               remote_group_id=neutron.get('remote_group_id'))
    return SecurityGroupRule.model_validate(doc)


def interfaces(ports: Iterable[dict]) -> list[dict]:
    """Router.interfaces from the router's network:router_interface ports: one entry per
    subnet a port has an address on, oldest port first (df-api appends in creation order)."""
    ordered = sorted(ports, key=lambda p: (p.get('created_at') or '', p['id']))
    return [{'port_id': p['id'], 'subnet_id': f['subnet_id']}
            for p in ordered for f in p.get('fixed_ips') or []]


def router(neutron: dict, key: int, interface_ports: Iterable[dict] = (),
           gateway_port_id: Optional[str] = None,
           gateway_chassis: Iterable[str] = ()) -> Router:
    """``interface_ports``: the router's network:router_interface ports; ``gateway_port_id``:
    its network:router_gateway port (default: the dict's gw_port_id, which the L3 DB shows)."""
    doc = _common(neutron)
    info = neutron.get('external_gateway_info')
    doc.update(
        key=key, admin_state_up=neutron.get('admin_state_up', True),
        status=neutron.get('status') or 'ACTIVE',
        routes=[{'destination': r['destination'], 'nexthop': r['nexthop']}
                for r in neutron.get('routes') or []],
        interfaces=interfaces(interface_ports),
        external_gateway_info=None if not info else {
            'network_id': info['network_id'],
            'enable_snat': info.get('enable_snat', True) is not False,
            'external_fixed_ips': [{'subnet_id': f['subnet_id'],
                                    'ip_address': f['ip_address']}
                                   for f in info.get('external_fixed_ips') or []]},
        gateway_port_id=(gateway_port_id or neutron.get('gw_port_id')) if info else None,
        gateway_chassis=list(gateway_chassis) if info else [])
    return Router.model_validate(doc)


def floating_ip(neutron: dict, floating_port_id: Optional[str] = None) -> FloatingIP:
    """``floating_port_id``: its network:floatingip port (the L3 DB's dict does not show it)."""
    doc = _common(neutron)
    for name in ('floating_network_id', 'floating_ip_address', 'port_id', 'fixed_ip_address',
                 'router_id'):
        doc[name] = neutron.get(name)
    doc['floating_port_id'] = floating_port_id or neutron.get('floating_port_id')
    doc['status'] = neutron.get('status') or 'DOWN'
    return FloatingIP.model_validate({**doc, 'status_source': STATUS_SOURCE})
