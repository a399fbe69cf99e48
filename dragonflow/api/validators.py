"""Value converters and validators for the attribute maps, after neutron-lib's.

A converter turns a request value into its canonical form or raises InvalidInput (Neutron
reports converter failures that way). A validator returns None when the value is good and
otherwise the reason, which the caller wraps as "Invalid input for <attr>. Reason: <reason>."
Messages are neutron-lib's, since clients show them to users and some match on them.
"""
import ipaddress
import json
import math
import re
from typing import Any, Callable, Optional

from dragonflow.api import errors
from dragonflow.model.objects import IP_PROTOCOLS

Validator = Callable[[Any], Optional[str]]

UUID_RE = re.compile(r'^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-'
                     r'[0-9a-fA-F]{12}$')
MAC_RE = re.compile(r'^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$')
NAME_MAX_LEN = 255
DESCRIPTION_MAX_LEN = 255
DEVICE_MAX_LEN = 255
TAG_MAX_LEN = 255
MAX_TAGS = 50   # per resource, as Neutron's tagging extension allows
BINDING_PROFILE_MAX_LEN = 4095   # Neutron's column: the profile's JSON text at most this long


# Converters

def to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ('true', '1', 'yes', 'on', 't'):
        return True
    if text in ('false', '0', 'no', 'off', 'f'):
        return False
    raise errors.InvalidInput(error_message=f"'{value}' cannot be converted to boolean")


def to_int(value: Any) -> int:
    """neutron-lib's convert_to_int (a float is truncated), refusing what int() cannot take:
    Infinity and 1e400 (OverflowError), NaN, lists..."""
    if isinstance(value, bool):
        raise errors.InvalidInput(error_message=f"'{value}' is not an integer")
    try:
        return int(value)
    except (ValueError, TypeError, OverflowError):
        raise errors.InvalidInput(error_message=f"'{value}' is not an integer") from None


def to_int_or_none(value: Any) -> Optional[int]:
    return None if value is None else to_int(value)


def to_list(value: Any) -> list:
    """None becomes []; a scalar becomes a one-element list (query strings repeat keys)."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def none_to_empty_list(value: Any) -> Any:
    return [] if value is None else value


def none_to_empty_dict(value: Any) -> Any:
    return {} if value is None else value


def to_uuid_list_or_none(value: Any) -> Optional[list]:
    """A port's security_groups (Neutron's convert_to_uuid_list_or_none)."""
    if value is None:
        return None
    for item in value if isinstance(value, list) else [value]:
        if not (isinstance(item, str) and UUID_RE.match(item)) or item is value:
            raise errors.InvalidInput(error_message=f"'{item}' is not an integer or uuid")
    return value


def to_protocol(value: Any) -> Optional[str]:
    """A rule's protocol: None (any), a known name (lower case) or a number 1-255 as a string.

    'any' and 0 mean every protocol, as the API reference says; they are kept as None."""
    if value is None:
        return None
    if not isinstance(value, bool) and isinstance(value, (int, str)):
        try:
            number = int(value)
        except ValueError:
            if value.lower() == 'any':
                return None
            if value.lower() in IP_PROTOCOLS:
                return value.lower()
        else:
            if 0 <= number <= 255:
                return str(number) if number else None
    raise errors.SecurityGroupRuleInvalidProtocol(protocol=value,
                                                  values=[None] + list(IP_PROTOCOLS))


def to_port_value(value: Any) -> Optional[int]:
    """A rule's port_range_min/max (0-65535; ICMP type and code are checked later)."""
    if value is None:
        return None
    try:
        number = int(value) if not isinstance(value, (bool, float)) else None
    except (ValueError, TypeError):
        number = None
    if number is None or not 0 <= number <= 65535:
        raise errors.SecurityGroupInvalidPortValue(port=value)
    return number


ETHERTYPES = ['IPv4', 'IPv6']


def to_ethertype(value: Any) -> str:
    if isinstance(value, str):
        for ethertype in ETHERTYPES:
            if ethertype.lower() == value.lower():
                return ethertype
    raise errors.SecurityGroupRuleInvalidEtherType(ethertype=value, values=ETHERTYPES)


def to_ip_prefix(value: Any) -> Optional[str]:
    """A rule's remote_ip_prefix with its length: '10.0.0.5' -> '10.0.0.5/32'. Host bits are
    kept, as Neutron (netaddr) keeps them."""
    if not value:
        return None
    if not isinstance(value, str):
        raise errors.InvalidCIDR(input=value)
    try:
        return ipaddress.ip_interface(value).with_prefixlen
    except (ValueError, TypeError):
        raise errors.InvalidCIDR(input=value) from None


def normalize_mac(value: Any) -> Any:
    """Lower case, colon separated, as Neutron stores MACs."""
    if isinstance(value, str) and MAC_RE.match(value):
        return value.lower().replace('-', ':')
    return value


# Validators

def json_value(value: Any) -> Optional[str]:
    """Whether ``value`` can be stored and sent back as JSON: every string (dict keys too) is
    Unicode text, with no lone surrogate (JSON's "\ud800" escape parses to one, and UTF-8
    cannot encode it), and every number is finite (1e400 parses to infinity). Run on every
    attribute, whatever its own validator, so no value that breaks a later response is kept."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode('utf-8')
            except UnicodeEncodeError:
                shown = item.encode('utf-8', 'backslashreplace').decode('utf-8')
                return f"'{shown}' is not valid Unicode text"
        elif isinstance(item, float) and not math.isfinite(item):
            return f"'{item}' is not a finite number"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def string(max_len: int) -> Validator:
    def validate(value):
        if not isinstance(value, str):
            return f"'{value}' is not a valid string"
        reason = json_value(value)
        if reason:
            return reason
        if len(value) > max_len:
            return f"'{value}' exceeds maximum length of {max_len}"
        return None
    return validate


def string_or_none(max_len: int) -> Validator:
    return nullable(string(max_len))


def nullable(validator: Validator) -> Validator:
    return lambda value: None if value is None else validator(value)


def boolean(value) -> Optional[str]:
    return None if isinstance(value, bool) else f"'{value}' is not a valid boolean value"


def uuid(value) -> Optional[str]:
    if isinstance(value, str) and UUID_RE.match(value):
        return None
    return f"'{value}' is not a valid UUID"


def values(allowed: list) -> Validator:
    def validate(value):
        return None if value in allowed else f"'{value}' is not in {allowed}"
    return validate


def int_range(low: int, high: int) -> Validator:
    def validate(value):
        if not isinstance(value, int):
            return f"'{value}' is not an integer"
        if value < low:
            return f"'{value}' is too small - must be at least '{low}'"
        if value > high:
            return f"'{value}' is too large - must be no larger than '{high}'"
        return None
    return validate


def ip_address(value) -> Optional[str]:
    """An address written as text (ipaddress also takes numbers: 167772161 is 10.0.0.1)."""
    if not isinstance(value, str):
        return f"'{value}' is not a valid IP address"
    try:
        ipaddress.ip_address(value)
    except (ValueError, TypeError):
        return f"'{value}' is not a valid IP address"
    return None


def subnet_cidr(value) -> Optional[str]:
    if not isinstance(value, str):   # ipaddress takes numbers and booleans as networks too
        return f"'{value}' is not a valid IP subnet"
    try:
        network = ipaddress.ip_network(value, strict=False)
    except (ValueError, TypeError):
        return f"'{value}' is not a valid IP subnet"
    if '/' not in str(value):
        return f"'{value}' is not a valid IP subnet"
    if str(network) != str(value):
        return f"'{value}' isn't a recognized IP subnet cidr, '{network}' is recommended"
    return None


def mac_address(value) -> Optional[str]:
    if isinstance(value, str) and MAC_RE.match(value):
        mac = int(value.replace(':', '').replace('-', ''), 16)
        if mac != 0 and not (mac >> 40) & 1:  # a unicast MAC: the multicast bit is clear
            return None
    return f"'{value}' is not a valid MAC address"


def list_of(item: Validator, unique: bool = False) -> Validator:
    """neutron-lib's _validate_list_of_items: duplicates are named before items are checked."""
    def validate(value):
        if not isinstance(value, list):
            return f"'{value}' is not a list"
        if unique:
            seen, dups = set(), {}
            for element in value:
                key = repr(element)   # elements may be unhashable (dicts, lists)
                if key in seen:
                    dups.setdefault(key, element)
                seen.add(key)
            if dups:
                return f"Duplicate items in the list: '{', '.join(map(str, dups.values()))}'"
        for element in value:
            reason = item(element)
            if reason:
                return reason
        return None
    return validate


def dict_or_none(value) -> Optional[str]:
    return None if value is None or isinstance(value, dict) else f"'{value}' is not a dictionary"


def binding_profile(value) -> Optional[str]:
    """A dict whose JSON fits Neutron's column (ML2's check, raised as InvalidInput)."""
    reason = dict_or_none(value)
    if reason:
        return reason
    if len(json.dumps(value)) > BINDING_PROFILE_MAX_LEN:
        raise errors.InvalidInput(error_message='binding:profile value too large')
    return None


def _dict_with(value, allowed: set, required: set, what: str) -> Optional[str]:
    """Common shape check of the list-of-dicts attributes."""
    if not isinstance(value, dict) or not required <= set(value) or set(value) - allowed:
        return f"Invalid data format for {what}: '{value}'"
    return None


def fixed_ips(value) -> Optional[str]:
    if not isinstance(value, list):
        return f"Invalid data format for fixed IP: '{value}'"
    seen = set()
    for fixed in value:
        reason = _dict_with(fixed, {'ip_address', 'subnet_id'}, set(), 'fixed IP')
        if reason:
            return reason
        if 'ip_address' in fixed:
            if fixed['ip_address'] in seen:
                return f"Duplicate IP address '{fixed['ip_address']}'"
            seen.add(fixed['ip_address'])
            reason = ip_address(fixed['ip_address'])
            if reason:
                return reason
        if 'subnet_id' in fixed:
            reason = uuid(fixed['subnet_id'])
            if reason:
                return reason
    return None


def ip_pools(value) -> Optional[str]:
    if not isinstance(value, list):
        return f"Invalid data format for IP pool: '{value}'"
    for pool in value:
        reason = _dict_with(pool, {'start', 'end'}, {'start', 'end'}, 'IP pool')
        if reason:
            return reason
        for key in ('start', 'end'):
            reason = ip_address(pool[key])
            if reason:
                return reason
    return None


def hostroutes(value) -> Optional[str]:
    if not isinstance(value, list):
        return f"Invalid data format for hostroute: '{value}'"
    seen = []
    for route in value:
        reason = _dict_with(route, {'destination', 'nexthop'}, {'destination', 'nexthop'},
                            'hostroute')
        if reason:
            return reason
        reason = subnet_cidr(route['destination']) or ip_address(route['nexthop'])
        if reason:
            return reason
        if route in seen:
            return f"Duplicate hostroute '{route}'"
        seen.append(route)
    return None


def nameservers(value) -> Optional[str]:
    if not isinstance(value, list):
        return f"Invalid data format for nameserver: '{value}'"
    for server in value:
        if ip_address(server):
            return f"'{server}' is not a valid nameserver"
    if len(set(value)) != len(value):
        return f"Duplicate nameserver '{value}'"
    return None


def any_mac_address(value) -> Optional[str]:
    """neutron-lib's validate_mac_address: any MAC but all zeros and broadcast."""
    if isinstance(value, str) and MAC_RE.match(value):
        mac = int(value.replace(':', '').replace('-', ''), 16)
        if mac not in (0, (1 << 48) - 1):
            return None
    return f"'{value}' is not a valid MAC address"


def address_pair_prefix(value) -> Optional[str]:
    """An address pair's ip_address: an address, or a prefix (IPv4 host bits allowed, as
    netaddr allows them)."""
    if not isinstance(value, str) or '/' not in value:
        return ip_address(value)
    try:
        interface = ipaddress.ip_interface(value)
    except ValueError:
        return f"'{value}' is not a valid IP subnet"
    if interface.version == 4 and interface.with_prefixlen != value:
        return (f"'{value}' isn't a recognized IP subnet cidr, '{interface.network}' is "
                'recommended')
    return None


def address_pairs(value) -> Optional[str]:
    """neutron-lib's _validate_allowed_address_pairs: most failures raise their own error."""
    if not isinstance(value, list):
        raise errors.HTTPBadRequest('Allowed address pairs must be a list.')
    seen = set()
    for pair in value:
        if not isinstance(pair, dict):
            return f"'{pair}' is not a dictionary"
        if 'mac_address' in pair:
            reason = any_mac_address(pair['mac_address'])
            if reason:
                raise errors.HTTPBadRequest(reason)
        if 'ip_address' not in pair:
            raise errors.AllowedAddressPairsMissingIP()
        key = repr((pair.get('mac_address'), pair['ip_address']))
        if key in seen:
            raise errors.DuplicateAddressPairInRequest(mac_address=pair.get('mac_address'),
                                                       ip_address=pair['ip_address'])
        seen.add(key)
        unknown = sorted(set(pair) - {'ip_address', 'mac_address'})
        if unknown:
            raise errors.HTTPBadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
        reason = address_pair_prefix(pair['ip_address'])
        if reason:
            raise errors.HTTPBadRequest(reason)
    return None


def name_not_default(max_len: int) -> Validator:
    """A security group's name: any string but 'default' (the project's own group)."""
    def validate(value):
        reason = string(max_len)(value)
        if reason:
            return reason
        if value.lower() == 'default':
            raise errors.SecurityGroupDefaultAlreadyExists()
        return None
    return validate


GATEWAY_KEYS = ('network_id', 'external_fixed_ips', 'enable_snat')


def _gateway_keys(value: dict) -> Optional[str]:
    """neutron-lib's validate_dict key checks for a router's external_gateway_info."""
    if 'network_id' not in value:
        return ("Validation of dictionary's keys failed. Expected keys: {'network_id'} "
                f'Provided keys: {set(value)}')
    unexpected = [key for key in value if key not in GATEWAY_KEYS]
    if unexpected:
        return f"Unexpected keys supplied: {', '.join(map(str, unexpected))}"
    return None


def to_external_gateway_info(value: Any) -> Any:
    """enable_snat converted to a boolean (ext-gw-mode), once the keys are right."""
    if isinstance(value, dict) and value and not _gateway_keys(value) and \
            'enable_snat' in value:
        value = {**value, 'enable_snat': to_boolean(value['enable_snat'])}
    return value


def external_gateway_info(value) -> Optional[str]:
    """dict_or_nodata: none, {} or {network_id, external_fixed_ips?, enable_snat?}."""
    if not value:
        return None
    if not isinstance(value, dict):
        return f"'{value}' is not a dictionary"
    return (_gateway_keys(value) or uuid(value['network_id'])
            or ('external_fixed_ips' in value and fixed_ips(value['external_fixed_ips']))
            or ('enable_snat' in value and boolean(value['enable_snat'])) or None)


tags = list_of(string(TAG_MAX_LEN), unique=True)   # list_of_unique_strings
uuid_list = list_of(uuid)
