"""The API resources as data: one attribute map per resource, as in neutron-lib.

Attribute names, defaults, POST/PUT permissions and validation follow neutron-lib's core
definitions plus the extensions df-api announces (see ``extensions``). Attributes a client may
read but not write (status, timestamps, revision_number...) are declared visible-only.
Data-plane fields of the stored objects (keys, router interfaces) are not in the maps, so no
response shows them.
"""
from dragonflow.api import validators as v
from dragonflow.api.attributes import UNSET, Attr, ResourceDef

IPV6_MODES = ['dhcpv6-stateful', 'dhcpv6-stateless', 'slaac', None]
VNIC_TYPES = ['normal', 'direct', 'macvtap', 'baremetal', 'direct-physical', 'virtio-forwarder',
              'smart-nic', 'vdpa', 'remote-managed']

READ_ONLY = Attr(default=None)


def _standard(**more: Attr) -> dict[str, Attr]:
    """Attributes every resource has (core + standard-attr-* + project-id extensions)."""
    return {
        'id': Attr(validate=v.uuid),
        'name': Attr(allow_post=True, allow_put=True, default='',
                     validate=v.string(v.NAME_MAX_LEN)),
        'description': Attr(allow_post=True, allow_put=True, default='',
                            validate=v.string(v.DESCRIPTION_MAX_LEN)),
        'tenant_id': Attr(allow_post=True, validate=v.string(v.NAME_MAX_LEN)),
        'project_id': Attr(allow_post=True, validate=v.string(v.NAME_MAX_LEN)),
        **more,
        # tag-ports-during-bulk-creation (and its siblings): tags may be given on POST.
        'tags': Attr(allow_post=True, default=[], convert=v.to_list, validate=v.tags),
        'created_at': READ_ONLY,
        'updated_at': READ_ONLY,
        'revision_number': Attr(convert_filter=v.to_int),
    }


def _flag(default: bool, put: bool = True, admin_only: bool = False) -> Attr:
    return Attr(allow_post=True, allow_put=put, default=default, convert=v.to_boolean,
                validate=v.boolean, admin_only=admin_only)


NETWORK = ResourceDef('network', 'networks', _standard(
    admin_state_up=_flag(True),
    status=READ_ONLY,
    subnets=READ_ONLY,
    # shared, router:external and provider:* are admin-only in Neutron's default policy.
    shared=_flag(False, admin_only=True),
    **{'router:external': _flag(False, admin_only=True)},
    mtu=Attr(allow_post=True, allow_put=True, default=UNSET, convert=v.to_int,
             validate=v.int_range(68, 65535)),
    port_security_enabled=_flag(True),
    # Admin-only to set and to see (Neutron's default policy); checked as ML2's type
    # drivers check them (segments.TypeManager).
    **{'provider:network_type': Attr(allow_post=True, allow_put=True, default=None,
                                     admin_only=True, admin_only_visible=True,
                                     validate=v.string_or_none(32)),
       'provider:physical_network': Attr(allow_post=True, allow_put=True, default=None,
                                         admin_only=True, admin_only_visible=True,
                                         validate=v.string_or_none(64)),
       'provider:segmentation_id': Attr(allow_post=True, allow_put=True, default=None,
                                        admin_only=True, admin_only_visible=True,
                                        convert=v.to_int_or_none,
                                        convert_filter=v.to_int_or_none)},
    availability_zone_hints=READ_ONLY,
    availability_zones=READ_ONLY,
    ipv4_address_scope=READ_ONLY,
    ipv6_address_scope=READ_ONLY,
    l2_adjacency=READ_ONLY,
))

SUBNET = ResourceDef('subnet', 'subnets', _standard(
    network_id=Attr(allow_post=True, validate=v.uuid),
    ip_version=Attr(allow_post=True, convert=v.to_int, validate=v.values([4, 6])),
    cidr=Attr(allow_post=True, validate=v.subnet_cidr),
    gateway_ip=Attr(allow_post=True, allow_put=True, default=UNSET,
                    validate=v.nullable(v.ip_address)),
    allocation_pools=Attr(allow_post=True, allow_put=True, default=UNSET,
                          validate=v.nullable(v.ip_pools)),
    enable_dhcp=_flag(True),
    dns_nameservers=Attr(allow_post=True, allow_put=True, default=[], convert=v.to_list,
                         validate=v.nameservers),
    host_routes=Attr(allow_post=True, allow_put=True, default=[], convert=v.to_list,
                     validate=v.hostroutes),
    ipv6_ra_mode=Attr(allow_post=True, default=None, validate=v.values(IPV6_MODES)),
    ipv6_address_mode=Attr(allow_post=True, default=None, validate=v.values(IPV6_MODES)),
    subnetpool_id=READ_ONLY,
    service_types=READ_ONLY,
    segment_id=READ_ONLY,
))

PORT = ResourceDef('port', 'ports', _standard(
    network_id=Attr(allow_post=True, validate=v.uuid),
    admin_state_up=_flag(True),
    mac_address=Attr(allow_post=True, allow_put=True, default=UNSET, convert=v.normalize_mac,
                     validate=v.mac_address, convert_filter=v.normalize_mac),
    fixed_ips=Attr(allow_post=True, allow_put=True, default=UNSET, validate=v.fixed_ips),
    device_id=Attr(allow_post=True, allow_put=True, default='',
                   validate=v.string(v.DEVICE_MAX_LEN)),
    device_owner=Attr(allow_post=True, allow_put=True, default='',
                      validate=v.string(v.DEVICE_MAX_LEN)),
    status=READ_ONLY,
    # Not given: the project's default group (when port security is on); null: none.
    security_groups=Attr(allow_post=True, allow_put=True, default=UNSET,
                         convert=v.to_uuid_list_or_none, convert_filter=str),
    port_security_enabled=Attr(allow_post=True, allow_put=True, default=UNSET,
                               convert=v.to_boolean, validate=v.boolean),
    allowed_address_pairs=Attr(allow_post=True, allow_put=True, default=[],
                               convert=v.none_to_empty_list, validate=v.address_pairs),
    ip_allocation=READ_ONLY,
    # Admin-only, as Neutron's default policy has them: a tenant binding its port to any
    # chassis would pull its network into that chassis' scope, or make every chassis serving
    # the network look for a chassis that does not exist.
    **{'binding:host_id': Attr(allow_post=True, allow_put=True, default='', admin_only=True,
                               validate=v.string(v.DEVICE_MAX_LEN)),
       # null clears the profile, as ML2 takes it.
       'binding:profile': Attr(allow_post=True, allow_put=True, default={}, admin_only=True,
                               convert=v.none_to_empty_dict, validate=v.binding_profile),
       'binding:vnic_type': Attr(allow_post=True, allow_put=True, default='normal',
                                 validate=v.values(VNIC_TYPES)),
       'binding:vif_type': READ_ONLY,
       'binding:vif_details': READ_ONLY},
))

ROUTER = ResourceDef('router', 'routers', _standard(
    admin_state_up=_flag(True),
    status=READ_ONLY,
    external_gateway_info=Attr(allow_post=True, allow_put=True, default=None,
                               convert=v.to_external_gateway_info,
                               validate=v.external_gateway_info),
    routes=Attr(allow_put=True, default=[], convert=v.to_list, validate=v.hostroutes),
    # Dragonflow's: the chassis that may hold its gateway, in priority order (l3_scheduler).
    # Read-only, and shown to admins only, as provider:* are: it says where traffic goes.
    gateway_chassis=Attr(default=None, admin_only_visible=True),
))

# The body of PUT /routers/{id}/add_extraroutes and remove_extraroutes (extraroute-atomic).
EXTRAROUTES = ResourceDef('router', 'routers', {
    'routes': Attr(allow_put=True, convert=v.to_list, validate=v.hostroutes),
})

SECURITY_GROUP = ResourceDef('security_group', 'security_groups', _standard(
    name=Attr(allow_post=True, allow_put=True, default='',
              validate=v.name_not_default(v.NAME_MAX_LEN)),
    security_group_rules=READ_ONLY,
    # security-groups-shared-filtering: no RBAC here, so never shared.
    shared=Attr(convert_filter=v.to_boolean),
), path='security-groups')


def _rule_value(convert) -> Attr:
    return Attr(allow_post=True, default=None, convert=convert)


# Rules have the standard attributes but no name; only their description may change.
SECURITY_GROUP_RULE = ResourceDef('security_group_rule', 'security_group_rules', {
    name: attr for name, attr in _standard(
        security_group_id=Attr(allow_post=True, validate=v.string(v.NAME_MAX_LEN)),
        remote_group_id=Attr(allow_post=True, default=None,
                             validate=v.string_or_none(v.NAME_MAX_LEN)),
        direction=Attr(allow_post=True, validate=v.values(['ingress', 'egress'])),
        protocol=_rule_value(v.to_protocol),
        port_range_min=_rule_value(v.to_port_value),
        port_range_max=_rule_value(v.to_port_value),
        ethertype=Attr(allow_post=True, default='IPv4', convert=v.to_ethertype),
        remote_ip_prefix=_rule_value(v.to_ip_prefix),
        normalized_cidr=READ_ONLY,   # security-groups-normalized-cidr
    ).items() if name != 'name'
}, path='security-group-rules')

# Floating IPs have the standard attributes but no name (neutron-lib's l3 definition).
FLOATINGIP = ResourceDef('floatingip', 'floatingips', {
    name: attr for name, attr in _standard(
        # create_floatingip:floating_ip_address is admin-only in Neutron's default policy.
        floating_ip_address=Attr(allow_post=True, default=None, admin_only=True,
                                 validate=v.nullable(v.ip_address)),
        subnet_id=Attr(allow_post=True, default=None, visible=False,
                       validate=v.nullable(v.uuid)),
        floating_network_id=Attr(allow_post=True, validate=v.uuid),
        router_id=READ_ONLY,
        port_id=Attr(allow_post=True, allow_put=True, default=None,
                     validate=v.nullable(v.uuid)),
        fixed_ip_address=Attr(allow_post=True, allow_put=True, default=None,
                              validate=v.nullable(v.ip_address)),
        status=READ_ONLY,
        port_details=READ_ONLY,   # fip-port-details
    ).items() if name != 'name'
})

RESOURCES = {r.collection: r for r in (NETWORK, SUBNET, PORT, ROUTER, SECURITY_GROUP,
                                       SECURITY_GROUP_RULE, FLOATINGIP)}
