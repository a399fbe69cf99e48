"""The L3 service plugin ``df-l3``: Neutron's routers and floating IPs, agentless, mirrored into
the NB store as the Router and FloatingIP objects df-api writes.

Neutron's DB-only mixins do the work (l3_db with ext-gw-mode, extraroute, fip-port-details):
no L3 agent, no RPC. Each call that changes a router or a floating IP is followed, once
Neutron's transaction is over, by a sync of that object: read it back from Neutron (the router
with its interface ports and its gateway port) and write it through the mirror. The ports
themselves (interfaces, gateway, floating IP ports) reach the store through the ML2 driver
like any port. A router's gateway_chassis is scheduled as df-api does (mirror.schedule_gateway,
on api/l3_scheduler.py), kept while the gateway stays on its network.
"""
import logging

from neutron.db import extraroute_db, l3_fip_port_details, l3_gwmode_db
from neutron.db.models import l3 as l3_models
from neutron.quota import resource_registry
from neutron_lib import constants as n_const
from neutron_lib.callbacks import events, registry, resources
from neutron_lib.db import api as db_api
from neutron_lib.exceptions import l3 as l3_exc
from neutron_lib.plugins import constants as plugin_constants
from neutron_lib.services import base as service_base
from oslo_config import cfg

from dragonflow import store as nb
from dragonflow.model import FloatingIP, Router
from dragonflow.neutron import config, mirror

LOG = logging.getLogger(__name__)

# What the DB-only mixins implement.
ALIASES = ['router', 'ext-gw-mode', 'extraroute', 'extraroute-atomic', 'fip-port-details']


class DfL3RouterPlugin(service_base.ServicePluginBase,
                       extraroute_db.ExtraRoute_dbonly_mixin,
                       l3_gwmode_db.L3_NAT_dbonly_mixin,
                       l3_fip_port_details.Fip_port_details_db_mixin):
    """Agentless routers and floating IPs, mirrored (see the module docstring)."""

    _supported_extension_aliases = ALIASES

    @resource_registry.tracked_resources(router=l3_models.Router,
                                         floatingip=l3_models.FloatingIP)
    def __init__(self):
        super().__init__()
        config.register()
        self.store = nb.connect(cfg.CONF.df.store_url, timeout=cfg.CONF.df.store_timeout)
        self.mirror = mirror.NbMirror(self.store)
        registry.subscribe(self._port_deleted, resources.PORT, events.AFTER_DELETE)

    @property
    def supported_extension_aliases(self):
        return list(self._supported_extension_aliases)

    def get_workers(self):
        """In neutron-periodic-workers: the mixins' own (the janitor) and the gateway chassis
        scheduler (gateways.py)."""
        from dragonflow.neutron import gateways
        return list(super().get_workers()) + [gateways.GatewayWorker()]

    def get_plugin_type(self):
        return plugin_constants.L3

    def get_plugin_description(self):
        return 'Dragonflow L3 routers and floating IPs (agentless, mirrored to the NB store)'

    # Routers

    def create_router(self, context, router):
        result = super().create_router(context, router)
        self.sync_router(context, result['id'])
        return result

    def update_router(self, context, id, router):
        result = super().update_router(context, id, router)
        if not db_api.is_session_active(context.session):  # add_extraroutes: after its txn
            self.sync_router(context, id)
        return result

    def add_extraroutes(self, context, router_id, body=None):
        result = super().add_extraroutes(context, router_id, body)
        self.sync_router(context, router_id)
        return result

    def remove_extraroutes(self, context, router_id, body=None):
        result = super().remove_extraroutes(context, router_id, body)
        self.sync_router(context, router_id)
        return result

    def delete_router(self, context, id):
        super().delete_router(context, id)
        self._forget(Router.table, id)

    def add_router_interface(self, context, router_id, interface_info=None):
        result = super().add_router_interface(context, router_id, interface_info)
        self.sync_router(context, router_id)
        return result

    def remove_router_interface(self, context, router_id, interface_info):
        result = super().remove_router_interface(context, router_id, interface_info)
        self.sync_router(context, router_id)
        return result

    @mirror.left_to_repair
    def _forget(self, table: str, id: str) -> None:
        self.mirror.delete(table, id)

    @mirror.left_to_repair
    def sync_router(self, context, router_id: str) -> None:
        """Write the router as Neutron has it now (or delete it if Neutron has none)."""
        admin = context.elevated()
        try:
            router = self.get_router(admin, router_id)
        except l3_exc.RouterNotFound:
            self.mirror.delete(Router.table, router_id)
            return
        ports = self._core_plugin.get_ports(admin, filters={
            'device_id': [router_id], 'device_owner': [n_const.DEVICE_OWNER_ROUTER_INTF]})
        self.mirror.upsert(Router, router, adjust=mirror.schedule_gateway(self.store),
                           interface_ports=ports)

    # Floating IPs

    def create_floatingip(self, context, floatingip,
                          initial_status=n_const.FLOATINGIP_STATUS_DOWN):
        # DOWN until the chassis reports the NAT flows in (the DB mixin's default is ACTIVE).
        result = super().create_floatingip(context, floatingip, initial_status)
        self.sync_floatingip(context, result['id'])
        return result

    def update_floatingip(self, context, id, floatingip):
        before = self.get_floatingip(context.elevated(), id)
        result = super().update_floatingip(context, id, floatingip)
        if before.get('port_id') != result.get('port_id') and \
                result.get('status') != n_const.FLOATINGIP_STATUS_DOWN:
            # As df-api: DOWN on every (dis)association until the new chassis reports.
            self.update_floatingip_status(context.elevated(), id,
                                          n_const.FLOATINGIP_STATUS_DOWN)
            result['status'] = n_const.FLOATINGIP_STATUS_DOWN
        self.sync_floatingip(context, id)
        return result

    def update_floatingip_status(self, context, floatingip_id, status):
        result = super().update_floatingip_status(context, floatingip_id, status)
        if not db_api.is_session_active(context.session):
            self.sync_floatingip(context, floatingip_id)
        return result

    def delete_floatingip(self, context, id):
        super().delete_floatingip(context, id)
        self._forget(FloatingIP.table, id)

    def disassociate_floatingips(self, context, port_id):
        """ML2 calls this inside a port delete's transaction: the floating IPs it frees are
        synced once the port is gone (_port_deleted, same request context)."""
        fips = self.get_floatingips(context.elevated(), filters={'port_id': [port_id]})
        result = super().disassociate_floatingips(context, port_id)
        if not db_api.is_session_active(context.session):
            for fip in fips:
                self.sync_floatingip(context, fip['id'])
        else:
            self._pending_fips(context).update(f['id'] for f in fips)
        return result

    @staticmethod
    def _pending_fips(context) -> set:
        pending = getattr(context, '_df_pending_fips', None)
        if pending is None:
            pending = set()
            context._df_pending_fips = pending
        return pending

    def _port_deleted(self, resource, event, trigger, payload):
        """Floating IPs disassociated inside the port delete's transaction, over now."""
        pending = self._pending_fips(payload.context)
        for fip_id in sorted(pending):
            self.sync_floatingip(payload.context, fip_id)
        pending.clear()

    @mirror.left_to_repair
    def sync_floatingip(self, context, fip_id: str) -> None:
        admin = context.elevated()
        try:
            fip = self._get_floatingip(admin, fip_id)
        except l3_exc.FloatingIPNotFound:
            self.mirror.delete(FloatingIP.table, fip_id)
            return
        self.mirror.upsert(FloatingIP, self._make_floatingip_dict(fip),
                           floating_port_id=fip.floating_port_id)
