"""Configuration options, one INI file for every program (oslo.config).

Options are registered on a ConfigOpts instance passed in by each program, so importing this
module has no side effects and tests can build as many independent configurations as they like.
"""
import io

from oslo_config import cfg

store_opts = [
    cfg.StrOpt('url', default='sqlite:////var/lib/dragonflow/nb.db',
               help='Northbound store: sqlite:///<path>, etcd://<host:port>[,<host:port>...] '
                    'or redis://<host:port>.'),
    cfg.FloatOpt('timeout', default=5.0,
                 help='Seconds a store operation may take before it fails as unavailable.'),
    cfg.IntOpt('compact_keep_revisions', default=1000, min=0,
               help='Compaction keeps at least this many of the latest changes in the change '
                    'log; a watcher further behind resyncs from a snapshot.'),
    cfg.FloatOpt('compact_keep_seconds', default=600.0, min=0,
                 help='Compaction also keeps every change younger than this many seconds: '
                      'only changes past both limits are forgotten.'),
    cfg.FloatOpt('compact_interval', default=60.0, min=1,
                 help='Seconds between compactions of the change log (df-api runs them; '
                      'any number of replicas may).'),
]

api_opts = [
    cfg.HostAddressOpt('bind_host', default='127.0.0.1', help='Address df-api listens on.'),
    cfg.PortOpt('bind_port', default=9696, help='TCP port df-api listens on.'),
    cfg.StrOpt('default_project_id', default='demo',
               help='Project used in noauth mode when a request names none '
                    '(neither in its body nor in the X-Project-Id header).'),
    cfg.ListOpt('default_roles', default=[],
                help='Roles of a request that names none (no X-Roles header), in noauth '
                     'mode: admin makes such requests an admin\'s, as the openstack CLI '
                     'without keystone is then.'),
    cfg.IntOpt('global_physnet_mtu', default=1500, min=68,
               help='MTU of the underlying physical network (Neutron\'s [DEFAULT] option of '
                    'that name): flat and VLAN networks get it, tunnel networks it less their '
                    'encapsulation (VXLAN 1450, Geneve 1450, GRE 1458 of 1500).'),
    cfg.StrOpt('base_mac', default='fa:16:3e:00:00:00',
               help='MAC prefix for generated port MACs (the first three octets are kept).'),
    cfg.IntOpt('workers', default=1, help='Number of df-api worker processes.'),
    cfg.IntOpt('max_fixed_ips_per_port', default=5, min=1,
               help='Most fixed IPs one port may have (as Neutron\'s option of that name).'),
    cfg.IntOpt('max_routes', default=30, min=0,
               help='Most extra routes one router may have (as Neutron\'s option).'),
    cfg.IntOpt('max_allowed_address_pair', default=10, min=0,
               help='Most allowed address pairs one port may have (as Neutron\'s option).'),
    cfg.BoolOpt('access_log', default=True, help='Log every HTTP request df-api answers.'),
    cfg.IntOpt('max_request_body_size', default=114688, min=1024,
               help='Largest request body df-api reads, in bytes; a larger one gets 413 '
                    '(Neutron\'s oslo.middleware limit has the same default).'),
]

controller_opts = [
    cfg.StrOpt('chassis_id', help='This chassis\' name in the store; defaults to the hostname.'),
    cfg.StrOpt('tunnel_ip', default='127.0.0.1',
               help='Underlay IP address tunnels to this chassis are sent to.'),
    cfg.ListOpt('tunnel_types', default=['vxlan'],
                help='Tunnel encapsulations this chassis terminates (vxlan, geneve, gre): '
                     'one tunnel port each (remote IP and key from the flows). A network '
                     'crosses chassis in the tunnel of its provider:network_type; a network '
                     'from before provider networks (none recorded) in the first of these, so '
                     'every chassis must list the same first type.'),
    cfg.ListOpt('bridge_mappings', default=[],
                help='<physical_network>:<bridge> pairs, as Neutron\'s OVS agent and OVN '
                     'take them (e.g. physnet1:br-ex,physnet2:br-vlan). The operator creates '
                     'each bridge and puts the NIC in it; the controller creates and keeps '
                     'the patch ports between it and the integration bridge. Flat and VLAN '
                     'networks of a physnet, and floating IPs on them, work on this chassis '
                     'only if it maps that physnet.'),
    cfg.StrOpt('ovsdb_connection', default='unix:/var/run/openvswitch/db.sock',
               help='OVSDB endpoint of this chassis\' Open vSwitch.'),
    cfg.StrOpt('integration_bridge', default='br-int', help='The integration bridge.'),
    cfg.StrOpt('datapath_type', default='system', choices=['system', 'netdev'],
               help='Datapath of the integration bridge when the controller creates it: '
                    'system (kernel module) or netdev (userspace).'),
    cfg.HostAddressOpt('openflow_listen_host', default='127.0.0.1',
                       help='Address the OpenFlow controller listens on (OVS connects to it).'),
    cfg.PortOpt('openflow_listen_port', default=6653, help='OpenFlow controller TCP port.'),
    cfg.BoolOpt('gateway', default=False,
                help='This chassis may hold routers\' gateway addresses (answer ARP for them, '
                     'SNAT to them) on the external networks of its bridge_mappings\' '
                     'physnets. df-api lists each router\'s candidates in priority order; the '
                     'first alive holds it, and liveness is decided by BFD between chassis, '
                     'without the store.'),
    cfg.IntOpt('bfd_interval', default=300, min=50, max=5000,
               help='Milliseconds between the BFD packets of this chassis\' liveness sessions '
                    'with gateway chassis (and, on a gateway, with the chassis it serves); a '
                    'peer is down after 3 missed, so a gateway fails over in about 3 of '
                    'these.'),
    cfg.PortOpt('bfd_udp_port', default=4795,
                help='UDP port of the VXLAN tunnel ports that carry the BFD sessions only '
                     '(one per peer; data keeps the tunnel_types ports). Every chassis must '
                     'use the same, and the underlay must let it through.'),
    cfg.BoolOpt('flow_restore_wait', default=True,
                help='Once br-int has its flows, keep flow-restore-wait=true in the '
                     'other_config of Open vSwitch\'s Open_vSwitch row, so that an '
                     'ovs-vswitchd that starts again (a crash, a reboot) forwards nothing '
                     'and brings up no BFD session until this controller is back: it then '
                     'lets it start with its BFD ports withdrawn, and a gateway chassis is '
                     'seen alive again only once its flows are in. Without it, a restarted '
                     'gateway is alive for its peers before its controller is back, with an '
                     'empty br-int. The controller needs only the local OVSDB to end the '
                     'wait (no store, no network), but while it waits ovs-vswitchd forwards '
                     'on none of its bridges: to stop running df-controller on a chassis, '
                     'stop it, then clear the flag (ovs-vsctl remove Open_vSwitch . '
                     'other_config flow-restore-wait). With false, the controller still lets '
                     'a waiting switch start.'),
    cfg.FloatOpt('heartbeat_interval', default=2.0, min=0.1,
                 help='Seconds between chassis heartbeats. A heartbeat is a liveness record '
                      'that expires after three intervals, not a logged change.'),
]


l3_opts = [
    cfg.FloatOpt('external_gateway_refresh', default=30.0, min=1,
                 help='Seconds between the ARP requests a chassis sends for the gateway of an '
                      'external subnet it NATs floating IPs on, to learn (and keep current) '
                      'the gateway\'s MAC.'),
    cfg.StrOpt('snat_mode', default='gateway', choices=['gateway', 'distributed'],
               help='Where routers without a floating IP SNAT to the outside (read by df-api, '
                    'which records it in the topology): gateway = on the router\'s active '
                    'gateway chassis, to the router\'s gateway address; distributed = on '
                    'each chassis, to an address of the router\'s own there (a '
                    'network:chassis_snat port per router and chassis, allocated by df-api): '
                    'no tunnel to a gateway, capacity grows with the chassis, and the outside '
                    'sees one address per chassis, not the router\'s.'),
    cfg.FloatOpt('schedule_interval', default=10.0, min=0.5,
                 help='Seconds between df-api\'s passes over every router with a gateway, '
                      'besides the changes it follows: new gateway chassis appended to '
                      'gateway_chassis lists (never reordered; chassis that can no longer '
                      'hold the gateway dropped), distributed SNAT ports made and removed.'),
]

# Neutron's ML2 type driver options, with Neutron's group and option names, read by df-api.
ml2_opts = [
    cfg.ListOpt('type_drivers', default=['vxlan', 'geneve', 'gre', 'flat', 'vlan'],
                help='Network types that may be created (provider:network_type).'),
    cfg.ListOpt('tenant_network_types', default=['vxlan'],
                help='Type given, in this order of preference, to a network created without '
                     'provider attributes.'),
    cfg.IntOpt('path_mtu', default=0, min=0,
               help='MTU of the underlay path tunnels take, when less than '
                    '[api] global_physnet_mtu (0: the same).'),
]
ml2_type_vxlan_opts = [
    cfg.ListOpt('vni_ranges', default=['1:65535'],
                help='<min>:<max> VXLAN VNI ranges tenant networks are allocated from.'),
]
ml2_type_geneve_opts = [
    cfg.ListOpt('vni_ranges', default=['1:65535'],
                help='<min>:<max> Geneve VNI ranges tenant networks are allocated from.'),
    cfg.IntOpt('max_header_size', default=30, min=30,
               help='Geneve header size the MTU of Geneve networks leaves room for '
                    '(30: no options).'),
]
ml2_type_gre_opts = [
    cfg.ListOpt('tunnel_id_ranges', default=['1:65535'],
                help='<min>:<max> GRE key ranges tenant networks are allocated from.'),
]
ml2_type_flat_opts = [
    cfg.ListOpt('flat_networks', default=['*'],
                help='Physical networks flat networks may be created on; * for any.'),
]
ml2_type_vlan_opts = [
    cfg.ListOpt('network_vlan_ranges', default=[],
                help='<physical_network>[:<min>:<max>]: the physnets VLAN networks may be '
                     'created on, and the VLAN ids tenant networks are allocated from there '
                     '(a physnet without a range takes provider networks only).'),
]

dhcp_opts = [
    cfg.IntOpt('lease_time', default=86400, min=60,
               help='Seconds a DHCP lease lasts; clients renew at half of it.'),
    cfg.FloatOpt('rate_limit', default=5.0, min=0.1,
                 help='DHCP packets per second each port may send to its controller; '
                      'more are dropped, so one VM cannot flood the controller.'),
    cfg.StrOpt('metadata_ip', default='',
               help='When set (e.g. 169.254.169.254), DHCP gives VMs a host route to it via '
                    'their DHCP server address.'),
]


_ML2_GROUPS = (('ml2', ml2_opts), ('ml2_type_vxlan', ml2_type_vxlan_opts),
               ('ml2_type_geneve', ml2_type_geneve_opts), ('ml2_type_gre', ml2_type_gre_opts),
               ('ml2_type_flat', ml2_type_flat_opts), ('ml2_type_vlan', ml2_type_vlan_opts))


def register_opts(conf):
    """Register every Dragonflow option group on ``conf``."""
    conf.register_opts(store_opts, group='store')
    conf.register_opts(api_opts, group='api')
    conf.register_opts(controller_opts, group='controller')
    conf.register_opts(dhcp_opts, group='dhcp')
    conf.register_opts(l3_opts, group='l3')
    for group, opts in _ML2_GROUPS:
        conf.register_opts(opts, group=group)


def load(argv=None, conf=None):
    """Parse ``argv`` (which may carry --config-file) into a new or given ConfigOpts."""
    conf = conf or cfg.ConfigOpts()
    register_opts(conf)
    conf(args=argv or [], project='dragonflow', default_config_files=[])
    return conf


def list_opts():
    """For oslo-config-generator: every group with its options."""
    return [('store', store_opts), ('api', api_opts), ('controller', controller_opts),
            ('dhcp', dhcp_opts), ('l3', l3_opts), *_ML2_GROUPS]


def sample() -> str:
    """etc/dragonflow.ini.sample: every option with its help, in oslo-config-generator's format.

    oslo-config-generator finds options through package entry points; this formats
    ``list_opts()`` with its formatter directly. Regenerate with
    ``.venv/bin/python -m dragonflow.conf > etc/dragonflow.ini.sample``.
    """
    from oslo_config import generator
    options = cfg.ConfigOpts()
    generator.register_cli_opts(options)
    options(['--wrap-width', '79', '--namespace', 'dragonflow'])
    out = io.StringIO()
    formatter = generator._OptFormatter(options, output_file=out)
    for group, opts in list_opts():
        formatter.write('\n\n' if out.tell() else '')
        generator._output_opts(formatter, group, {'object': None,
                                                  'namespaces': [('dragonflow', opts)]})
    return out.getvalue()


if __name__ == '__main__':
    print(sample(), end='')
