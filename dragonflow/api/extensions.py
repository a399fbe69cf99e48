"""The Neutron API extensions df-api implements, and the version documents.

Clients look extensions up by alias before using what they add (the openstack CLI, e.g.,
sends tags in a port POST only if 'tag-ports-during-bulk-creation' is listed), so only what
is really implemented is listed.
"""

UPDATED = '2024-01-01T00:00:00-00:00'

EXTENSIONS = [
    ('router', 'Neutron L3 Router',
     'Router abstraction for basic L3 forwarding between L2 Neutron networks'),
    ('ext-gw-mode', 'Neutron L3 Configurable external gateway mode',
     'Extension of the router abstraction for specifying whether SNAT should occur on the '
     'external gateway'),
    ('fip-port-details', 'Floating IP Port Details Extension',
     'Add port_details attribute to Floating IP resource'),
    ('extraroute', 'Neutron Extra Route', 'Extra routes configuration for L3 router'),
    ('extraroute-atomic', 'Atomically add/remove extra routes',
     'Edit extra routes of a router on server side by atomically adding/removing extra '
     'routes'),
    ('external-net', 'Neutron external network', 'Adds external network attribute to network '
     'resource.'),
    ('binding', 'Port Binding', 'Expose port bindings of a virtual port to external '
     'application'),
    ('port-security', 'Port Security', 'Provides port security'),
    ('security-group', 'security-group', 'The security groups extension.'),
    ('security-groups-shared-filtering', 'Security group filtering on the shared field',
     'Support filtering security groups on the shared field'),
    ('security-groups-normalized-cidr', 'Normalized CIDR field for security group rules',
     'Add new field with normalized remote_ip_prefix cidr in SG rule'),
    ('allowed-address-pairs', 'Allowed Address Pairs', 'Provides allowed address pairs'),
    ('provider', 'Provider Network', 'Expose mapping of virtual networks to physical networks'),
    ('net-mtu', 'Network MTU', 'Provides MTU attribute for a network resource.'),
    ('net-mtu-writable', 'Network MTU (writable)',
     'Provides a writable MTU attribute for a network resource.'),
    ('l2_adjacency', 'L2 Adjacency', 'Display whether all ports on a network are in the same '
     'L2 domain'),
    ('project-id', 'project_id field enabled', 'Extension that indicates that project_id field '
     'is enabled.'),
    ('standard-attr-description', 'standard-attr-description',
     'Extension to add descriptions to standard attributes'),
    ('standard-attr-revisions', 'Resource revision numbers',
     'This extension will display the revision number of neutron resources.'),
    ('standard-attr-timestamp', 'Resource timestamps',
     'Adds created_at and updated_at fields to all Neutron resources that have Neutron '
     'standard attributes.'),
    ('standard-attr-tag', 'Tag support for resources with standard attribute',
     'Enables to set tag on resources with standard attribute.'),
    ('tag-ports-during-bulk-creation', 'Tag Ports During Bulk Creation',
     'Allow to tag ports during bulk creation'),
    ('revision-if-match', 'If-Match constraints based on revision_number',
     'Extension indicating that If-Match based on revision_number is supported.'),
    ('filter-validation', 'Filter parameters validation',
     'Provides validation on filter parameters.'),
    ('pagination', 'Pagination support', 'Extension that indicates that pagination is enabled.'),
    ('sorting', 'Sorting support', 'Extension that indicates that sorting is enabled.'),
]


def extension(alias: str, name: str, description: str) -> dict:
    return {'alias': alias, 'name': name, 'description': description, 'updated': UPDATED,
            'links': []}


def all_extensions() -> list[dict]:
    return [extension(*e) for e in EXTENSIONS]


def find(alias: str):
    return next((e for e in all_extensions() if e['alias'] == alias), None)


def versions(base_url: str) -> dict:
    """``GET /``: the document openstacksdk's version discovery reads."""
    return {'versions': [{'id': 'v2.0', 'status': 'CURRENT',
                          'links': [{'href': f'{base_url}v2.0/', 'rel': 'self'}]}]}


def resources(base_url: str, resource_defs) -> dict:
    """``GET /v2.0/``: the core resources."""
    return {'resources': [{'name': r.name, 'collection': r.collection,
                           'links': [{'href': f'{base_url}v2.0/{r.url_segment}',
                                      'rel': 'self'}]}
                          for r in resource_defs]}
