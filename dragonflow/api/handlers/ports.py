"""Ports: addresses from IPAM, a MAC, a data-plane key; status is the controller's to set.

Port security as Neutron's ML2 plugin has it: a port takes port_security_enabled from its
network unless given; with port security on and no security_groups given it gets its
project's default group (network:* ports, e.g. router interfaces, get none); with port
security off it may have neither groups nor allowed address pairs.
"""
from dragonflow.api import definitions, errors, ipam
from dragonflow.api import txn as txns
from dragonflow.api.attributes import UNSET
from dragonflow.api.handlers import security_groups
from dragonflow.api.handlers.base import Handler, now
from dragonflow.api.handlers.networks import NetworkHandler, subnets_of
from dragonflow.api.validators import normalize_mac
from dragonflow.model import FloatingIP, Network, Port, Router
from dragonflow.model.objects import (
    DEVICE_OWNER_CHASSIS_SNAT,
    DEVICE_OWNER_FLOATINGIP,
    DEVICE_OWNER_ROUTER_GATEWAY,
    DEVICE_OWNER_ROUTER_INTERFACE,
)

# Ports a router holds for itself besides its interfaces (its gateway, its distributed SNAT
# addresses): changed through the router (or df-api's scheduler), never through the port API.
ROUTER_SERVICE_OWNERS = (DEVICE_OWNER_ROUTER_GATEWAY, DEVICE_OWNER_CHASSIS_SNAT)

VIF_DETAILS = {'port_filter': True, 'connectivity': 'l2', 'bridge_name': 'br-int',
               'datapath_type': 'system', 'ovs_hybrid_plug': False}


class PortHandler(Handler):
    rdef = definitions.PORT
    model = Port

    def create(self, txn, keys, ctx, body):
        network = NetworkHandler(self.conf).get(txn, ctx, body['network_id'])
        _check_create_policy(ctx, network, body)
        _check_router_device(txn, ctx, body.get('device_owner', ''), body.get('device_id', ''),
                             body['project_id'])
        port_id = txns.new_id()
        port_security = body.get('port_security_enabled', network.port_security_enabled)
        groups = self._groups_on_create(txn, keys, ctx, body, port_security)
        txn.require(network)
        txns.require_unfenced(txn, Network, network.id)
        addresses = ipam.Ipam(txn)
        mac = addresses.reserve_mac(network.id, body.get('mac_address'), port_id,
                                    self.conf.api.base_mac)
        fixed_ips = self._fixed_ips(addresses, network.id, port_id, mac).assign(
            body.get('fixed_ips', UNSET), [])
        port = self.build(body, id=port_id, key=keys.next('port'), mac_address=mac,
                          fixed_ips=[f.model_dump() for f in fixed_ips], status='DOWN',
                          port_security_enabled=port_security, security_groups=groups,
                          allowed_address_pairs=self._address_pairs(
                              body.get('allowed_address_pairs', []), mac))
        txn.create(port)
        return port

    def _groups_on_create(self, txn, keys, ctx, body, port_security: bool) -> list[str]:
        """ML2's _portsec_ext_port_create_processing and the security group mixin's
        _ensure_default_security_group_on_port / _get_security_groups_on_port."""
        default = security_groups.ensure_default(txn, keys, body['project_id'])
        requested = body.get('security_groups', UNSET)
        if requested is None:  # null on create: not given
            requested = UNSET
        if body.get('allowed_address_pairs') and not port_security:
            raise errors.AddressPairAndPortSecurityRequired()
        trusted = _trusted(body.get('device_owner', ''))
        if not port_security:
            if requested not in (UNSET, []):
                raise errors.PortSecurityAndIPRequiredForSecurityGroups()
            return []
        if trusted:
            return []
        if requested is UNSET:
            security_groups.use_group(txn, default)
            return [default.id]
        return security_groups.port_groups(txn, ctx, body['project_id'], requested)

    def _address_pairs(self, pairs: list[dict], mac: str) -> list[dict]:
        """Neutron stores the port's MAC in a pair that names none; a pair is unique."""
        if len(pairs) > self.conf.api.max_allowed_address_pair:
            raise errors.AllowedAddressPairExhausted(quota=self.conf.api.max_allowed_address_pair)
        result = []
        for pair in pairs:
            entry = {'ip_address': pair['ip_address'],
                     'mac_address': normalize_mac(pair.get('mac_address', mac))}
            if entry in result:
                raise errors.DuplicateAddressPairInRequest(**entry)
            result.append(entry)
        return result

    def _fixed_ips(self, addresses, network_id, port_id, mac) -> ipam.FixedIPRequest:
        subnets = subnets_of(addresses.txn, network_id)
        return ipam.FixedIPRequest(addresses, network_id, subnets, port_id, mac,
                                   self.conf.api.max_fixed_ips_per_port)

    def update(self, txn, keys, ctx, port, changes):
        changes = dict(changes)
        security_groups.ensure_default(txn, keys, port.project_id)
        self._check_security_update(txn, ctx, port, changes)
        addresses = ipam.Ipam(txn)
        mac = changes.get('mac_address', port.mac_address)
        if mac != port.mac_address:
            self._check_unbound(port, mac)
            addresses.release_mac(port.network_id, port.mac_address)
            addresses.reserve_mac(port.network_id, mac, port.id, self.conf.api.base_mac)
        if any(key in changes and changes[key] != getattr(port, key)
               for key in ('fixed_ips', 'device_id', 'device_owner')):
            self._check_not_router_interface(txn, port)
        if changes.get('binding:host_id', port.binding_host_id) != port.binding_host_id and \
                port.device_owner == DEVICE_OWNER_CHASSIS_SNAT:
            # Its chassis is what the port is for (its id is derived from it).
            self._check_not_router_interface(txn, port, 'fixed_ips, device_id, device_owner '
                                                        'and binding:host_id')
        owner = changes.get('device_owner', port.device_owner)
        device = changes.get('device_id', port.device_id)
        if (owner, device) != (port.device_owner, port.device_id):
            _check_router_device(txn, ctx, owner, device, port.project_id)
        if 'fixed_ips' in changes:
            _check_fip_address_kept(txn, port, changes['fixed_ips'])
            fixed_ips = self._fixed_ips(addresses, port.network_id, port.id, mac).assign(
                changes['fixed_ips'], port.fixed_ips)
            changes['fixed_ips'] = [f.model_dump() for f in fixed_ips]
        if 'allowed_address_pairs' in changes:
            changes['allowed_address_pairs'] = self._address_pairs(
                changes['allowed_address_pairs'], mac)
        return self.apply(txn, port, changes)

    @staticmethod
    def _check_security_update(txn, ctx, port, changes) -> None:
        """ML2's _portsec_ext_port_update_processing and update_security_group_on_port:
        turning port security off needs the pairs and groups gone (in the same request or
        before); new groups are checked like a new port's."""
        if not changes.get('port_security_enabled', port.port_security_enabled):
            if 'allowed_address_pairs' in changes:
                if changes['allowed_address_pairs']:
                    raise errors.AddressPairAndPortSecurityRequired()
            elif port.allowed_address_pairs:
                raise errors.AddressPairAndPortSecurityRequired()
            if 'security_groups' in changes:
                if changes['security_groups']:
                    raise errors.PortSecurityAndIPRequiredForSecurityGroups()
            elif port.security_groups:
                raise errors.PortSecurityPortHasSecurityGroup()
        if 'security_groups' in changes:
            requested = changes['security_groups'] or []
            if set(requested) == set(port.security_groups):
                del changes['security_groups']
            elif _trusted(changes.get('device_owner', port.device_owner)):
                changes['security_groups'] = []
            else:
                changes['security_groups'] = security_groups.port_groups(
                    txn, ctx, port.project_id, requested)

    @staticmethod
    def _check_not_router_interface(txn, port, kept='fixed_ips, device_id and device_owner'):
        """A router interface changes through the router, which routes by it."""
        if port.device_owner == DEVICE_OWNER_ROUTER_INTERFACE and \
                txn.get(Router, port.device_id) is not None:
            raise errors.BadRequest(resource='port', msg=(
                f'router interface port {port.id} keeps its fixed_ips, device_id and '
                'device_owner; remove the interface from the router instead'))
        if port.device_owner in ROUTER_SERVICE_OWNERS and \
                txn.get(Router, port.device_id) is not None or \
                port.device_owner == DEVICE_OWNER_FLOATINGIP and \
                txn.get(FloatingIP, port.device_id) is not None:
            raise errors.BadRequest(resource='port', msg=(
                f'{port.device_owner} port {port.id} keeps its {kept}; change the router or '
                'floating IP it serves instead'))

    @staticmethod
    def _check_unbound(port, mac):
        """Neutron refuses a new MAC for a port a host already uses."""
        if port.binding_host_id and port.status == 'ACTIVE':
            raise errors.PortBound(port_id=port.id, vif_type='ovs', old_mac=port.mac_address,
                                   new_mac=mac)

    def fence(self, store, id):
        """A floating IP associated meanwhile would be left pointing at no port."""
        return txns.fenced(store, Port, id)

    def delete(self, txn, ctx, port):
        """Neutron's prevent_l3_port_deletion, then disassociate_floatingips."""
        owner = port.device_owner
        if owner in (DEVICE_OWNER_ROUTER_INTERFACE, *ROUTER_SERVICE_OWNERS) and \
                txn.get(Router, port.device_id) is not None or \
                owner == DEVICE_OWNER_FLOATINGIP and txn.get(FloatingIP, port.device_id):
            raise errors.ServicePortInUse(port_id=port.id, reason=f'has device owner {owner}')
        for fip in txn.all(FloatingIP):
            if fip.port_id == port.id:
                txn.update(fip.model_copy(update={
                    'port_id': None, 'fixed_ip_address': None, 'router_id': None,
                    'status': 'DOWN', 'updated_at': now()}))
        release(txn, port)

    def visible_to(self, ctx, port, reader):
        return ctx.owns(port.project_id)

    def full(self, port, reader):
        doc = super().full(port, reader)
        bound = bool(port.binding_host_id)
        doc.update({'binding:vif_type': 'ovs' if bound else 'unbound',
                    'binding:vif_details': dict(VIF_DETAILS) if bound else {},
                    'ip_allocation': 'immediate'})
        return doc


def create_service_port(txn, keys, conf, network: Network, owner: str, device_id: str,
                        fixed_ips=UNSET, status: str = 'DOWN', port_id: str = '',
                        subnets=None, host: str = '') -> Port:
    """A port Neutron makes for itself (a router gateway, a floating IP): no project (hidden
    from users, as Neutron leaves it unset), no security group, a MAC and addresses like any
    port's, on a network that must stay until the port goes.

    ``port_id``: a given id (created only if absent: the commit fails if it exists), else a
    new one; ``subnets``: those of the network its addresses may come from (all by default);
    ``host``: its binding:host_id."""
    txn.require(network)
    txns.require_unfenced(txn, Network, network.id)
    port_id = port_id or txns.new_id()
    addresses = ipam.Ipam(txn)
    mac = addresses.reserve_mac(network.id, None, port_id, conf.api.base_mac)
    subnets = subnets_of(txn, network.id) if subnets is None else subnets
    request = ipam.FixedIPRequest(addresses, network.id, subnets, port_id, mac,
                                  conf.api.max_fixed_ips_per_port)
    stamp = now()
    port = Port(id=port_id, key=keys.next('port'), network_id=network.id, mac_address=mac,
                fixed_ips=request.assign(fixed_ips, []), device_owner=owner,
                device_id=device_id, status=status, binding_host_id=host,
                port_security_enabled=network.port_security_enabled,
                created_at=stamp, updated_at=stamp)
    txn.create(port)
    return port


def _check_fip_address_kept(txn, port: Port, requested: list[dict]) -> None:
    """Neutron's prevent_internal_ip_change_for_fip."""
    fip = next((f for f in txn.all(FloatingIP) if f.port_id == port.id
                and f.fixed_ip_address), None)
    if fip is None or any(f.get('ip_address') == fip.fixed_ip_address for f in requested):
        return
    raise errors.BadRequest(resource='port', msg=(
        f'Cannot update the fixed_ips of the port {port.id}, because its original fixed_ip '
        'has been associated to a floating ip'))


def release(txn, port: Port) -> None:
    """Delete the port and free its addresses and MAC, in the same commit."""
    addresses = ipam.Ipam(txn)
    for fixed in port.fixed_ips:
        addresses.release_ip(fixed)
    addresses.release_mac(port.network_id, port.mac_address)
    txn.delete(port)


def _check_create_policy(ctx, network: Network, body: dict) -> None:
    """Neutron's default create_port rules: a port goes on a network the caller owns or one
    shared with all (an external network is seen by all, not theirs to fill with ports), and
    only the network's owner gives one of Neutron's own device owners (network:*)."""
    if ctx.is_admin or network.project_id == ctx.project_id:
        return
    if not network.shared:
        raise errors.PolicyNotAuthorized(action='create_port')
    if _trusted(body.get('device_owner', '')):
        raise errors.PolicyNotAuthorized(
            rule='(rule:create_port and rule:create_port:device_owner)')


def _check_router_device(txn, ctx, device_owner: str, device_id: str, project_id: str) -> None:
    """Neutron's _enforce_device_owner_not_router_intf_or_device_id: a non-admin's router
    interface port may not name another project's router as its device."""
    if device_owner != DEVICE_OWNER_ROUTER_INTERFACE or ctx.is_admin or not device_id:
        return
    router = txn.get(Router, device_id)
    if router is not None and router.project_id != project_id:
        raise errors.DeviceIDNotOwnedByTenant(device_id=device_id)


def _trusted(device_owner: str) -> bool:
    """Neutron applies no security groups to its own ports (network:*)."""
    return device_owner.startswith('network:')
