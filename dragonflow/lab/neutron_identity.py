"""Who is calling a lab Neutron: the identity headers as df-api reads them (noauth mode).

Neutron's own noauth pipeline gives every request an admin context of one fixed project and
ignores the identity headers, so a test could not act as a member of a project. This paste
filter, placed where Neutron's noauth pipeline has its fake project filter, builds the
request context from the headers a keystone middleware would have set, with df-api's rules
(dragonflow/api/context.py): X-Project-Id (or X-Tenant-Id), else ``default_project_id``;
X-Roles, else ``default_roles``; admin when 'admin' is among the roles. Keystone's implied
roles are added (admin implies member, member implies reader) because Neutron's default
policies check for 'reader' and 'member' by name. Neutron's policy engine decides the rest.

Paste options (api-paste.ini, ``[filter:...]``): default_project_id, default_roles (comma
separated).
"""
import webob.dec
from neutron_lib import context

# Keystone's default role inference: a role grants the ones it implies, transitively.
IMPLIED_ROLES = {'admin': ('member',), 'member': ('reader',)}


def roles_with_implied(roles) -> list[str]:
    found: list[str] = []
    pending = list(roles)
    while pending:
        role = pending.pop(0)
        if role and role not in found:
            found.append(role)
            pending.extend(IMPLIED_ROLES.get(role, ()))
    return found


def context_from_headers(headers, default_project_id: str,
                         default_roles: list[str]) -> context.Context:
    project = headers.get('X-Project-Id') or headers.get('X-Tenant-Id')
    given = headers.get('X-Roles')
    roles = roles_with_implied(r.strip().lower() for r in (
        given.split(',') if given is not None else default_roles))
    return context.Context(user_id=headers.get('X-User-Id'),
                           project_id=project or default_project_id,
                           roles=roles, is_admin='admin' in roles)


class HeaderIdentity:
    """WSGI middleware: the request's Neutron context from its identity headers."""

    def __init__(self, app, default_project_id: str, default_roles: list[str]):
        self.app = app
        self.default_project_id = default_project_id
        self.default_roles = default_roles

    @webob.dec.wsgify
    def __call__(self, request):
        request.environ['neutron.context'] = context_from_headers(
            request.headers, self.default_project_id, self.default_roles)
        return self.app


def filter_factory(global_conf, **local_conf):
    default_project_id = local_conf.get('default_project_id', 'demo')
    default_roles = [r.strip() for r in local_conf.get('default_roles', '').split(',')
                     if r.strip()]

    def make(app):
        return HeaderIdentity(app, default_project_id, default_roles)
    return make
