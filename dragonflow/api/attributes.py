"""Generic handling of resource attribute maps (the neutron-lib pattern).

A resource is declared as data in ``definitions``: for each attribute whether a POST or a PUT
may set it, its default, how its value is converted and validated, whether responses show it.
The functions here apply any such map to a request body or a response, so the resource
handlers only see bodies that are already complete, converted and valid.
"""
import copy
import dataclasses
from typing import Any, Callable, Optional

from dragonflow.api import errors, validators


class _Sentinel:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


# No default: a POST must give the attribute.
REQUIRED = _Sentinel('REQUIRED')
# Default computed by the handler (Neutron's ATTR_NOT_SPECIFIED): left out of the body.
UNSET = _Sentinel('UNSET')


@dataclasses.dataclass(frozen=True)
class Attr:
    """One attribute of a resource, as neutron-lib declares it."""
    allow_post: bool = False
    allow_put: bool = False
    default: Any = REQUIRED
    convert: Optional[Callable[[Any], Any]] = None
    validate: Optional[Callable[[Any], Optional[str]]] = None
    visible: bool = True
    # Neutron's default policy lets only admins set it (create_<resource>:<name> and
    # update_<resource>:<name> are admin-only rules).
    admin_only: bool = False
    # How a query-string value is turned into the attribute's type for filtering.
    convert_filter: Optional[Callable[[str], Any]] = None
    # Neutron's default policy shows it to admins only (get_<resource>:<name> admin-only).
    admin_only_visible: bool = False


@dataclasses.dataclass(frozen=True)
class ResourceDef:
    name: str            # 'network': the key of a single object in bodies
    collection: str      # 'networks': the key of lists (and the URL segment, unless path)
    attributes: dict[str, Attr]
    path: str = ''       # the URL segment where it differs: 'security-groups'

    @property
    def url_segment(self) -> str:
        return self.path or self.collection

    def visible(self) -> list[str]:
        return [name for name, attr in self.attributes.items() if attr.visible]


def populate_project(body: dict, ctx) -> None:
    """Make project_id and tenant_id both present and equal, defaulting to the caller's."""
    if 'tenant_id' in body and 'project_id' not in body:
        body['project_id'] = body['tenant_id']
    elif 'project_id' in body and 'tenant_id' not in body:
        body['tenant_id'] = body['project_id']
    if body.get('project_id') != body.get('tenant_id'):
        raise errors.HTTPBadRequest("'project_id' and 'tenant_id' do not match")
    if 'project_id' not in body:
        body['project_id'] = body['tenant_id'] = ctx.project_id
    elif body['project_id'] != ctx.project_id and not ctx.can_set_project:
        raise errors.HTTPBadRequest(
            "Specifying 'project_id' or 'tenant_id' other than the authenticated project "
            "in request is not allowed for current user.")


def verify_known(rdef: ResourceDef, body: dict) -> None:
    unknown = sorted(set(body) - set(rdef.attributes))
    if unknown:
        raise errors.HTTPBadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'")


def prepare_create(rdef: ResourceDef, body: Any, ctx) -> dict:
    """The POST body of one object, complete with defaults, converted and validated."""
    body = _require_dict(rdef, body)
    populate_project(body, ctx)
    verify_known(rdef, body)
    for name, attr in rdef.attributes.items():
        if not attr.allow_post:
            if name in body:
                raise errors.HTTPBadRequest(f"Attribute '{name}' not allowed in POST")
        elif name not in body:
            if attr.default is REQUIRED:
                raise errors.HTTPBadRequest(
                    f"Failed to parse request. Required attribute '{name}' not specified")
            if attr.default is not UNSET:
                body[name] = copy.deepcopy(attr.default)
    body = _convert(rdef, body)
    # As Neutron's policy engine: an attribute counts as set when it differs from the default.
    enforce_policy(rdef, 'create', [n for n in body if body[n] != rdef.attributes[n].default],
                   ctx)
    return body


def prepare_update(rdef: ResourceDef, body: Any) -> dict:
    """The PUT body: only attributes a PUT may change, converted and validated. The caller
    enforces the policy (enforce_policy) once it knows the object exists."""
    body = _require_dict(rdef, body)
    verify_known(rdef, body)
    for name in body:
        if not rdef.attributes[name].allow_put:
            raise errors.HTTPBadRequest(f'Cannot update read-only attribute {name}')
    return _convert(rdef, body)


def enforce_policy(rdef: ResourceDef, verb: str, names: list[str], ctx) -> None:
    """PolicyNotAuthorized, worded as oslo.policy words it, when a non-admin sets any
    admin-only attribute among ``names``."""
    if ctx.is_admin:
        return
    action = f'{verb}_{rdef.name}'
    refused = [n for n in rdef.attributes if n in names and rdef.attributes[n].admin_only]
    if refused:
        rule = f'rule:{action}'
        for name in refused:
            rule = f'({rule} and rule:{action}:{name})'
        raise errors.PolicyNotAuthorized(rule=rule)


def _require_dict(rdef: ResourceDef, body: Any) -> dict:
    if not isinstance(body, dict):
        raise errors.HTTPBadRequest(f"Unable to find '{rdef.name}' in request body")
    return dict(body)


def _convert(rdef: ResourceDef, body: dict) -> dict:
    for name, value in list(body.items()):
        attr = rdef.attributes[name]
        if attr.convert is not None:
            value = body[name] = attr.convert(value)
        reason = validators.json_value(value)
        if not reason and attr.validate:
            reason = attr.validate(value)
        if reason:
            raise errors.HTTPBadRequest(f'Invalid input for {name}. Reason: {reason}.')
    return body


def view(rdef: ResourceDef, full: dict, fields: Optional[list[str]] = None,
         ctx=None) -> dict:
    """What a response shows of an object: its visible attributes, or only ``fields``;
    to a non-admin ``ctx``, none of those only admins see."""
    names = rdef.visible()
    if fields:
        names = [name for name in names if name in fields]
    if ctx is not None and not ctx.is_admin:
        names = [name for name in names if not rdef.attributes[name].admin_only_visible]
    return {name: full.get(name) for name in names}
