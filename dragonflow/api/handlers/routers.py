"""Routers, their interfaces and extra routes.

An interface is a Neutron port (device_owner network:router_interface, device_id = router
id) plus an entry {port_id, subnet_id} in Router.interfaces, which is what the controllers
route by. Both change in one commit, with the router written at the revision read, so two
concurrent interface changes on a router cannot both pass the duplicate/overlap checks.

The external gateway is likewise a port (network:router_gateway, no project, as Neutron
makes it) holding the router's addresses on an external network, recorded in
Router.gateway_port_id, with Router.external_gateway_info as the API shows it; port and
router change in one commit. A floating IP association writes the router it goes through,
so a gateway or interface removal and an association cannot both pass each other's checks.

Setting a gateway on a network also lists the chassis that may hold it
(Router.gateway_chassis, least-loaded first, see l3_scheduler); the list is cleared with the
gateway and kept while the gateway stays on its network (reordering it would move traffic).
Clearing or moving the gateway, turning enable_snat off or deleting the router removes the
router's network:chassis_snat ports (distributed SNAT) in the same commit; l3_scheduler makes
and removes the others.
"""
import ipaddress

from dragonflow.api import definitions, errors, ipam, l3_scheduler
from dragonflow.api import txn as txns
from dragonflow.api.attributes import UNSET
from dragonflow.api.handlers.base import Handler
from dragonflow.api.handlers.networks import NetworkHandler, subnets_of
from dragonflow.api.handlers.ports import PortHandler, create_service_port, release
from dragonflow.api.handlers.subnets import SubnetHandler
from dragonflow.api.validators import GATEWAY_KEYS, uuid
from dragonflow.model import (
    Chassis,
    ExternalGateway,
    FloatingIP,
    Network,
    Port,
    Router,
    RouterInterface,
    Subnet,
)
from dragonflow.model.objects import (
    DEVICE_OWNER_CHASSIS_SNAT,
    DEVICE_OWNER_ROUTER_GATEWAY,
    DEVICE_OWNER_ROUTER_INTERFACE,
)


def _bad(msg: str) -> errors.BadRequest:
    return errors.BadRequest(resource='router', msg=msg)


class RouterHandler(Handler):
    rdef = definitions.ROUTER
    model = Router

    def create(self, txn, keys, ctx, body):
        info = body.get('external_gateway_info')
        _check_gateway_policy(ctx, 'create', info)
        router = self.build(body, id=txns.new_id(), key=keys.next('router'), status='ACTIVE',
                            external_gateway_info=None)
        if info:
            router = router.model_copy(update=self._gateway(txn, keys, ctx, router, info))
        txn.create(router)
        return router

    def update(self, txn, keys, ctx, router, changes):
        if 'external_gateway_info' in changes:
            _check_gateway_policy(ctx, 'update', changes['external_gateway_info'])
            gateway = self._gateway(txn, keys, ctx, router, changes['external_gateway_info'])
            changes = {**changes, **{k: v.model_dump() if k == 'external_gateway_info' and v
                                     else v for k, v in gateway.items()}}
            router = router.model_copy(update=gateway)
        if 'routes' in changes:
            changes = {**changes, 'routes': self._check_routes(txn, router, changes['routes'])}
        return self.apply(txn, router, changes)

    def delete(self, txn, ctx, router):
        if router.interfaces:
            raise errors.RouterInUse(router_id=router.id)
        self._remove_gateway_port(txn, router)
        _remove_snat_ports(txn, router)
        txn.delete(router)

    # External gateway (router, ext-gw-mode)

    def _gateway(self, txn, keys, ctx, router, info) -> dict:
        """Neutron's _update_router_gw_info: the router fields for the gateway ``info``
        asks for, with its port created, changed or deleted in this Txn."""
        current = txn.get(Port, router.gateway_port_id) if router.gateway_port_id else None
        if not info:
            self._remove_gateway_port(txn, router)
            _remove_snat_ports(txn, router)
            cleared = {'external_gateway_info': None, 'gateway_port_id': None,
                       'gateway_chassis': []}
            if router.routes:
                self._check_routes(txn, router.model_copy(update=cleared),
                                   [r.model_dump() for r in router.routes])
            return cleared
        network = NetworkHandler(self.conf).get(txn, ctx, info['network_id'])
        if not network.external:
            raise _bad(f'Network {network.id} is not an external network')
        requested = info.get('external_fixed_ips') or []
        for fixed in requested:
            for subnet in subnets_of(txn, network.id):
                if subnet.gateway_ip and fixed.get('ip_address') == subnet.gateway_ip:
                    raise _bad(f"External IP {fixed['ip_address']} is the same as the "
                               'gateway IP')
        enable_snat = info.get('enable_snat', True)
        if current is not None and current.network_id == network.id:
            port, chassis = current, router.gateway_chassis
            if requested and _addresses_change(current, requested):
                port = self._readdress(txn, current, requested)
            if not enable_snat:
                _remove_snat_ports(txn, router)
        else:
            self._remove_gateway_port(txn, router)
            _remove_snat_ports(txn, router)
            _check_new_subnets(txn, router.model_copy(update={'gateway_port_id': None}),
                               subnets_of(txn, network.id))
            port = create_service_port(txn, keys, self.conf, network,
                                       DEVICE_OWNER_ROUTER_GATEWAY, router.id,
                                       requested or UNSET)
            chassis = _gateway_candidates(txn, router, network)
        gateway = ExternalGateway(network_id=network.id, enable_snat=enable_snat,
                                  external_fixed_ips=[f.model_dump() for f in port.fixed_ips])
        return {'external_gateway_info': gateway, 'gateway_port_id': port.id,
                'gateway_chassis': chassis}

    def _readdress(self, txn, port, requested) -> Port:
        addresses = ipam.Ipam(txn)
        request = ipam.FixedIPRequest(addresses, port.network_id,
                                      subnets_of(txn, port.network_id), port.id,
                                      port.mac_address, self.conf.api.max_fixed_ips_per_port)
        fixed_ips = request.assign(requested, port.fixed_ips)
        return PortHandler(self.conf).apply(txn, port, {
            'fixed_ips': [f.model_dump() for f in fixed_ips]})

    def _remove_gateway_port(self, txn, router) -> None:
        """Neutron's _delete_current_gw_port: refused while floating IPs use the gateway."""
        port = txn.get(Port, router.gateway_port_id) if router.gateway_port_id else None
        if port is None:
            return
        if any(f.router_id == router.id for f in txn.all(FloatingIP)):
            raise errors.RouterExternalGatewayInUseByFloatingIp(router_id=router.id,
                                                                net_id=port.network_id)
        release(txn, port)

    def full(self, router, reader):
        doc = super().full(router, reader)
        info = router.external_gateway_info
        doc['external_gateway_info'] = None if info is None else {
            'network_id': info.network_id,
            'external_fixed_ips': [f.model_dump() for f in info.external_fixed_ips],
            'enable_snat': info.enable_snat}
        return doc

    # Extra routes (extraroute, extraroute-atomic)

    def _check_routes(self, txn, router, routes: list[dict]) -> list[dict]:
        if len(routes) > self.conf.api.max_routes:
            raise errors.RoutesExhausted(router_id=router.id, quota=self.conf.api.max_routes)
        connected = [(ipaddress.ip_network(s.cidr), ip)
                     for s, ip in _interfaces(txn, router, with_gateway=True)]
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
        _check_no_floating_ips(txn, router, gone)
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


def _check_no_floating_ips(txn, router, subnet_ids: set[str]) -> None:
    """Neutron's _check_router_interface_not_in_use: a floating IP through the router to a
    port of the subnet needs the interface."""
    for subnet_id in subnet_ids:
        subnet = txn.get(Subnet, subnet_id)
        if subnet is None:
            continue
        cidr = ipaddress.ip_network(subnet.cidr)
        for fip in txn.all(FloatingIP):
            if fip.router_id != router.id or not fip.fixed_ip_address or \
                    ipaddress.ip_address(fip.fixed_ip_address) not in cidr:
                continue
            port = txn.get(Port, fip.port_id) if fip.port_id else None
            if port is not None and any(f.subnet_id == subnet_id for f in port.fixed_ips):
                raise errors.RouterInterfaceInUseByFloatingIP(router_id=router.id,
                                                              subnet_id=subnet_id)


def _gateway_candidates(txn, router, network: Network) -> list[str]:
    """Every chassis that may hold the router's gateway on ``network``, least-loaded first
    (the other routers' lists make the load)."""
    load = l3_scheduler.Load(r for r in txn.all(Router) if r.id != router.id)
    return l3_scheduler.candidates(txn.all(Chassis), l3_scheduler.physnet_of(network), load,
                                   set(txn.store.heartbeats()))


def _remove_snat_ports(txn, router) -> None:
    """The router's distributed SNAT addresses go with its gateway (or its SNAT)."""
    for port in txn.all(Port):
        if port.device_owner == DEVICE_OWNER_CHASSIS_SNAT and port.device_id == router.id:
            release(txn, port)


def _admin(ctx):
    """The interface port belongs to the router's project, whoever adds it."""
    return type(ctx)(project_id=ctx.project_id, is_admin=True)


def _subnet(txn, ctx, subnet_id) -> Subnet:
    return SubnetHandler(None).get(txn, ctx, subnet_id)


def _interfaces(txn, router, with_gateway: bool = False) -> list[tuple[Subnet, str]]:
    """(subnet, router address on it) of every interface (and of the gateway)."""
    result = []
    for interface in router.interfaces:
        subnet, port = txn.get(Subnet, interface.subnet_id), txn.get(Port, interface.port_id)
        if subnet and port:
            result += [(subnet, f.ip_address) for f in port.fixed_ips
                       if f.subnet_id == subnet.id]
    gateway = txn.get(Port, router.gateway_port_id) if router.gateway_port_id else None
    if with_gateway and gateway is not None:
        result += [(s, f.ip_address) for f in gateway.fixed_ips
                   if (s := txn.get(Subnet, f.subnet_id)) is not None]
    return result


def _check_new_subnets(txn, router, new: list[Subnet]) -> None:
    """Neutron's duplicate and overlap checks of a router's subnets (every subnet of the
    gateway's network counts)."""
    attached = [txn.get(Subnet, i.subnet_id) for i in router.interfaces]
    gateway = txn.get(Port, router.gateway_port_id) if router.gateway_port_id else None
    if gateway is not None:
        attached += subnets_of(txn, gateway.network_id)
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


def _check_gateway_policy(ctx, verb: str, info) -> None:
    """Neutron's default policy: only admins choose the gateway's addresses or SNAT."""
    if ctx.is_admin or not isinstance(info, dict):
        return
    if 'enable_snat' in info or 'external_fixed_ips' in info:
        action = f'{verb}_router'
        subs = ' and '.join(f'rule:{action}:external_gateway_info:{key}'
                            for key in GATEWAY_KEYS if key in info)
        raise errors.PolicyNotAuthorized(rule=(
            f'(rule:{action} and (rule:{action}:external_gateway_info and ({subs})))'))


def _addresses_change(port: Port, requested: list[dict]) -> bool:
    """Neutron's _check_for_external_ip_change."""
    subnets = {f.subnet_id for f in port.fixed_ips}
    if {f['subnet_id'] for f in requested if f.get('subnet_id')} != subnets:
        return True
    addresses = {f.ip_address for f in port.fixed_ips}
    return {f['ip_address'] for f in requested if f.get('ip_address')} != addresses
