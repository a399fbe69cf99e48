"""The generic steps of every API call (Neutron's api/v2/base.py), independent of HTTP.

Create, update and delete unwrap and validate the body against the resource's attribute map,
run the handler's plan through ``txn.run`` (one conditional commit, retried on conflicts) and
render the result through the same map. A bulk create is one plan, hence one commit: all the
objects are created or none.
"""
from typing import Any, Optional

from dragonflow.api import attributes, definitions, errors, query, validators
from dragonflow.api import txn as txns
from dragonflow.api.context import Context
from dragonflow.api.handlers.base import Handler
from dragonflow.api.handlers.floating_ips import FloatingIPHandler
from dragonflow.api.handlers.networks import NetworkHandler
from dragonflow.api.handlers.ports import PortHandler
from dragonflow.api.handlers.routers import RouterHandler
from dragonflow.api.handlers.security_groups import SecurityGroupHandler, SecurityGroupRuleHandler
from dragonflow.api.handlers.subnets import SubnetHandler
from dragonflow.model import Model
from dragonflow.store import api as store_api


class Service:
    def __init__(self, store: store_api.Store, conf):
        self.store, self.conf = store, conf
        handlers = (NetworkHandler(conf), SubnetHandler(conf), PortHandler(conf),
                    RouterHandler(conf), SecurityGroupHandler(conf),
                    SecurityGroupRuleHandler(conf), FloatingIPHandler(conf))
        self.handlers: dict[str, Handler] = {h.rdef.collection: h for h in handlers}
        if conf is not None:
            _ = handlers[0].types   # a wrong [ml2*] option stops df-api from starting

    # Reads

    def index(self, collection: str, ctx: Context, params: list, base_url: str) -> dict:
        handler = self.handlers[collection]
        q = query.parse(handler.rdef, params)
        handler.before_list(self.store, ctx, q.filters)
        reader = txns.Txn(self.store)
        objs = [o for o in reader.all(handler.model) if handler.visible_to(ctx, o, reader)]
        fulls = [f for f in (handler.full(o, reader) for o in objs)
                 if query.matches(handler.rdef, f, q.filters)]
        chosen, more = query.page(fulls, q)
        body = {collection: [attributes.view(handler.rdef, f, q.fields, ctx) for f in chosen]}
        body.update(query.links(collection, base_url, chosen, more, q))
        return body

    def show(self, collection: str, ctx: Context, id: str, fields: list[str]) -> dict:
        handler = self.handlers[collection]
        reader = txns.Txn(self.store)
        obj = handler.get(reader, ctx, id)
        return {handler.rdef.name: attributes.view(handler.rdef, handler.full(obj, reader),
                                                   fields, ctx)}

    # Writes

    def create(self, collection: str, ctx: Context, body: Any) -> dict:
        handler = self.handlers[collection]
        items, bulk = _unwrap_create(handler.rdef, body)
        prepared = [attributes.prepare_create(handler.rdef, item, ctx) for item in items]
        objs, revision = txns.run(self.store, lambda txn, keys: handler.create_many(
            txn, keys, ctx, prepared))
        views = self._views(handler, objs, revision, ctx)
        return {collection: views} if bulk else {handler.rdef.name: views[0]}

    def update(self, collection: str, ctx: Context, id: str, body: Any,
               if_match: Optional[str]) -> dict:
        handler = self.handlers[collection]
        changes = attributes.prepare_update(handler.rdef, _unwrap(handler.rdef, body))
        expected = _revision_constraint(if_match)

        def plan(txn, keys):
            obj = _check_revision(handler.get(txn, ctx, id, f'update_{handler.rdef.name}'),
                                  expected)
            # After the lookup, as Neutron: an unknown id is 404 whatever the body sets.
            attributes.enforce_policy(handler.rdef, 'update', list(changes), ctx)
            return handler.update(txn, keys, ctx, obj, changes) if changes else obj

        obj, revision = txns.run(self.store, plan)
        return {handler.rdef.name: self._views(handler, [obj], revision if changes else None,
                                               ctx)[0]}

    def delete(self, collection: str, ctx: Context, id: str, if_match: Optional[str]) -> None:
        handler = self.handlers[collection]
        expected = _revision_constraint(if_match)
        action = f'delete_{handler.rdef.name}'
        handler.get(txns.Txn(self.store), ctx, id, action)  # 404/403 before fencing
        with handler.fence(self.store, id) as fence:
            def plan(txn, keys):
                if fence is not None:
                    txn.require(fence)
                obj = handler.get(txn, ctx, id, action)
                handler.delete(txn, ctx, _check_revision(obj, expected))
            txns.run(self.store, plan)

    def _views(self, handler: Handler, objs: list[Model], revision: Optional[int],
               ctx: Context) -> list:
        """Responses for objects this call wrote at ``revision``."""
        reader = txns.Txn(self.store)
        for obj in objs:
            if revision is not None:
                obj.revision = revision
        return [attributes.view(handler.rdef, handler.full(o, reader), None, ctx)
                for o in objs]

    # Tags (standard-attr-tag): /<collection>/<id>/tags[/<tag>]

    def get_tags(self, collection: str, ctx: Context, id: str) -> dict:
        handler = self.handlers[collection]
        return {'tags': handler.get(txns.Txn(self.store), ctx, id).tags}

    def check_tag(self, collection: str, ctx: Context, id: str, tag: str) -> None:
        handler = self.handlers[collection]
        if tag not in handler.get(txns.Txn(self.store), ctx, id).tags:
            raise errors.TagNotFound(tag=tag, resource=handler.rdef.name, resource_id=id)

    # The checks and errors of Neutron's tagging extension (validate_tags, validate_tag,
    # validate_tags_limit).

    def set_tags(self, collection: str, ctx: Context, id: str, body: Any) -> dict:
        if not isinstance(body, dict) or 'tags' not in body:
            raise errors.InvalidInput(error_message='Invalid tags body')
        reason = validators.tags(body['tags'])
        if reason:
            raise errors.InvalidInput(error_message=reason)
        tags = body['tags']
        return {'tags': self._change_tags(collection, ctx, id, lambda old: tags)}

    def add_tag(self, collection: str, ctx: Context, id: str, tag: str) -> None:
        reason = validators.string(validators.TAG_MAX_LEN)(tag)
        if reason:
            raise errors.InvalidInput(error_message=reason)
        self._change_tags(collection, ctx, id, lambda old: old + [tag] if tag not in old else old)

    def delete_tags(self, collection: str, ctx: Context, id: str) -> None:
        self._change_tags(collection, ctx, id, lambda old: [])

    def delete_tag(self, collection: str, ctx: Context, id: str, tag: str) -> None:
        handler = self.handlers[collection]

        def without(old):
            if tag not in old:
                raise errors.TagNotFound(tag=tag, resource=handler.rdef.name, resource_id=id)
            return [t for t in old if t != tag]
        self._change_tags(collection, ctx, id, without)

    def _change_tags(self, collection, ctx, id, change) -> list[str]:
        handler = self.handlers[collection]

        def plan(txn, keys):
            obj = handler.get(txn, ctx, id, f'update_{handler.rdef.name}')
            tags = change(list(obj.tags))
            if len(tags) > validators.MAX_TAGS:
                raise errors.BadRequest(resource=collection, msg=(
                    f'The number of tags exceed the per-resource limit of {validators.MAX_TAGS}'))
            return handler.apply(txn, obj, {'tags': tags})
        obj, _ = txns.run(self.store, plan)
        return obj.tags

    # Router actions

    def router_interface(self, ctx: Context, id: str, body: Any, add: bool) -> dict:
        routers: RouterHandler = self.handlers['routers']
        action = routers.add_interface if add else routers.remove_interface
        result, _ = txns.run(self.store, lambda txn, keys: action(txn, keys, ctx, id, body))
        return result

    def extra_routes(self, ctx: Context, id: str, body: Any, add: bool) -> dict:
        routers: RouterHandler = self.handlers['routers']
        changes = attributes.prepare_update(definitions.EXTRAROUTES,
                                            _unwrap(definitions.ROUTER, body))
        routes = changes.get('routes', [])
        router, revision = txns.run(self.store, lambda txn, keys: routers.change_routes(
            txn, ctx, id, routes, add))
        return {'router': self._views(routers, [router], revision, ctx)[0]}


def _unwrap(rdef: attributes.ResourceDef, body: Any) -> Any:
    if not body:
        raise errors.HTTPBadRequest('Resource body required')
    if not isinstance(body, dict) or rdef.name not in body:
        raise errors.HTTPBadRequest(f"Unable to find '{rdef.name}' in request body")
    return body[rdef.name]


def _unwrap_create(rdef: attributes.ResourceDef, body: Any) -> tuple[list, bool]:
    """The objects of a create and whether it was a bulk create."""
    if isinstance(body, dict) and rdef.collection in body:
        items = body[rdef.collection]
        if not isinstance(items, list) or not items:
            raise errors.HTTPBadRequest('Resources required')
        return items, True
    return [_unwrap(rdef, body)], False


def _revision_constraint(if_match: Optional[str]) -> Optional[int]:
    """``If-Match: revision_number=N`` (revision-if-match); other If-Match forms are ignored."""
    for part in (if_match or '').split(','):
        key, _, value = part.strip().partition('=')
        if key == 'revision_number':
            try:
                return int(value)
            except ValueError:
                raise errors.HTTPBadRequest(f'Invalid If-Match header: {if_match}') from None
    return None


def _check_revision(obj: Model, expected: Optional[int]) -> Model:
    if expected is not None and obj.revision != expected:
        raise errors.PreconditionFailed()
    return obj
