"""The ML2 mechanism driver ``df``: Neutron's networks, subnets, ports and security groups into
the NB store, and port binding on the hosts that are Dragonflow chassis.

Mirroring happens in the postcommits (after Neutron's transaction; a store write never holds
a DB transaction open) and in the security group callbacks (Neutron publishes those, ML2 does
not call drivers for them). A failed create postcommit makes ML2 delete the resource; a failed
update or delete is only logged by ML2, which the repair pass ([df] repair_interval) is for.

A port is bound only on a host with a Chassis record in the store, on a segment that chassis
can carry (a tunnel type it has, or a flat/VLAN physnet of its bridge mappings): vif_type
'ovs' on br-int with the chassis' datapath type. Its status goes ACTIVE through a provisioning
block of entity PROVISIONING_ENTITY, added when the port gets a host and completed by the
status worker (status.py) when that chassis reports the port's flows in.
"""
import logging

from neutron_lib import constants as n_const
from neutron_lib.api.definitions import portbindings, provider_net
from neutron_lib.callbacks import events, registry, resources
from neutron_lib.plugins import directory
from neutron_lib.plugins.ml2 import api
from oslo_config import cfg

from dragonflow import store as nb
from dragonflow.model import (
    Chassis,
    Network,
    Port,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from dragonflow.model.objects import NOT_PLUGGED_OWNERS, PHYSICAL_NETWORK_TYPES
from dragonflow.neutron import PROVISIONING_ENTITY, config, mirror, translate

LOG = logging.getLogger(__name__)
VIF_TYPE = portbindings.VIF_TYPE_OVS
BRIDGE = 'br-int'


def vif_details(chassis: Chassis) -> dict:
    """What Nova's os-vif plugs by: an OVS port on br-int, filtered by Dragonflow's flows."""
    return {portbindings.CAP_PORT_FILTER: True, portbindings.VIF_DETAILS_CONNECTIVITY: 'l2',
            portbindings.VIF_DETAILS_BRIDGE_NAME: BRIDGE, portbindings.OVS_HYBRID_PLUG: False,
            portbindings.OVS_DATAPATH_TYPE: chassis.datapath_type}


def serves(chassis: Chassis, segment: dict) -> bool:
    """Whether the chassis can carry the segment: a tunnel of one of its types, or a flat or
    VLAN network on one of its physnets."""
    network_type = segment.get(api.NETWORK_TYPE)
    if network_type in PHYSICAL_NETWORK_TYPES:
        return segment.get(api.PHYSICAL_NETWORK) in chassis.physical_networks
    return network_type in chassis.tunnel_types


def network_dict(context) -> dict:
    """The network as Neutron shows it, with its first segment's provider fields when the
    dict lacks them (an ML2 NetworkContext has the segments apart)."""
    current = dict(context.current)
    segments = getattr(context, 'network_segments', None) or []
    if not current.get('provider:network_type') and segments:
        first = segments[0]
        current.update({'provider:network_type': first.get(api.NETWORK_TYPE),
                        'provider:physical_network': first.get(api.PHYSICAL_NETWORK),
                        'provider:segmentation_id': first.get(api.SEGMENTATION_ID)})
    return current


class DfMechanismDriver(api.MechanismDriver):
    """ML2 driver mirroring into the NB store (see the module docstring)."""

    def initialize(self):
        config.register()
        self.store = nb.connect(cfg.CONF.df.store_url, timeout=cfg.CONF.df.store_timeout)
        self.mirror = mirror.NbMirror(self.store)
        self._subscribe()

    @property
    def connectivity(self):
        # Ports with no address (l2) are bound too.
        return portbindings.CONNECTIVITY_L2

    @staticmethod
    def provider_network_attribute_updates_supported():
        # As df-api: a VLAN network's id may change, only while no port on it is bound.
        return [provider_net.SEGMENTATION_ID]

    def get_supported_vif_types(self):
        """ML2 lets a segment change while no port has any other vif type than these (and
        unbound, binding_failed): none, so a bound port keeps the segment it was bound on."""
        return []

    # Networks

    @mirror.left_to_repair
    def create_network_postcommit(self, context):
        self.mirror.upsert(Network, network_dict(context))

    @mirror.left_to_repair
    def update_network_postcommit(self, context):
        self.mirror.upsert(Network, network_dict(context))

    @mirror.left_to_repair
    def delete_network_postcommit(self, context):
        self.mirror.delete(Network.table, context.current['id'],
                           context.current.get('revision_number'))

    # Subnets

    @mirror.left_to_repair
    def create_subnet_postcommit(self, context):
        self._ensure_network(context.network)
        self.mirror.upsert(Subnet, context.current)

    @mirror.left_to_repair
    def update_subnet_postcommit(self, context):
        self.create_subnet_postcommit(context)

    @mirror.left_to_repair
    def delete_subnet_postcommit(self, context):
        self.mirror.delete(Subnet.table, context.current['id'],
                           context.current.get('revision_number'))

    # Ports

    def create_port_precommit(self, context):
        self._block_until_reported(context)

    def update_port_precommit(self, context):
        self._block_until_reported(context)

    @mirror.left_to_repair
    def create_port_postcommit(self, context):
        self._ensure_network(context.network)
        self.mirror.upsert(Port, context.current)

    @mirror.left_to_repair
    def update_port_postcommit(self, context):
        self.create_port_postcommit(context)

    @mirror.left_to_repair
    def delete_port_postcommit(self, context):
        self.mirror.delete(Port.table, context.current['id'],
                           context.current.get('revision_number'))

    def _ensure_network(self, network_context) -> None:
        """A network before what lives on it (the controllers would wait for it otherwise)."""
        if network_context is not None and not self.mirror.has(
                Network, network_context.current['id']):
            self.mirror.upsert(Network, network_dict(network_context))

    def _block_until_reported(self, context) -> None:
        """A port that gets a host stays DOWN until its chassis reports the flows in."""
        port = context.current
        if not context.host or port.get('device_owner') in NOT_PLUGGED_OWNERS:
            return
        original = context.original
        if original is not None and context.original_host == context.host and \
                original.get('status') == n_const.PORT_STATUS_ACTIVE:
            return
        from neutron.db import provisioning_blocks  # Neutron's, loaded with the plugin
        provisioning_blocks.add_provisioning_component(
            context._plugin_context, port['id'], resources.PORT, PROVISIONING_ENTITY)

    # Binding

    def bind_port(self, context):
        if context.current.get(portbindings.VNIC_TYPE,
                               portbindings.VNIC_NORMAL) != portbindings.VNIC_NORMAL:
            return
        record = self.store.get(Chassis.table, context.host)
        if record is None:
            LOG.info('port %s: host %s is no Dragonflow chassis', context.current['id'],
                     context.host)
            return
        chassis = Chassis.from_doc(record.value, record.revision)
        for segment in context.segments_to_bind:
            if serves(chassis, segment):
                context.set_binding(segment[api.ID], VIF_TYPE, vif_details(chassis))
                return
        LOG.info('port %s: chassis %s serves none of the segments %s', context.current['id'],
                 context.host, context.segments_to_bind)

    # Security groups (registry callbacks, payload style)

    def _subscribe(self) -> None:
        for event in (events.AFTER_CREATE, events.AFTER_UPDATE):
            registry.subscribe(self._security_group_written, resources.SECURITY_GROUP, event)
        registry.subscribe(self._security_group_deleted, resources.SECURITY_GROUP,
                           events.AFTER_DELETE)
        registry.subscribe(self._rule_created, resources.SECURITY_GROUP_RULE,
                           events.AFTER_CREATE)
        registry.subscribe(self._rule_deleted, resources.SECURITY_GROUP_RULE,
                           events.AFTER_DELETE)

    @mirror.left_to_repair
    def _security_group_written(self, resource, event, trigger, payload):
        group = payload.latest_state
        self.mirror.upsert(SecurityGroup, group)
        for rule in group.get('security_group_rules') or []:  # Neutron's defaults on create
            self._mirror_rule(rule)

    @mirror.left_to_repair
    def _security_group_deleted(self, resource, event, trigger, payload):
        group_id = payload.resource_id
        rule_ids = set((payload.metadata or {}).get('security_group_rule_ids') or [])
        rule_ids |= set(self.mirror.ids_where(SecurityGroupRule,
                                              lambda r: r.security_group_id == group_id))
        self.mirror.delete_many(SecurityGroupRule.table, sorted(rule_ids))
        state = payload.latest_state
        self.mirror.delete(SecurityGroup.table, group_id,
                           state.get('revision_number') if state else None)

    @mirror.left_to_repair
    def _rule_created(self, resource, event, trigger, payload):
        rule = payload.latest_state
        self._refresh_group(payload.context, rule['security_group_id'])
        self._mirror_rule(rule)

    def _mirror_rule(self, rule: dict) -> None:
        try:
            self.mirror.upsert(SecurityGroupRule, rule)
        except translate.Unsupported as e:
            LOG.warning('%s', e)  # a missing allow rule denies: never more than Neutron

    @mirror.left_to_repair
    def _rule_deleted(self, resource, event, trigger, payload):
        self.mirror.delete(SecurityGroupRule.table, payload.resource_id)
        group_id = (payload.metadata or {}).get('security_group_id')
        if group_id:
            self._refresh_group(payload.context, group_id)

    @mirror.left_to_repair
    def _refresh_group(self, context, group_id: str) -> None:
        """The group anew after a change of its rules (df-api writes the group with every
        rule change; Neutron bumps its revision)."""
        try:
            group = directory.get_plugin().get_security_group(context.elevated(), group_id)
        except Exception:  # noqa: BLE001 - gone meanwhile: its delete callback follows
            LOG.debug('security group %s not readable', group_id, exc_info=True)
            return
        group.pop('security_group_rules', None)
        self.mirror.upsert(SecurityGroup, group)

    # Workers

    def get_workers(self):
        """Run in neutron-periodic-workers: the repair pass (repair.py) and the status worker
        (status.py) that turns chassis reports into Neutron port status."""
        workers = []
        if cfg.CONF.df.repair_interval > 0:
            from dragonflow.neutron import repair
            workers.append(repair.RepairWorker())
        try:
            from dragonflow.neutron import status
        except ImportError:
            return workers
        return workers + [status.StatusWorker()]
