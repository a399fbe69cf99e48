"""Networks: a pipeline key and a segment each; deleting one takes its subnets along.

The segment (provider:network_type, physical_network, segmentation_id) is what the wire
carries: a VNI or GRE key for tunnel networks, a VLAN id, or nothing for flat networks. An
admin names it (a provider network) or it is allocated from the [ml2] tenant types' ranges, as
Neutron's ML2 plugin does (see segments).
"""
import functools
import random

from dragonflow.api import definitions, errors, segments
from dragonflow.api import txn as txns
from dragonflow.api.handlers.base import Handler
from dragonflow.api.handlers.security_groups import ensure_default
from dragonflow.model import Network, Port, Subnet
from dragonflow.model.objects import DEVICE_OWNER_ROUTER_GATEWAY

PROVIDER = ('provider:network_type', 'provider:physical_network', 'provider:segmentation_id')
# The vif types a port may have while its network's segment changes (ML2's list for a
# mechanism driver that does not update segments of bound ports).
UNBOUND_VIF_TYPES = ('unbound', 'binding_failed')


class NetworkHandler(Handler):
    rdef = definitions.NETWORK
    model = Network

    @functools.cached_property
    def types(self) -> segments.TypeManager:
        return segments.TypeManager(self.conf)

    def create(self, txn, keys, ctx, body):
        ensure_default(txn, keys, body['project_id'])  # as Neutron does on network create
        network_id = txns.new_id()
        requested = self.types.provider_segment(body)
        if requested is None:
            segment = self.types.allocate_tenant(txn, network_id, random.Random())
        else:
            segment = self.types.reserve(txn, network_id, requested, random.Random())
        mtu = self._checked_mtu(body.get('mtu'), segment.network_type)
        network = self.build({**body, **segment.fields()}, id=network_id,
                             key=keys.next('network'), mtu=mtu, status='ACTIVE')
        txn.create(network)
        return network

    def _checked_mtu(self, mtu, network_type) -> int:
        """ML2's _get_network_mtu: the type's MTU, or a smaller one asked for."""
        limit = self.types.max_mtu(network_type)
        if mtu and mtu > limit:
            raise errors.InvalidInput(error_message=f'Requested MTU is too big, maximum is '
                                                    f'{limit}')
        return mtu or limit

    def update(self, txn, keys, ctx, network, changes):
        changes = dict(changes)
        if any(name in changes for name in PROVIDER):
            changes.update(self._segment_update(txn, network, changes))
        if 'mtu' in changes:
            changes['mtu'] = self._checked_mtu(changes['mtu'], network.network_type)
        if network.external and changes.get('router:external') is False and any(
                p.network_id == network.id and p.device_owner == DEVICE_OWNER_ROUTER_GATEWAY
                for p in txn.all(Port)):
            raise errors.ExternalNetworkInUse(net_id=network.id)
        return self.apply(txn, network, changes)

    def _segment_update(self, txn, network, changes) -> dict:
        """ML2's _update_provider_network_attributes: only a VLAN network's id may change,
        and only while no port on it is bound."""
        for name in PROVIDER[:2]:
            if changes.get(name) is not None and changes[name] != getattr(
                    network, name.split(':')[1]):
                raise errors.InvalidInput(error_message=(
                    'Plugin does not support updating the following provider network '
                    f'attributes: {", ".join(PROVIDER[:2])}'))
        seg_id = changes.get('provider:segmentation_id')
        if not seg_id or seg_id == network.segmentation_id:
            return segments.of_network(network).fields() if network.network_type else {
                name: None for name in PROVIDER}
        if any(p.network_id == network.id and p.binding_host_id for p in txn.all(Port)):
            raise errors.InvalidInput(error_message=(
                'Provider network attribute provider:segmentation_id cannot be updated if any '
                'port in the network has not the following binding:vif_type: '
                f'{", ".join(UNBOUND_VIF_TYPES)}'))
        if network.network_type != 'vlan':
            raise errors.InvalidInput(error_message='Only VLAN type networks can be updated.')
        new = segments.Segment('vlan', network.physical_network, seg_id)
        self.types.validate(new)
        self.types.reserve(txn, network.id, new, random.Random())
        self.types.release(txn, network)
        return new.fields()

    def fence(self, store, id):
        return txns.fenced(store, Network, id)

    def delete(self, txn, ctx, network):
        """Neutron deletes the subnets along, unless a port still uses the network (a
        router's gateway or a floating IP's port counts)."""
        if any(p.network_id == network.id for p in txn.all(Port)):
            raise errors.NetworkInUse(net_id=network.id)
        for subnet in subnets_of(txn, network.id):
            txn.delete(subnet)
        self.types.release(txn, network)
        txn.delete(network)

    def visible_to(self, ctx, network, reader):
        return ctx.owns(network.project_id) or network.shared or network.external

    def full(self, network, reader):
        doc = super().full(network, reader)
        doc.update(subnets=[s.id for s in subnets_of(reader, network.id)],
                   availability_zone_hints=[], availability_zones=[],
                   ipv4_address_scope=None, ipv6_address_scope=None, l2_adjacency=True)
        return doc


def subnets_of(reader, network_id: str) -> list[Subnet]:
    """The network's subnets, oldest first (the order Neutron allocates addresses in)."""
    subnets = [s for s in reader.all(Subnet) if s.network_id == network_id]
    return sorted(subnets, key=lambda s: (s.created_at, s.id))
