"""Networks: a data-plane key (the tunnel VNI) each; deleting one takes its subnets along."""
from dragonflow.api import definitions, errors
from dragonflow.api import txn as txns
from dragonflow.api.handlers.base import Handler
from dragonflow.api.handlers.security_groups import ensure_default
from dragonflow.model import Network, Port, Subnet


class NetworkHandler(Handler):
    rdef = definitions.NETWORK
    model = Network

    def create(self, txn, keys, ctx, body):
        ensure_default(txn, keys, body['project_id'])  # as Neutron does on network create
        mtu = body.get('mtu', self.conf.api.default_mtu)
        network = self.build(body, id=txns.new_id(), key=keys.next('network'), mtu=mtu,
                             status='ACTIVE')
        txn.create(network)
        return network

    def fence(self, store, id):
        return txns.fenced(store, Network, id)

    def delete(self, txn, ctx, network):
        """Neutron deletes the subnets along, unless a port still uses the network."""
        if any(p.network_id == network.id for p in txn.all(Port)):
            raise errors.NetworkInUse(net_id=network.id)
        for subnet in subnets_of(txn, network.id):
            txn.delete(subnet)
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
