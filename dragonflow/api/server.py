"""df-api: the Neutron v2.0 REST API over the northbound store (FastAPI, served by uvicorn).

Stateless: every process answers from the store alone, so any number of them can serve the
same store (``[api] workers`` or several hosts). HTTP concerns live here: routes, identity
headers, JSON in and out, errors rendered as NeutronError bodies; ``Service`` does the rest.
"""
import asyncio
import contextlib
import functools
import json
import logging
import os
import sys
import threading
from typing import Any, Callable

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from dragonflow import conf as df_conf
from dragonflow import store as nb
from dragonflow.api import definitions, errors, extensions, l3_scheduler, wire
from dragonflow.api.context import Context
from dragonflow.api.service import Service
from dragonflow.store import api as store_api
from dragonflow.store import compaction

LOG = logging.getLogger(__name__)
ARGV_ENV = 'DRAGONFLOW_API_ARGV'   # how worker processes get the command line (workers > 1)

# fn(service, request, ctx, body) -> response body; runs in a worker thread (the store blocks).
Call = Callable[[Service, Request, Context, Any], Any]


def create_app(conf_or_store, conf=None) -> FastAPI:
    """The ASGI app over a store (tests) or over the store a configuration names."""
    if isinstance(conf_or_store, store_api.Store):
        store, conf = conf_or_store, conf or df_conf.load([])
    else:
        conf = conf_or_store
        store = nb.connect(conf.store.url, timeout=conf.store.timeout)
    app = FastAPI(title='Dragonflow API', openapi_url=None, docs_url=None, redoc_url=None,
                  lifespan=functools.partial(_background, store, conf))
    # Outermost last: a failure anywhere inside, the size limit included, is answered.
    app.add_middleware(_StripJsonSuffix)
    app.add_middleware(wire.BodyLimit, max_size=conf.api.max_request_body_size)
    app.add_middleware(wire.LastResort)
    app.state.service = Service(store, conf)
    app.state.conf = conf
    _add_routes(app)
    _add_error_handlers(app)
    return app


@contextlib.asynccontextmanager
async def _background(store, conf, app):
    """While the app serves, it compacts the store's change log by the [store] policy and
    schedules routers' gateway chassis and SNAT ports by the [l3] options: any number of
    df-api processes may, compaction is idempotent and every scheduling write conditional."""
    stop = threading.Event()
    threads = [compaction.run(store, conf, stop), l3_scheduler.run(store, conf, stop)]
    try:
        yield
    finally:
        stop.set()
        for thread in threads:  # a round on a hung store may take its timeout
            await asyncio.to_thread(thread.join, 5)


class _StripJsonSuffix:
    """Neutron also answers ``/v2.0/networks.json``: older clients (neutronclient) use it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope['type'] == 'http' and scope['path'].endswith('.json'):
            scope = {**scope, 'path': scope['path'][:-len('.json')],
                     'raw_path': scope.get('raw_path', b'').removesuffix(b'.json')}
        await self.app(scope, receive, send)


def _endpoint(call: Call, status: int = 200, with_body: bool = False):
    async def handle(request: Request):
        state = request.app.state
        ctx = Context.from_headers(request.headers, state.conf.api.default_project_id,
                                   state.conf.api.default_roles)
        body = wire.parse_body(await request.body()) if with_body else None
        result = await run_in_threadpool(call, state.service, request, ctx, body)
        if status == 204 or result is None:
            return Response(status_code=status)
        return wire.NeutronJSONResponse(result, status_code=status)
    return handle


def _base_url(request: Request) -> str:
    return str(request.base_url)


def _fields(request: Request) -> list[str]:
    return request.query_params.getlist('fields')


def _add_routes(app: FastAPI) -> None:
    route = app.add_api_route
    for path in ('/', '/v2.0', '/v2.0/'):
        route(path, _endpoint(_version_document), methods=['GET'])
    route('/v2.0/extensions', _endpoint(
        lambda s, r, c, b: {'extensions': extensions.all_extensions()}), methods=['GET'])
    route('/v2.0/extensions/{alias}', _endpoint(_extension), methods=['GET'])
    for rdef in definitions.RESOURCES.values():
        _add_resource_routes(app, rdef.collection, rdef.url_segment)
    router = '/v2.0/routers/{id}'
    for action, add in (('add_router_interface', True), ('remove_router_interface', False)):
        route(f'{router}/{action}', _endpoint(functools.partial(_interface, add=add),
                                              with_body=True), methods=['PUT'])
    for action, add in (('add_extraroutes', True), ('remove_extraroutes', False)):
        route(f'{router}/{action}', _endpoint(functools.partial(_extraroutes, add=add),
                                              with_body=True), methods=['PUT'])


def _add_resource_routes(app: FastAPI, coll: str, segment: str) -> None:
    """Routes of one collection (``coll``: its key in bodies; ``segment``: in URLs)."""
    many = f'/v2.0/{segment}'
    route, one, tags = app.add_api_route, f'{many}/{{id}}', f'{many}/{{id}}/tags'
    route(many, _endpoint(lambda s, r, c, b: s.index(
        coll, c, r.query_params.multi_items(), f'{_base_url(r)}v2.0/{segment}')),
          methods=['GET'])
    route(many, _endpoint(lambda s, r, c, b: s.create(coll, c, b), 201, True),
          methods=['POST'])
    route(one, _endpoint(lambda s, r, c, b: s.show(coll, c, _id(r), _fields(r))),
          methods=['GET'])
    route(one, _endpoint(lambda s, r, c, b: s.update(coll, c, _id(r), b,
                                                     r.headers.get('if-match')), 200, True),
          methods=['PUT'])
    route(one, _endpoint(lambda s, r, c, b: s.delete(coll, c, _id(r),
                                                     r.headers.get('if-match')), 204),
          methods=['DELETE'])
    route(tags, _endpoint(lambda s, r, c, b: s.get_tags(coll, c, _id(r))), methods=['GET'])
    route(tags, _endpoint(lambda s, r, c, b: s.set_tags(coll, c, _id(r), b), 200, True),
          methods=['PUT'])
    route(tags, _endpoint(lambda s, r, c, b: s.delete_tags(coll, c, _id(r)), 204),
          methods=['DELETE'])
    tag = tags + '/{tag}'
    route(tag, _endpoint(lambda s, r, c, b: s.check_tag(coll, c, _id(r), _tag(r)), 204),
          methods=['GET'])
    route(tag, _endpoint(lambda s, r, c, b: s.add_tag(coll, c, _id(r), _tag(r)), 201),
          methods=['PUT'])
    route(tag, _endpoint(lambda s, r, c, b: s.delete_tag(coll, c, _id(r), _tag(r)), 204),
          methods=['DELETE'])


def _id(request: Request) -> str:
    return request.path_params['id']


def _tag(request: Request) -> str:
    return request.path_params['tag']


def _version_document(service, request, ctx, body):
    base = _base_url(request)
    if request.url.path == '/':
        return extensions.versions(base)
    return extensions.resources(base, definitions.RESOURCES.values())


def _extension(service, request, ctx, body):
    found = extensions.find(request.path_params['alias'])
    if found is None:
        raise errors.ExtensionNotFound(request.path_params['alias'])
    return {'extension': found}


def _interface(service, request, ctx, body, add):
    return service.router_interface(ctx, _id(request), body, add)


def _extraroutes(service, request, ctx, body, add):
    return service.extra_routes(ctx, _id(request), body, add)


def _add_error_handlers(app: FastAPI) -> None:
    """Every error leaves as a NeutronError body; bad input is never a 500, and trouble with
    the store, of whatever kind, is a 503 (wire.LastResort answers the rest)."""
    def neutron_error(request, exc: errors.NeutronError):
        return wire.error_response(exc)

    def http_error(request, exc: StarletteHTTPException):
        error = {404: errors.HTTPNotFound('The resource could not be found.'),
                 405: errors.HTTPMethodNotAllowed('The method is not allowed for the '
                                                  'requested URL.')}.get(exc.status_code)
        error = error or errors.HTTPBadRequest(str(exc.detail))
        error.status = exc.status_code
        return neutron_error(request, error)

    def store_error(request, exc: store_api.StoreError):
        if isinstance(exc, store_api.Unavailable):
            LOG.warning('store unavailable: %s', exc)
            return neutron_error(request, errors.ServiceUnavailable(str(exc)))
        # Conflicts are retried by txn.run: one that gets here, or any other store error
        # (a damaged database), is the store's trouble, not the request's.
        LOG.error('%s %s: store error', request.method, request.url.path, exc_info=exc)
        return neutron_error(request, errors.ServiceUnavailable('the store failed'))

    app.add_exception_handler(errors.NeutronError, neutron_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(store_api.StoreError, store_error)


def _app_from_env() -> FastAPI:
    """uvicorn's factory in worker processes: the command line comes from the parent."""
    return create_app(df_conf.load(json.loads(os.environ[ARGV_ENV])))


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    conf = df_conf.load(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: '
                                                   '%(message)s')
    options = dict(host=conf.api.bind_host, port=conf.api.bind_port, log_level='info',
                   access_log=conf.api.access_log)
    if conf.api.workers > 1:
        os.environ[ARGV_ENV] = json.dumps(argv)
        uvicorn.run('dragonflow.api.server:_app_from_env', factory=True,
                    workers=conf.api.workers, **options)
    else:
        uvicorn.run(create_app(conf), **options)


if __name__ == '__main__':
    main()
