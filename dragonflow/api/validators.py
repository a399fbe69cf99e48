"""Value converters and validators for the attribute maps, after neutron-lib's.

A converter turns a request value into its canonical form or raises InvalidInput (Neutron
reports converter failures that way). A validator returns None when the value is good and
otherwise the reason, which the caller wraps as "Invalid input for <attr>. Reason: <reason>."
Messages are neutron-lib's, since clients show them to users and some match on them.
"""
import ipaddress
import re
from typing import Any, Callable, Optional

from dragonflow.api import errors

Validator = Callable[[Any], Optional[str]]

UUID_RE = re.compile(r'^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-'
                     r'[0-9a-fA-F]{12}$')
MAC_RE = re.compile(r'^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$')
NAME_MAX_LEN = 255
DESCRIPTION_MAX_LEN = 255
DEVICE_MAX_LEN = 255
TAG_MAX_LEN = 255


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
    if isinstance(value, bool):
        raise errors.InvalidInput(error_message=f"'{value}' is not an integer")
    try:
        return int(value)
    except (ValueError, TypeError):
        raise errors.InvalidInput(error_message=f"'{value}' is not an integer") from None


def to_int_or_none(value: Any) -> Optional[int]:
    return None if value is None else to_int(value)


def to_list(value: Any) -> list:
    """None becomes []; a scalar becomes a one-element list (query strings repeat keys)."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def normalize_mac(value: Any) -> Any:
    """Lower case, colon separated, as Neutron stores MACs."""
    if isinstance(value, str) and MAC_RE.match(value):
        return value.lower().replace('-', ':')
    return value


# Validators

def string(max_len: int) -> Validator:
    def validate(value):
        if not isinstance(value, str):
            return f"'{value}' is not a valid string"
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
    try:
        ipaddress.ip_address(value)
    except (ValueError, TypeError):
        return f"'{value}' is not a valid IP address"
    return None


def ip_address_or_cidr(value) -> Optional[str]:
    if ip_address(value) is None:
        return None
    try:
        ipaddress.ip_network(value, strict=True)
    except (ValueError, TypeError):
        return f"'{value}' is neither a valid IP address, nor is it a valid IP subnet"
    return None


def subnet_cidr(value) -> Optional[str]:
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
    def validate(value):
        if not isinstance(value, list):
            return f"'{value}' is not a list"
        for element in value:
            reason = item(element)
            if reason:
                return reason
        if unique and len(set(map(repr, value))) != len(value):
            return f"Duplicate items in the list: '{', '.join(map(str, value))}'"
        return None
    return validate


def dict_or_none(value) -> Optional[str]:
    return None if value is None or isinstance(value, dict) else f"'{value}' is not a dictionary"


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


def address_pairs(value) -> Optional[str]:
    if not isinstance(value, list):
        return f"Allowed address pairs must be a list, not '{value}'"
    for pair in value:
        if not isinstance(pair, dict) or 'ip_address' not in pair:
            return 'AllowedAddressPair must contain ip_address'
        unknown = sorted(set(pair) - {'ip_address', 'mac_address'})
        if unknown:
            return f"Unrecognized attribute(s) '{', '.join(unknown)}'"
        reason = ip_address_or_cidr(pair['ip_address'])
        if reason is None and pair.get('mac_address') is not None:
            reason = mac_address(pair['mac_address'])
        if reason:
            return reason
    return None


def external_gateway_info(value) -> Optional[str]:
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        return f"'{value}' is not a dictionary"
    return uuid(value.get('network_id'))


tags = list_of(string(TAG_MAX_LEN))
uuid_list = list_of(uuid)
