"""Neutron's API errors, raised by df-api and rendered exactly as Neutron renders them.

Every error is answered as ``{"NeutronError": {"type", "message", "detail"}}`` where ``type``
is the name of Neutron's exception class: clients (openstacksdk, gophercloud, Tempest) match on
it and on the message text, so both are kept verbatim from neutron-lib.
"""


class NeutronError(Exception):
    """Base: ``message`` is formatted with the constructor's keyword arguments."""
    status = 500
    message = 'An unknown exception occurred.'
    type_name = ''

    def __init__(self, **kwargs):
        self.msg = self.message % kwargs if kwargs else self.message
        super().__init__(self.msg)

    @property
    def type(self) -> str:
        return self.type_name or type(self).__name__

    def body(self) -> dict:
        return {'NeutronError': {'type': self.type, 'message': self.msg, 'detail': ''}}


# Generic webob errors: Neutron names these after the webob class.

class HTTPBadRequest(NeutronError):
    """Attribute validation failures (Neutron raises webob's HTTPBadRequest for these)."""
    status = 400

    def __init__(self, msg: str):
        self.message = msg
        super().__init__()


class HTTPForbidden(HTTPBadRequest):
    status = 403


class HTTPNotFound(HTTPBadRequest):
    status = 404


class HTTPMethodNotAllowed(HTTPBadRequest):
    status = 405


class HTTPRequestEntityTooLarge(HTTPBadRequest):
    status = 413


class HTTPInternalServerError(NeutronError):
    status = 500
    message = 'Request Failed: internal server error while processing your request.'


class PolicyNotAuthorized(NeutronError):
    """oslo.policy's refusal; ``rule`` is the failed check as oslo.policy prints it, e.g.
    '(rule:create_network and rule:create_network:shared)'."""
    status = 403
    message = '%(rule)s is disallowed by policy'

    def __init__(self, action: str = '', rule: str = ''):
        super().__init__(rule=rule or f'rule:{action}')


class PreconditionFailed(NeutronError):
    """A revision_number If-Match constraint did not hold (revision-if-match extension)."""
    status = 412
    message = 'Constraint not met.'


class ServiceUnavailable(NeutronError):
    status = 503
    message = 'The service is unavailable.'

    def __init__(self, reason: str = ''):
        super().__init__()
        if reason:
            self.msg = f'The service is unavailable: {reason}.'


# neutron_lib.exceptions

class BadRequest(NeutronError):
    status = 400
    message = 'Bad %(resource)s request: %(msg)s.'


class InvalidInput(BadRequest):
    message = 'Invalid input for operation: %(error_message)s.'


class NotFound(NeutronError):
    status = 404


class Conflict(NeutronError):
    status = 409


class InUse(Conflict):
    message = 'The resource is in use.'


class NetworkNotFound(NotFound):
    message = 'Network %(net_id)s could not be found.'


class SubnetNotFound(NotFound):
    message = 'Subnet %(subnet_id)s could not be found.'


class PortNotFound(NotFound):
    message = 'Port %(port_id)s could not be found.'


class RouterNotFound(NotFound):
    message = 'Router %(router_id)s could not be found'


class TagNotFound(NotFound):
    message = 'Tag %(tag)s could not be found for %(resource)s %(resource_id)s.'


class ExtensionNotFound(HTTPNotFound):
    def __init__(self, alias: str):
        super().__init__(f'Extension with alias {alias} does not exist')


class NetworkInUse(InUse):
    message = ('Unable to complete operation on network %(net_id)s. '
               'There are one or more ports still in use on the network.')


class SubnetInUse(InUse):
    message = 'Unable to complete operation on subnet %(subnet_id)s: %(reason)s.'

    def __init__(self, subnet_id: str,
                 reason: str = 'One or more ports have an IP allocation from this subnet'):
        super().__init__(subnet_id=subnet_id, reason=reason)


class PortInUse(InUse):
    message = ('Unable to complete operation on port %(port_id)s for network %(net_id)s. '
               'Port already has an attached device %(device_id)s.')


class ServicePortInUse(InUse):
    message = 'Port %(port_id)s cannot be deleted directly via the port API: %(reason)s.'


class RouterInUse(InUse):
    message = 'Router %(router_id)s %(reason)s'

    def __init__(self, router_id: str, reason: str = 'still has ports'):
        super().__init__(router_id=router_id, reason=reason)


class PortBound(InUse):
    message = ('Unable to complete operation on port %(port_id)s, port is already bound, '
               'port type: %(vif_type)s, old_mac %(old_mac)s, new_mac %(new_mac)s.')


class DeviceIDNotOwnedByTenant(Conflict):
    message = ('The following device_id %(device_id)s is not owned by your project or matches '
               'another project router.')


class AddressPairAndPortSecurityRequired(Conflict):
    message = 'Port Security must be enabled in order to have allowed address pairs on a port.'


# neutron_lib.exceptions.port_security and allowedaddresspairs

class PortSecurityAndIPRequiredForSecurityGroups(InvalidInput):
    message = ('Port security must be enabled and port must have an IP address in order to '
               'use security groups.')


class PortSecurityPortHasSecurityGroup(InUse):
    message = ('Port has security group associated. Cannot disable port security or IP '
               'address until security group is removed.')


class AllowedAddressPairsMissingIP(InvalidInput):
    message = 'AllowedAddressPair must contain ip_address'


class DuplicateAddressPairInRequest(InvalidInput):
    message = ('Request contains duplicate address pair: mac_address %(mac_address)s '
               'ip_address %(ip_address)s.')


class AllowedAddressPairExhausted(BadRequest):
    message = 'The number of allowed address pair exceeds the maximum %(quota)s.'


class InvalidCIDR(BadRequest):
    message = 'Invalid CIDR %(input)s given as IP prefix.'


# neutron.extensions.securitygroup (and neutron_lib.exceptions.security_group)

class SecurityGroupNotFound(NotFound):
    message = 'Security group %(id)s does not exist'


class SecurityGroupRuleNotFound(NotFound):
    message = 'Security group rule %(id)s does not exist'


class SecurityGroupInUse(InUse):
    message = 'Security Group %(id)s %(reason)s.'

    def __init__(self, id: str, reason: str = 'in use'):
        super().__init__(id=id, reason=reason)


class SecurityGroupCannotRemoveDefault(InUse):
    message = 'Insufficient rights for removing default security group.'


class SecurityGroupCannotUpdateDefault(InUse):
    message = 'Updating default security group not allowed.'


class SecurityGroupDefaultAlreadyExists(InUse):
    message = 'Default security group already exists.'


class SecurityGroupRuleExists(InUse):
    message = 'Security group rule already exists. Rule id is %(rule_id)s.'


class DuplicateSecurityGroupRuleInPost(InUse):
    message = 'Duplicate Security Group Rule in POST.'


class SecurityGroupInvalidPortRange(InvalidInput):
    message = 'For TCP/UDP protocols, port_range_min must be <= port_range_max'


class SecurityGroupInvalidPortValue(InvalidInput):
    message = 'Invalid value for port %(port)s'


class SecurityGroupInvalidProtocolForPort(InvalidInput):
    message = ('Invalid protocol %(protocol)s for port range, only supported for '
               '%(valid_port_protocols)s protocols.')


class SecurityGroupInvalidIcmpValue(InvalidInput):
    message = 'Invalid value for ICMP %(field)s (%(attr)s) %(value)s. It must be 0 to 255.'


class SecurityGroupMissingIcmpType(InvalidInput):
    message = ('ICMP code (port-range-max) %(value)s is provided but ICMP type '
               '(port-range-min) is missing.')


class SecurityGroupProtocolRequiredWithPorts(InvalidInput):
    message = 'Must also specify protocol if port range is given.'


class SecurityGroupRuleInvalidProtocol(InvalidInput):
    message = ('Security group rule protocol %(protocol)s not supported. Only protocol values '
               '%(values)s and integer representations [0 to 255] are supported.')


class SecurityGroupRuleInvalidEtherType(InvalidInput):
    message = ("Security group rule for ethertype '%(ethertype)s' not supported. Allowed "
               'values are %(values)s.')


class SecurityGroupEthertypeConflictWithProtocol(InvalidInput):
    message = 'Invalid ethertype %(ethertype)s for protocol %(protocol)s.'


class SecurityGroupRuleParameterConflict(InvalidInput):
    message = 'Conflicting value ethertype %(ethertype)s for CIDR %(cidr)s'


class SecurityGroupRemoteGroupAndRemoteIpPrefix(InvalidInput):
    message = 'Only remote_ip_prefix or remote_group_id may be provided.'


class SecurityGroupNotSingleGroupRules(InvalidInput):
    message = 'Only allowed to update rules for one security profile at a time'


class SecurityGroupRulesNotSingleTenant(InvalidInput):
    message = 'Multiple tenant_ids in bulk security group rule create not allowed'


class MacAddressInUse(InUse):
    message = ('Unable to complete operation for network %(net_id)s. '
               'The mac address %(mac)s is in use.')


class IpAddressAlreadyAllocated(Conflict):
    # Neutron's IPAM driver's answer to a fixed IP another port holds (neutron-lib's
    # IpAddressInUse is never raised by Neutron 29).
    message = 'IP address %(ip)s already allocated in subnet %(subnet_id)s'


class IpAddressGenerationFailure(Conflict):
    message = 'No more IP addresses available on network %(net_id)s.'


class GatewayIpInUse(InUse):
    message = ('Current gateway ip %(ip_address)s already in use by port %(port_id)s. '
               'Unable to update.')


class InvalidIpForNetwork(BadRequest):
    message = ('IP address %(ip_address)s is not a valid IP '
               'for any of the subnets on the specified network.')


class InvalidIpForSubnet(BadRequest):
    message = 'IP address %(ip_address)s is not a valid IP for the specified subnet.'


class SubnetMismatchForPort(BadRequest):
    message = 'Subnet on port %(port_id)s does not match the requested subnet %(subnet_id)s.'


class InvalidAllocationPool(BadRequest):
    message = 'The allocation pool %(pool)s is not valid.'


class OutOfBoundsAllocationPool(BadRequest):
    message = 'The allocation pool %(pool)s spans beyond the subnet cidr %(subnet_cidr)s.'


class OverlappingAllocationPools(Conflict):
    message = ('Found overlapping allocation pools: %(pool_1)s %(pool_2)s for subnet '
               '%(subnet_cidr)s.')


class GatewayConflictWithAllocationPools(InUse):
    message = 'Gateway ip %(ip_address)s conflicts with allocation pool %(pool)s.'


# neutron_lib.exceptions.l3 and extraroute

class RouterInterfaceNotFound(NotFound):
    message = 'Router %(router_id)s does not have an interface with id %(port_id)s'


class RouterInterfaceNotFoundForSubnet(NotFound):
    message = 'Router %(router_id)s has no interface on subnet %(subnet_id)s'


class RouterInterfaceInUseByRoute(InUse):
    message = ('Router interface for subnet %(subnet_id)s on router %(router_id)s cannot be '
               'deleted, as it is required by one or more routes.')


class InvalidRoutes(InvalidInput):
    message = 'Invalid format for routes: %(routes)s, %(reason)s'


class RoutesExhausted(BadRequest):
    message = ('Unable to complete operation for %(router_id)s. '
               'The number of routes exceeds the maximum %(quota)s.')


def not_found(resource: str, id: str) -> NotFound:
    """The NotFound error Neutron raises for an unknown id of ``resource``."""
    return {
        'network': lambda: NetworkNotFound(net_id=id),
        'subnet': lambda: SubnetNotFound(subnet_id=id),
        'port': lambda: PortNotFound(port_id=id),
        'router': lambda: RouterNotFound(router_id=id),
        'security_group': lambda: SecurityGroupNotFound(id=id),
        'security_group_rule': lambda: SecurityGroupRuleNotFound(id=id),
        'floatingip': lambda: FloatingIPNotFound(floatingip_id=id),
    }[resource]()


# Provider networks (neutron_lib.exceptions, ML2's type drivers)

class VlanIdInUse(InUse):
    message = ('Unable to create the network. The VLAN %(vlan_id)s on physical network '
               '%(physical_network)s is in use.')


class TunnelIdInUse(InUse):
    message = 'Unable to create the network. The tunnel ID %(tunnel_id)s is in use.'


class FlatNetworkInUse(InUse):
    message = ('Unable to create the flat network. Physical network %(physical_network)s '
               'is in use.')


class ResourceExhausted(ServiceUnavailable):
    pass


class NoNetworkAvailable(ResourceExhausted):
    message = 'Unable to create the network. No project network is available for allocation.'


class ExternalNetworkInUse(InUse):
    message = ('External network %(net_id)s cannot be updated to be made non-external, since '
               'it has existing gateway ports.')


# Floating IPs and gateways (neutron_lib.exceptions.l3)

class FloatingIPNotFound(NotFound):
    message = 'Floating IP %(floatingip_id)s could not be found'


class ExternalGatewayForFloatingIPNotFound(NotFound):
    message = ('External network %(external_network_id)s is not reachable from subnet '
               '%(subnet_id)s.  Therefore, cannot associate Port %(port_id)s with a Floating '
               'IP.')


class FloatingIPPortAlreadyAssociated(InUse):
    message = ('Cannot associate floating IP %(floating_ip_address)s (%(fip_id)s) with port '
               '%(port_id)s using fixed IP %(fixed_ip)s, as that fixed IP already has a '
               'floating IP on external network %(net_id)s.')


class RouterExternalGatewayInUseByFloatingIp(InUse):
    message = ('Gateway cannot be updated for router %(router_id)s, since a gateway to '
               'external network %(net_id)s is required by one or more floating IPs.')


class RouterInterfaceInUseByFloatingIP(InUse):
    message = ('Router interface for subnet %(subnet_id)s on router %(router_id)s cannot be '
               'deleted, as it is required by one or more floating IPs.')


class ExternalIpAddressExhausted(BadRequest):
    message = 'Unable to find any IP address on external network %(net_id)s.'
