"""Subnets: CIDR, gateway and allocation pools, checked the way Neutron checks them."""
import ipaddress

from dragonflow.api import definitions, errors, ipam
from dragonflow.api import txn as txns
from dragonflow.api.attributes import UNSET
from dragonflow.api.handlers.base import Handler
from dragonflow.api.handlers.networks import NetworkHandler, subnets_of
from dragonflow.model import IPAllocation, Network, Port, Subnet
from dragonflow.model.objects import DEVICE_OWNER_ROUTER_INTERFACE


class SubnetHandler(Handler):
    rdef = definitions.SUBNET
    model = Subnet

    def create(self, txn, keys, ctx, body):
        network = self._network(txn, ctx, body['network_id'])
        cidr = body['cidr']
        _check_version(body['ip_version'], cidr, 'cidr')
        _check_ipv6_modes(body)
        gateway = self._gateway(body, cidr)
        pools = body.get('allocation_pools')
        pools = ipam.default_pools(cidr, gateway) if pools in (None, UNSET) else \
            ipam.check_pools(cidr, pools, gateway)
        _check_no_overlap(txn, network.id, cidr)
        subnet = self.build(body, id=txns.new_id(), gateway_ip=gateway,
                            allocation_pools=[p.model_dump() for p in pools])
        txn.require(network)
        txns.require_unfenced(txn, Network, network.id)
        txn.create(subnet)
        return subnet

    def _network(self, txn, ctx, network_id) -> Network:
        network = NetworkHandler(self.conf).get(txn, ctx, network_id)
        if not ctx.owns(network.project_id):
            raise errors.HTTPForbidden(f'Tenant {ctx.project_id} not allowed to create subnet '
                                       'on this network')
        return network

    @staticmethod
    def _gateway(body, cidr):
        gateway = body.get('gateway_ip', UNSET)
        if gateway is UNSET:
            return ipam.default_gateway(cidr)
        if gateway is not None:
            _check_gateway(cidr, gateway)
            gateway = ipam.canonical_ip(gateway)
        return gateway

    def update(self, txn, keys, ctx, subnet, changes):
        changes = dict(changes)
        gateway = subnet.gateway_ip
        if 'gateway_ip' in changes and changes['gateway_ip'] != subnet.gateway_ip:
            self._check_gateway_free(txn, subnet)
            gateway = changes['gateway_ip']
            if gateway is not None:
                _check_gateway(subnet.cidr, gateway)
                gateway = changes['gateway_ip'] = ipam.canonical_ip(gateway)
        # Pools are checked against the (new) gateway whenever either changes.
        pools = changes.get('allocation_pools', [p.model_dump() for p in subnet.allocation_pools])
        pools = ipam.default_pools(subnet.cidr, gateway) if pools is None else \
            ipam.check_pools(subnet.cidr, pools, gateway)
        changes['allocation_pools'] = [p.model_dump() for p in pools]
        return self.apply(txn, subnet, changes)

    def _check_gateway_free(self, txn, subnet):
        """A router interface holding the current gateway address pins it (GatewayIpInUse)."""
        if subnet.gateway_ip is None:
            return
        holder = txn.get(IPAllocation, IPAllocation.make_id(subnet.id, subnet.gateway_ip))
        port = txn.get(Port, holder.port_id) if holder else None
        if port is not None and port.device_owner == DEVICE_OWNER_ROUTER_INTERFACE:
            raise errors.GatewayIpInUse(ip_address=subnet.gateway_ip, port_id=port.id)

    def fence(self, store, id):
        return txns.fenced(store, Subnet, id)

    def delete(self, txn, ctx, subnet):
        if any(a.subnet_id == subnet.id for a in txn.all(IPAllocation)):
            raise errors.SubnetInUse(subnet_id=subnet.id)
        txn.delete(subnet)

    def visible_to(self, ctx, subnet, reader):
        if ctx.owns(subnet.project_id):
            return True
        network = reader.get(Network, subnet.network_id)
        return network is not None and (network.shared or network.external)

    def full(self, subnet, reader):
        doc = super().full(subnet, reader)
        doc.update(subnetpool_id=None, service_types=[], segment_id=None)
        return doc


def _check_version(ip_version: int, address: str, name: str) -> None:
    if ipaddress.ip_network(address, strict=False).version != ip_version:
        raise errors.InvalidInput(
            error_message=f"{name} '{address}' does not match the ip_version '{ip_version}'")


def _check_gateway(cidr: str, gateway: str) -> None:
    """Neutron allows a gateway outside the CIDR, but not its network or broadcast address."""
    net = ipaddress.ip_network(cidr)
    _check_version(net.version, gateway, 'gateway_ip')
    address = ipaddress.ip_address(gateway)
    if address == net.network_address or (net.version == 4 and net.prefixlen < 31 and
                                          address == net.broadcast_address):
        raise errors.InvalidInput(error_message='Gateway is not valid on subnet')


def _check_ipv6_modes(body: dict) -> None:
    """Neutron's _validate_subnet and _validate_ipv6_attributes, in their order."""
    ra_mode, address_mode = body.get('ipv6_ra_mode'), body.get('ipv6_address_mode')
    for mode in ('ipv6_ra_mode', 'ipv6_address_mode'):
        if body.get(mode) and body['ip_version'] == 4:
            raise errors.InvalidInput(
                error_message=f"{mode} set to '{body[mode]}' with ip_version 4 is invalid")
    if not (ra_mode or address_mode):
        return
    if not body.get('enable_dhcp', True):
        raise errors.InvalidInput(error_message='ipv6_ra_mode or ipv6_address_mode cannot be '
                                                'set when enable_dhcp is set to False')
    if ra_mode and address_mode and ra_mode != address_mode:
        raise errors.InvalidInput(error_message=(
            f"ipv6_ra_mode set to '{ra_mode}' with ipv6_address_mode set to '{address_mode}' "
            'is not valid. If both attributes are set, they must be the same value'))
    # An automatic address is the prefix and an EUI-64 interface id: the prefix must be a /64.
    if {ra_mode, address_mode} & set(ipam.AUTO_ADDRESS_MODES) and \
            ipaddress.ip_network(body['cidr']).prefixlen != 64:
        raise errors.InvalidInput(error_message=(
            f"Invalid CIDR {body['cidr']} for IPv6 address mode. OpenStack uses the EUI-64 "
            'address format, which requires the prefix to be /64'))


def _check_no_overlap(txn, network_id: str, cidr: str) -> None:
    new = ipaddress.ip_network(cidr)
    for other in subnets_of(txn, network_id):
        old = ipaddress.ip_network(other.cidr)
        if old.version == new.version and old.overlaps(new):
            raise errors.InvalidInput(error_message=(
                f'Requested subnet with cidr: {cidr} for network: {network_id} overlaps with '
                'another subnet'))
