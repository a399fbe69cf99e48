"""Floating IPs (Neutron's l3_db floating IP logic, with fip-port-details).

A floating IP owns a port of its external network (network:floatingip, device_id = its id,
no project, as Neutron makes it) that holds its address (IPAM) and the MAC its chassis
answers ARP with; the two are created and deleted in one commit. Associating it with a port
finds the router joining the port's subnet to the external network, and writes that router
in the same commit (see routers), and requires the port unchanged and not being deleted, so
neither can vanish under an association. status is DOWN after every change of association:
the chassis of the port sets ACTIVE once its flows are in.
"""
import ipaddress
from typing import Optional

from dragonflow.api import definitions, errors
from dragonflow.api import txn as txns
from dragonflow.api.attributes import UNSET
from dragonflow.api.handlers.base import Handler
from dragonflow.api.handlers.networks import NetworkHandler, subnets_of
from dragonflow.api.handlers.ports import PortHandler, create_service_port, release
from dragonflow.model import FloatingIP, Network, Port, Router, Subnet
from dragonflow.model.objects import (
    DEVICE_OWNER_DHCP,
    DEVICE_OWNER_FLOATINGIP,
    DEVICE_OWNER_ROUTER_INTERFACE,
    NOT_PLUGGED_OWNERS,
)

PORT_DETAILS = ('name', 'network_id', 'mac_address', 'admin_state_up', 'status', 'device_id',
                'device_owner')


def _bad(msg: str) -> errors.BadRequest:
    return errors.BadRequest(resource='floatingip', msg=msg)


class FloatingIPHandler(Handler):
    rdef = definitions.FLOATINGIP
    model = FloatingIP

    def create(self, txn, keys, ctx, body):
        network = NetworkHandler(self.conf).get(txn, ctx, body['floating_network_id'])
        if not network.external:
            raise _bad(f'Network {network.id} is not a valid external network')
        if not any(s.ip_version == 4 for s in subnets_of(txn, network.id)):
            raise _bad(f'Network {network.id} does not contain any IPv4 subnet')
        fip_id = txns.new_id()
        port = create_service_port(txn, keys, self.conf, network, DEVICE_OWNER_FLOATINGIP,
                                   fip_id, self._requested_address(txn, network, body),
                                   status='N/A')
        address = next((f.ip_address for f in port.fixed_ips
                        if ipaddress.ip_address(f.ip_address).version == 4), None)
        if address is None:
            raise errors.ExternalIpAddressExhausted(net_id=network.id)
        fip = self.build(body, id=fip_id, floating_ip_address=address,
                         floating_port_id=port.id, port_id=None, fixed_ip_address=None,
                         router_id=None, status='DOWN')
        fip = fip.model_copy(update=self._association(txn, ctx, fip, body))
        txn.create(fip)
        return fip

    @staticmethod
    def _requested_address(txn, network: Network, body: dict):
        """The FIP port's fixed_ips: the subnet and/or address asked for, else one IPv4
        address of any subnet (Neutron's port takes every subnet's; the FIP uses the v4)."""
        fixed = {}
        if body.get('subnet_id'):
            fixed['subnet_id'] = body['subnet_id']
        if body.get('floating_ip_address'):
            fixed['ip_address'] = body['floating_ip_address']
        if fixed:
            return [fixed]
        v4 = [s for s in subnets_of(txn, network.id) if s.ip_version == 4]
        return [{'subnet_id': v4[0].id}] if len(v4) == 1 else UNSET

    def update(self, txn, keys, ctx, fip, changes):
        changes = dict(changes)
        changes.update(self._association(txn, ctx, fip, changes))
        return self.apply(txn, fip, changes)

    def _association(self, txn, ctx, fip: FloatingIP, request: dict) -> dict:
        """Neutron's _check_and_get_fip_assoc: the association fields after ``request``."""
        if request.get('fixed_ip_address') and not request.get('port_id'):
            raise _bad('fixed_ip_address cannot be specified without a port_id')
        if 'port_id' not in request and not fip.port_id:
            return {}
        port_id = request['port_id'] if 'port_id' in request else fip.port_id
        if port_id is None:
            changed = fip.port_id is not None
            return {'port_id': None, 'fixed_ip_address': None, 'router_id': None,
                    **({'status': 'DOWN'} if changed else {})}
        fixed_ip = request.get('fixed_ip_address') or (
            fip.fixed_ip_address if port_id == fip.port_id else None)
        port, subnet_id, fixed_ip = self._internal_port(txn, ctx, fip, port_id, fixed_ip)
        router = router_for(txn, port, txn.get(Subnet, subnet_id), fip.floating_network_id)
        if port_id != fip.port_id or fixed_ip != fip.fixed_ip_address:
            for other in txn.all(FloatingIP):
                if other.id != fip.id and other.port_id == port_id and \
                        other.floating_network_id == fip.floating_network_id and \
                        other.fixed_ip_address == fixed_ip:
                    raise errors.FloatingIPPortAlreadyAssociated(
                        port_id=port_id, fip_id=fip.id,
                        floating_ip_address=fip.floating_ip_address, fixed_ip=fixed_ip,
                        net_id=fip.floating_network_id)
        txn.require(port)
        txns.require_unfenced(txn, Port, port.id)
        txn.update(router)   # see routers: its gateway and interfaces stay while we commit
        changed = (port_id, fixed_ip, router.id) != (fip.port_id, fip.fixed_ip_address,
                                                     fip.router_id)
        return {'port_id': port_id, 'fixed_ip_address': fixed_ip, 'router_id': router.id,
                **({'status': 'DOWN'} if changed else {})}

    @staticmethod
    def _internal_port(txn, ctx, fip, port_id: str,
                       fixed_ip: Optional[str]) -> tuple[Port, str, str]:
        """Neutron's _internal_fip_assoc_data: the port, and its subnet and address the
        floating IP goes to."""
        port = PortHandler(None).get(txn, ctx, port_id)
        if port.project_id != fip.project_id and not ctx.is_admin:
            raise _bad(f'Cannot process floating IP association with Port {port_id}, since '
                       'that port is owned by a different project')
        # Neutron refuses DHCP ports only; the ports that stand for the cloud's own addresses
        # (routers, floating IPs) are never plugged anywhere, so nothing could NAT for them.
        if port.device_owner == DEVICE_OWNER_DHCP or port.device_owner in NOT_PLUGGED_OWNERS:
            # Neutron's text, placeholder and all (it never formats it): clients match on it.
            raise _bad('Port %(id)s is unable to be assigned a floating IP')
        if fixed_ip:
            if ipaddress.ip_address(fixed_ip).version != 4:
                raise _bad(f'Cannot process floating IP association with {fixed_ip}, since '
                           'that is not an IPv4 address')
            found = next((f for f in port.fixed_ips
                          if ipaddress.ip_address(f.ip_address) ==
                          ipaddress.ip_address(fixed_ip)), None)
            if found is None:
                raise _bad(f'Port {port.id} does not have fixed ip {fixed_ip}')
            return port, found.subnet_id, found.ip_address
        v4 = [f for f in port.fixed_ips if ipaddress.ip_address(f.ip_address).version == 4]
        if not v4:
            raise _bad(f'Cannot add floating IP to port {port.id} that has no fixed IPv4 '
                       'addresses')
        if len(v4) > 1:
            raise _bad(f'Port {port.id} has multiple fixed IPv4 addresses.  Must provide a '
                       'specific IPv4 address when assigning a floating IP')
        return port, v4[0].subnet_id, v4[0].ip_address

    def delete(self, txn, ctx, fip):
        port = txn.get(Port, fip.floating_port_id)
        if port is not None:
            release(txn, port)
        txn.delete(fip)

    def full(self, fip, reader):
        doc = super().full(fip, reader)
        port = reader.get(Port, fip.port_id) if fip.port_id else None
        doc['port_details'] = None if port is None else {
            name: getattr(port, name) for name in PORT_DETAILS}
        return doc


def router_for(txn, port: Port, subnet: Optional[Subnet], external_network_id: str) -> Router:
    """Neutron's get_router_for_floatingip: a router with a gateway on the external network
    and an interface on the port's subnet; the one whose interface is the subnet's gateway
    first."""
    first = None
    for router in txn.all(Router):
        info = router.external_gateway_info
        if subnet is None or info is None or info.network_id != external_network_id:
            continue
        for interface in router.interfaces:
            if interface.subnet_id != subnet.id:
                continue
            router_port = txn.get(Port, interface.port_id)
            if router_port is None or router_port.network_id != port.network_id or \
                    router_port.device_owner != DEVICE_OWNER_ROUTER_INTERFACE:
                continue
            if any(f.subnet_id == subnet.id and f.ip_address == subnet.gateway_ip
                   for f in router_port.fixed_ips):
                return router
            first = first or router
    if first is not None:
        return first
    raise errors.ExternalGatewayForFloatingIPNotFound(
        subnet_id=subnet.id if subnet else None, external_network_id=external_network_id,
        port_id=port.id)

