"""Who is calling: the project and roles of a request (noauth mode).

Without keystone, df-api trusts the identity headers a keystone middleware would have set
(X-Project-Id, X-Roles), as Neutron does with auth_strategy=noauth. A request naming no project
acts for [api] default_project_id, and one naming no roles has [api] default_roles;
openstacksdk with auth_type 'none' sends no such header.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Context:
    project_id: str
    is_admin: bool = False
    # False when the project came from an identity header: the body may then not name another.
    can_set_project: bool = True

    @classmethod
    def from_headers(cls, headers, default_project_id: str,
                     default_roles: tuple = ()) -> 'Context':
        project = headers.get('x-project-id') or headers.get('x-tenant-id')
        given = headers.get('x-roles')
        roles = {r.strip().lower() for r in (given.split(',') if given is not None
                                             else default_roles)}
        is_admin = 'admin' in roles
        return cls(project_id=project or default_project_id, is_admin=is_admin,
                   can_set_project=is_admin or not project)

    def owns(self, project_id: str) -> bool:
        return self.is_admin or project_id == self.project_id
