"""Routers, their interfaces and extra routes.

An interface is a Neutron port (device_owner network:router_interface, device_id = router
id) plus an entry {port_id, subnet_id} in Router.interfaces, which is what the controllers
route by. Both change in one commit, with the router written at the revision read, so two
concurrent interface changes on a router cannot both pass the duplicate/overlap checks.
"""
import ipaddress

from dragonflow.api import definitions, errors, ipam
from dragonflow.api import txn as txns
from dragonflow.api.handlers.base import Handler
from dragonflow.api.handlers.ports import PortHandler, release
from dragonflow.api.handlers.subnets import SubnetHandler
from dragonflow.api.validators import uuid
from dragonflow.model import Port, Router, RouterInterface, Subnet
from dragonflow.model.objects import DEVICE_OWNER_ROUTER_INTERFACE


def _bad(msg: str) -> errors.BadRequest:
    return errors.BadRequest(resource='router', msg=msg)


class RouterHandler(Handler):
    rdef = definitions.ROUTER
    model = Router

    def create(self, txn, keys, ctx, body):
        _check_gateway_info(body.get('external_gateway_info'))
        router = self.build(body, id=txns.new_id(), key=keys.next('router'), status='ACTIVE',
                            external_gateway_info=None)
        txn.create(router)
        return router

    def update(self, txn, keys, ctx, router, changes):
        if 'external_gateway_info' in changes:
            _check_gateway_info(changes['external_gateway_info'])
            changes = {**changes, 'external_gateway_info': None}
        if 'routes' in changes:
            changes = {**changes, 'routes': self._check_routes(txn, router, changes['routes'])}
        return self.apply(txn, router, changes)

    def delete(self, txn, ctx, router):
        if router.interfaces:
            raise errors.RouterInUse(router_id=router.id)
        txn.delete(router)

    # Extra routes (extraroute, extraroute-atomic)

    def _check_routes(self, txn, router, routes: list[dict]) -> list[dict]:
        if len(routes) > self.conf.api.max_routes:
            raise errors.RoutesExhausted(router_id=router.id, quota=self.conf.api.max_routes)
        connected = [(ipaddress.ip_network(s.cidr), ip) for s, ip in _interfaces(txn, router)]
        for route in routes:
            nexthop = ipaddress.ip_address(route['nexthop'])
            if not any(nexthop in cidr for cidr, _ in connected):
                raise errors.InvalidRoutes(routes=routes,
                                           reason='the nexthop is not connected with router')
            if any(nexthop == ipaddress.ip_address(ip) for _, ip in connected):
                raise errors.InvalidRoutes(routes=routes, reason='the nexthop is used by router')
        return routes

    def change_routes(self, txn, ctx, router_id, routes: list[dict], add: bool) -> Router:
        router = self.get(txn, ctx, router_id, 'update_router')
        current = [r.model_dump() for r in router.routes]
        if add:
            new = current + [r for i, r in enumerate(routes)
                             if r not in current and r not in routes[:i]]
        else:
            new = [r for r in current if r not in routes]
        return self.apply(txn, router, {'routes': self._check_routes(txn, router, new)})

    # Interfaces

    def add_interface(self, txn, keys, ctx, router_id, info: dict) -> dict:
        by_port, _ = _interface_info(info, for_removal=False)
        router = self.get(txn, ctx, router_id, 'add_router_interface')
        if by_port:
            port, subnets = self._attach_port(txn, ctx, router, info['port_id'])
        else:
            port, subnets = self._create_port(txn, keys, ctx, router, info['subnet_id'])
        interfaces = router.interfaces + [RouterInterface(port_id=port.id, subnet_id=s.id)
                                          for s in subnets]
        self.apply(txn, router, {'interfaces': [i.model_dump() for i in interfaces]})
        return _interface_result(router, port, subnets[-1], subnets)

    def _create_port(self, txn, keys, ctx, router, subnet_id):
        """By subnet: a new port holding the subnet's gateway address."""
        subnet = _subnet(txn, ctx, subnet_id)
        if not subnet.gateway_ip:
            raise _bad('Subnet for router interface must have a gateway IP')
        if not ctx.owns(subnet.project_id):
            raise _bad(f'Cannot add interface to router because subnet {subnet_id} is not '
                       'owned by project making the request')
        _check_new_subnets(txn, router, [subnet])
        body = {'network_id': subnet.network_id, 'project_id': router.project_id,
                'fixed_ips': [{'subnet_id': subnet.id, 'ip_address': subnet.gateway_ip}],
                'device_owner': DEVICE_OWNER_ROUTER_INTERFACE, 'device_id': router.id,
                'admin_state_up': True, 'name': ''}
        port = PortHandler(self.conf).create(txn, keys, _admin(ctx), body)
        return port, [subnet]

    def _attach_port(self, txn, ctx, router, port_id):
        """By port: the caller's port becomes the interface, on all its subnets."""
        port = PortHandler(self.conf).get(txn, ctx, port_id)
        if port.device_id:
            raise errors.PortInUse(port_id=port.id, net_id=port.network_id,
                                   device_id=port.device_id)
        if not port.fixed_ips:
            raise _bad('Router port must have at least one fixed IP')
        subnets = [txn.get(Subnet, f.subnet_id) for f in port.fixed_ips]
        _check_new_subnets(txn, router, subnets)
        if sum(1 for s in subnets if s.ip_version == 4) > 1:
            raise _bad('Cannot have multiple IPv4 subnets on router port')
        port = PortHandler(self.conf).apply(txn, port, {
            'device_id': router.id, 'device_owner': DEVICE_OWNER_ROUTER_INTERFACE})
        return port, subnets

    def remove_interface(self, txn, keys, ctx, router_id, info: dict) -> dict:
        by_port, _ = _interface_info(info, for_removal=True)
        router = self.get(txn, ctx, router_id, 'remove_router_interface')
        if by_port:
            port, subnets = self._detach_port(txn, router, info['port_id'], info.get('subnet_id'))
            gone = {s.id for s in subnets}
            kept = [i for i in router.interfaces if i.port_id != port.id]
        else:
            port, subnet = self._detach_subnet(txn, ctx, router, info['subnet_id'])
            subnets, gone = [subnet], {subnet.id}
            kept = [i for i in router.interfaces if i.subnet_id != subnet.id]
        self._check_not_routed(txn, router, gone)
        self.apply(txn, router, {'interfaces': [i.model_dump() for i in kept]})
        return _interface_result(router, port, subnets[0], subnets)

    def _detach_port(self, txn, router, port_id, subnet_id):
        port = txn.get(Port, port_id)
        if port is None or not any(i.port_id == port_id for i in router.interfaces):
            raise errors.RouterInterfaceNotFound(router_id=router.id, port_id=port_id)
        subnet_ids = [f.subnet_id for f in port.fixed_ips]
        if subnet_id and subnet_id not in subnet_ids:
            raise errors.SubnetMismatchForPort(port_id=port_id, subnet_id=subnet_id)
        release(txn, port)
        return port, [s for s in (txn.get(Subnet, i) for i in subnet_ids) if s is not None]

    def _detach_subnet(self, txn, ctx, router, subnet_id):
        subnet = _subnet(txn, ctx, subnet_id)
        interface = next((i for i in router.interfaces if i.subnet_id == subnet_id), None)
        port = txn.get(Port, interface.port_id) if interface else None
        if port is None:
            raise errors.RouterInterfaceNotFoundForSubnet(router_id=router.id,
                                                          subnet_id=subnet_id)
        others = [f for f in port.fixed_ips if f.subnet_id != subnet_id]
        if others:  # a port on several subnets only loses this subnet's address
            ipam.Ipam(txn).release_ip(next(f for f in port.fixed_ips
                                           if f.subnet_id == subnet_id))
            PortHandler(self.conf).apply(txn, port, {
                'fixed_ips': [f.model_dump() for f in others]})
        else:
            release(txn, port)
        return port, subnet

    def _check_not_routed(self, txn, router, subnet_ids: set[str]) -> None:
        """An extra route's nexthop must stay reachable (RouterInterfaceInUseByRoute)."""
        for subnet_id in subnet_ids:
            subnet = txn.get(Subnet, subnet_id)
            cidr = ipaddress.ip_network(subnet.cidr) if subnet else None
            if cidr and any(ipaddress.ip_address(r.nexthop) in cidr for r in router.routes):
                raise errors.RouterInterfaceInUseByRoute(router_id=router.id,
                                                         subnet_id=subnet_id)


def _admin(ctx):
    """The interface port belongs to the router's project, whoever adds it."""
    return type(ctx)(project_id=ctx.project_id, is_admin=True)


def _subnet(txn, ctx, subnet_id) -> Subnet:
    return SubnetHandler(None).get(txn, ctx, subnet_id)


def _interfaces(txn, router) -> list[tuple[Subnet, str]]:
    """(subnet, router address on it) of every interface."""
    result = []
    for interface in router.interfaces:
        subnet, port = txn.get(Subnet, interface.subnet_id), txn.get(Port, interface.port_id)
        if subnet and port:
            result += [(subnet, f.ip_address) for f in port.fixed_ips
                       if f.subnet_id == subnet.id]
    return result


def _check_new_subnets(txn, router, new: list[Subnet]) -> None:
    """Neutron's duplicate and overlap checks of a router's subnets."""
    attached = [txn.get(Subnet, i.subnet_id) for i in router.interfaces]
    attached = [s for s in attached if s is not None]
    for subnet in new:
        if any(s.id == subnet.id for s in attached):
            raise _bad(f'Router already has a port on subnet {subnet.id}')
    for old in attached:
        for subnet in new:
            a, b = ipaddress.ip_network(old.cidr), ipaddress.ip_network(subnet.cidr)
            if a.version == b.version and a.overlaps(b):
                raise _bad(f'Cidr {subnet.cidr} of subnet {subnet.id} overlaps with cidr '
                           f'{old.cidr} of subnet {old.id}')


def _interface_info(info, for_removal: bool) -> tuple[bool, bool]:
    if not isinstance(info, dict):
        info = {}
    by_port, by_subnet = 'port_id' in info, 'subnet_id' in info
    if not (by_port or by_subnet):
        raise _bad('Either subnet_id or port_id must be specified')
    for key in ('port_id', 'subnet_id'):
        if key in info and uuid(info[key]):
            raise _bad(uuid(info[key]))
    if by_port and by_subnet and not for_removal:
        raise _bad('Cannot specify both subnet-id and port-id')
    return by_port, by_subnet


def _interface_result(router, port, subnet, subnets) -> dict:
    return {'id': router.id, 'tenant_id': port.project_id, 'project_id': port.project_id,
            'port_id': port.id, 'network_id': port.network_id, 'subnet_id': subnet.id,
            'subnet_ids': [s.id for s in subnets]}


def _check_gateway_info(info) -> None:
    """External gateways (SNAT, floating IPs) are not implemented yet: refuse, don't ignore."""
    if info:
        raise _bad('external gateways are not supported by Dragonflow yet')
