"""List queries: filters, fields, sorting and pagination, for any resource's attribute map.

Neutron's query language: ``?name=a&name=b`` keeps objects whose name is a or b; list
attributes match when they contain a value; ports take ``fixed_ips=ip_address=...`` and
``fixed_ips=subnet_id=...``; tags take ``tags``, ``tags-any``, ``not-tags``, ``not-tags-any``
(comma separated). Unknown filters are refused (Neutron's filter-validation extension).
Pagination is by ``limit`` and ``marker`` (the last id of the previous page), with a ``next``
link while more objects follow, in the order of ``sort_key``/``sort_dir`` (default: id).
"""
import dataclasses
from typing import Any, Optional
from urllib.parse import urlencode

from dragonflow.api import errors
from dragonflow.api.attributes import ResourceDef

PAGING = {'fields', 'limit', 'marker', 'page_reverse', 'sort_key', 'sort_dir'}
TAG_FILTERS = {'tags', 'tags-any', 'not-tags', 'not-tags-any'}
FIXED_IP_KEYS = {'ip_address', 'subnet_id'}


@dataclasses.dataclass
class Query:
    filters: dict[str, list[str]]
    fields: list[str]
    limit: Optional[int]
    marker: Optional[str]
    page_reverse: bool
    sorts: list[tuple[str, bool]]   # (attribute, ascending)
    params: list[tuple[str, str]]   # the request's own, for the links


def parse(rdef: ResourceDef, params: list[tuple[str, str]]) -> Query:
    grouped: dict[str, list[str]] = {}
    for key, value in params:
        grouped.setdefault(key, []).append(value)
    filters = {k: v for k, v in grouped.items() if k not in PAGING}
    invalid = [k for k in filters if not _filterable(rdef, k)]
    if invalid:
        raise errors.HTTPBadRequest(f"[{', '.join(invalid)}] is invalid attribute for filtering")
    return Query(filters=filters, fields=grouped.get('fields', []),
                 limit=_limit(grouped.get('limit')), marker=_last(grouped.get('marker')),
                 page_reverse=_last(grouped.get('page_reverse')) in ('true', 'True', '1'),
                 sorts=_sorts(rdef, grouped), params=params)


def _filterable(rdef: ResourceDef, key: str) -> bool:
    if key in TAG_FILTERS:
        return True
    if rdef.name == 'port' and key in FIXED_IP_KEYS:
        return True  # openstacksdk's shorthand for fixed_ips=<key>=<value>
    attr = rdef.attributes.get(key)
    return attr is not None and attr.visible


def _last(values: Optional[list[str]]) -> Optional[str]:
    return values[-1] if values else None


def _limit(values: Optional[list[str]]) -> Optional[int]:
    if not values:
        return None
    try:
        limit = int(values[-1])
    except ValueError:
        limit = -1
    if limit < 0:
        raise errors.HTTPBadRequest(
            f"Limit must be an integer 0 or greater and not '{values[-1]}'")
    return limit or None


def _sorts(rdef: ResourceDef, grouped: dict) -> list[tuple[str, bool]]:
    keys, dirs = grouped.get('sort_key', []), grouped.get('sort_dir', [])
    if dirs and len(dirs) != len(keys):
        raise errors.HTTPBadRequest('The number of sort_keys and sort_dirs must be same')
    for key in keys:
        if key not in rdef.visible():
            raise errors.HTTPBadRequest(f'{key} is an invalid attribute for sort_keys')
    for direction in dirs:
        if direction not in ('asc', 'desc'):
            raise errors.HTTPBadRequest(f"{direction} is an invalid value for sort_dirs, "
                                        "valid values are: 'asc', 'desc'")
    return [(key, (dirs[i] if dirs else 'asc') == 'asc') for i, key in enumerate(keys)]


# Filtering

def matches(rdef: ResourceDef, obj: dict, filters: dict[str, list[str]]) -> bool:
    return all(_match(rdef, obj, key, values) for key, values in filters.items())


def _match(rdef: ResourceDef, obj: dict, key: str, values: list[str]) -> bool:
    if key in TAG_FILTERS:
        return _match_tags(set(obj.get('tags') or []), key, values)
    if key == 'fixed_ips' or (rdef.name == 'port' and key in FIXED_IP_KEYS):
        pairs = [v.split('=', 1) if key == 'fixed_ips' else (key, v) for v in values]
        return _match_fixed_ips(obj.get('fixed_ips') or [], pairs)
    attr = rdef.attributes[key]
    convert = attr.convert_filter or attr.convert
    wanted = [_convert(convert, v) for v in values]
    actual = obj.get(key)
    if isinstance(actual, list):
        return any(w in actual for w in wanted)
    return actual in wanted


def _convert(convert, value: str) -> Any:
    if convert is None:
        return value
    try:
        converted = convert(value)
    except errors.NeutronError:
        return value
    return converted[0] if isinstance(converted, list) and len(converted) == 1 else converted


def _match_tags(tags: set[str], key: str, values: list[str]) -> bool:
    wanted = {t for v in values for t in v.split(',') if t}
    return {'tags': wanted <= tags, 'tags-any': bool(wanted & tags),
            'not-tags': not wanted <= tags, 'not-tags-any': not wanted & tags}[key]


def _match_fixed_ips(fixed_ips: list[dict], pairs: list) -> bool:
    """A port matches when one of its addresses satisfies every key given."""
    wanted: dict[str, set[str]] = {}
    for pair in pairs:
        if len(pair) != 2 or pair[0] not in FIXED_IP_KEYS | {'ip_address_substr'}:
            raise errors.HTTPBadRequest(f"Invalid fixed_ips filter '{'='.join(pair)}'")
        wanted.setdefault(pair[0], set()).add(pair[1])
    return any(_fixed_ip_matches(f, wanted) for f in fixed_ips)


def _fixed_ip_matches(fixed: dict, wanted: dict[str, set[str]]) -> bool:
    for key, values in wanted.items():
        if key == 'ip_address_substr':
            if not any(v in fixed['ip_address'] for v in values):
                return False
        elif fixed.get(key) not in values:
            return False
    return True


# Sorting and paging

def page(objs: list[dict], query: Query) -> tuple[list[dict], bool]:
    """The page the query asks for, and whether more objects follow it."""
    ordered = _sorted(objs, query.sorts or [('id', True)])
    if query.page_reverse:
        ordered.reverse()
    if query.marker:
        index = next((i for i, o in enumerate(ordered) if o['id'] == query.marker), None)
        ordered = ordered[index + 1:] if index is not None else ordered
    if query.limit is None:
        return ordered, False
    chosen = ordered[:query.limit]
    if query.page_reverse:
        chosen.reverse()
    return chosen, len(ordered) > query.limit


def _sorted(objs: list[dict], sorts: list[tuple[str, bool]]) -> list[dict]:
    result = list(objs)
    for key, ascending in reversed(sorts + [('id', True)]):  # stable: least significant first
        result.sort(key=lambda o, k=key: _sort_value(o.get(k)), reverse=not ascending)
    return result


def _sort_value(value) -> tuple:
    return (value is not None, str(value) if not isinstance(value, (int, float)) else value)


def links(collection: str, base_url: str, page_objs: list[dict], more: bool,
          query: Query) -> dict:
    """Neutron's ``<collection>_links``: next while more follow, previous after a marker."""
    if query.limit is None:
        return {}
    kept = [(k, v) for k, v in query.params if k not in ('marker', 'page_reverse')]
    result = []
    if more and page_objs:
        marker = page_objs[-1]['id'] if not query.page_reverse else page_objs[0]['id']
        result.append({'rel': 'next', 'href': _href(base_url, kept, marker, query.page_reverse)})
    if query.marker and page_objs:
        marker = page_objs[0]['id'] if not query.page_reverse else page_objs[-1]['id']
        result.append({'rel': 'previous',
                       'href': _href(base_url, kept, marker, not query.page_reverse)})
    return {f'{collection}_links': result} if result else {}


def _href(base_url: str, params: list, marker: str, reverse: bool) -> str:
    params = params + [('marker', marker)] + ([('page_reverse', 'True')] if reverse else [])
    return f'{base_url}?{urlencode(params)}'
