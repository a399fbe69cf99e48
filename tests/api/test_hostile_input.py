"""Nothing one tenant sends stops service for others (issue #13).

Every request gets success or Neutron's 4xx NeutronError (503 for store trouble), never a 5xx
from its input, and a refused request leaves the store as it was. These are the cases found by
hand and by the fuzzer (test_fuzz.py), each through df-api in this process.
"""
import asyncio
import http.client
import json
import logging
import os
import socket
import threading
import time

import pytest
import uvicorn

from dragonflow import conf as df_conf
from dragonflow import store as nb
from dragonflow.api import definitions, wire
from dragonflow.api.server import create_app
from dragonflow.store import api as store_api

from .conftest import error_of, in_process

ADMIN = {'X-Roles': 'admin', 'X-Project-Id': 'ops'}
SURROGATE = 'bad\ud800'   # what the JSON escape "bad\ud800" parses to: no UTF-8 can hold it


def send(client, method: str, path: str, body, headers=None):
    """``body`` as JSON text, non-ASCII escaped (httpx's own encoder cannot hold a lone
    surrogate); a string ``body`` is sent as it is."""
    text = body if isinstance(body, str) else json.dumps(body)
    return client.request(method, path, content=text,
                          headers={'content-type': 'application/json', **(headers or {})})


def created(response) -> dict:
    assert response.status_code == 201, response.text
    return next(iter(response.json().values()))


def refused(response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    return error_of(response)


@pytest.fixture
def objects(client):
    """One object of every resource (and the parents the POSTs of each need)."""
    net = created(send(client, 'POST', '/v2.0/networks', {'network': {'name': 'n'}}))
    subnet = created(send(client, 'POST', '/v2.0/subnets', {'subnet': {
        'network_id': net['id'], 'cidr': '10.0.0.0/24', 'ip_version': 4}}))
    port = created(send(client, 'POST', '/v2.0/ports', {'port': {'network_id': net['id']}}))
    router = created(send(client, 'POST', '/v2.0/routers', {'router': {}}))
    group = created(send(client, 'POST', '/v2.0/security-groups',
                         {'security_group': {'name': 'g'}}))
    rule = created(send(client, 'POST', '/v2.0/security-group-rules', {'security_group_rule': {
        'security_group_id': group['id'], 'direction': 'ingress'}}))
    external = created(send(client, 'POST', '/v2.0/networks',
                            {'network': {'router:external': True}}, ADMIN))
    created(send(client, 'POST', '/v2.0/subnets', {'subnet': {
        'network_id': external['id'], 'cidr': '203.0.113.0/24', 'ip_version': 4}}, ADMIN))
    fip = created(send(client, 'POST', '/v2.0/floatingips',
                       {'floatingip': {'floating_network_id': external['id']}}))
    return {'networks': net, 'subnets': subnet, 'ports': port, 'routers': router,
            'security_groups': group, 'security_group_rules': rule, 'external': external,
            'floatingips': fip}


def minimal(collection: str, objects: dict) -> dict:
    """The smallest valid POST body of ``collection``."""
    return {'networks': {},
            'subnets': {'network_id': objects['networks']['id'], 'cidr': '10.1.0.0/24',
                        'ip_version': 4},
            'ports': {'network_id': objects['networks']['id']},
            'routers': {},
            'security_groups': {'name': 'other'},
            'security_group_rules': {'security_group_id': objects['security_groups']['id'],
                                     'direction': 'egress', 'protocol': 'tcp'},
            'floatingips': {'floating_network_id': objects['external']['id']},
            }[collection]


def writable(verb: str):
    """(resource, attribute) for every attribute a POST (or PUT) may set."""
    for rdef in definitions.RESOURCES.values():
        for name, attr in rdef.attributes.items():
            if attr.allow_post if verb == 'POST' else attr.allow_put:
                yield rdef, name


def every_shape(value) -> list:
    """``value`` as an attribute may hold it: alone, in a list, as a dict's key or value, in a
    list of dicts (fixed_ips, allocation pools, routes)."""
    return [value, [value], {value if isinstance(value, str) else 'key': 'v'}, {'k': value},
            [{'ip_address': value, 'subnet_id': value}]]


def assert_refused_everywhere(client, store, objects, value, literal=None):
    """Every writable attribute of every resource set to ``value`` (in every shape): 4xx with a
    NeutronError, and nothing written. ``literal``: JSON text standing for ``value``."""
    def text(body):
        dumped = json.dumps(body)
        return dumped.replace('"__value__"', literal) if literal else dumped

    for verb in ('POST', 'PUT'):
        for rdef, name in writable(verb):
            for shape in every_shape('__value__' if literal else value):
                before = store.revision()
                if verb == 'POST':
                    path = f'/v2.0/{rdef.url_segment}'
                    body = {rdef.name: {**minimal(rdef.collection, objects), name: shape}}
                else:
                    path = f'/v2.0/{rdef.url_segment}/{objects[rdef.collection]["id"]}'
                    body = {rdef.name: {name: shape}}
                response = send(client, verb, path, text(body))
                assert 400 <= response.status_code < 500, (verb, rdef.name, name, shape,
                                                           response.text)
                error_of(response)
                assert store.revision() == before, (verb, rdef.name, name, shape)


# Text

def test_lone_surrogate_is_refused_in_every_attribute(client, sqlite_store, objects):
    assert_refused_everywhere(client, sqlite_store, objects, SURROGATE)
    for rdef in definitions.RESOURCES.values():
        assert client.get(f'/v2.0/{rdef.url_segment}').status_code == 200


def test_lone_surrogate_name_is_refused_before_it_is_stored(client):
    """The case of the issue: the network was stored, then every listing of the project (and,
    for an external network, of every project) failed to encode: 500."""
    response = send(client, 'POST', '/v2.0/networks', '{"network": {"name": "bad\\ud800"}}')
    error = refused(response)
    assert (error['type'], error['message']) == (
        'HTTPBadRequest', "Invalid input for name. Reason: 'bad\\ud800' is not valid Unicode "
                          'text.')
    external = created(send(client, 'POST', '/v2.0/networks',
                            {'network': {'router:external': True}}, ADMIN))
    refused(send(client, 'PUT', f'/v2.0/networks/{external["id"]}',
                 '{"network": {"name": "x\\udfff"}}', ADMIN))
    for headers in ({}, {'X-Project-Id': 'other'}, ADMIN):
        listed = client.get('/v2.0/networks', headers=headers)
        assert listed.status_code == 200
        assert external['id'] in {n['id'] for n in listed.json()['networks']}


def test_tags_are_checked_text(client, objects):
    net = objects['networks']['id']
    refused(send(client, 'PUT', f'/v2.0/networks/{net}/tags', {'tags': [SURROGATE]}))
    assert refused(client.put(f'/v2.0/networks/{net}/tags/{"t" * 256}'))['message'] == (
        f"Invalid input for operation: '{'t' * 256}' exceeds maximum length of 255.")
    assert client.put(f'/v2.0/networks/{net}/tags/{"t" * 255}').status_code == 201
    assert client.get(f'/v2.0/networks/{net}').json()['network']['tags'] == ['t' * 255]


def test_an_object_holds_at_most_50_tags(client, objects):
    """Neutron's limit; one by one, a tenant could otherwise grow an object without end."""
    net = objects['networks']['id']
    tags = [f't{i}' for i in range(50)]
    assert send(client, 'PUT', f'/v2.0/networks/{net}/tags', {'tags': tags}).status_code == 200
    error = refused(client.put(f'/v2.0/networks/{net}/tags/one-more'))
    assert (error['type'], error['message']) == (
        'BadRequest', 'Bad networks request: The number of tags exceed the per-resource limit '
                      'of 50.')
    refused(send(client, 'PUT', f'/v2.0/networks/{net}/tags', {'tags': tags + ['x']}))
    error = refused(send(client, 'PUT', f'/v2.0/networks/{net}/tags', {'tags': ['a', 'a']}))
    assert error['message'] == "Invalid input for operation: Duplicate items in the list: 'a'."
    assert len(client.get(f'/v2.0/networks/{net}').json()['network']['tags']) == 50


def test_non_ascii_text_is_kept_and_sent_escaped(client):
    """Valid text of any script round-trips; responses escape it as Neutron's jsonutils does."""
    net = created(send(client, 'POST', '/v2.0/networks', {'network': {'name': 'réseau 网络 🛰'}}))
    response = client.get(f'/v2.0/networks/{net["id"]}')
    assert response.json()['network']['name'] == 'réseau 网络 🛰'
    assert response.content.isascii()


# Numbers

@pytest.mark.parametrize('literal', ['1e400', '-1e400'])
def test_overflowing_numbers_are_refused_in_every_attribute(client, sqlite_store, objects,
                                                            literal):
    """1e400 parses to infinity: int() of it raised OverflowError (500) for mtu, ip_version and
    segmentation ids; no attribute may keep it either, since no response could carry it."""
    assert_refused_everywhere(client, sqlite_store, objects, None, literal=literal)


def test_integer_attributes_say_infinity_is_not_an_integer(client, objects):
    for path, body in (('networks', '{"network": {"mtu": 1e400}}'),
                       ('networks', '{"network": {"provider:segmentation_id": 1e400}}'),
                       ('subnets', '{"subnet": {"network_id": "%s", "cidr": "10.2.0.0/24", '
                                   '"ip_version": 1e400}}' % objects['networks']['id'])):
        error = refused(send(client, 'POST', f'/v2.0/{path}', body, ADMIN))
        assert (error['type'], error['message']) == (
            'InvalidInput', "Invalid input for operation: 'inf' is not an integer.")


@pytest.mark.parametrize('constant', ['NaN', 'Infinity', '-Infinity'])
def test_non_json_constants_are_invalid_bodies(client, constant):
    error = refused(send(client, 'POST', '/v2.0/networks', '{"network": {"mtu": %s}}' % constant))
    assert (error['type'], error['message']) == ('HTTPBadRequest', 'Body contains invalid data')


# Policy: what only an admin may set (Neutron's default policy.yaml)

@pytest.mark.parametrize('name, value', [('router:external', True), ('shared', True),
                                         ('provider:network_type', 'vxlan'),
                                         ('provider:physical_network', 'physnet1'),
                                         ('provider:segmentation_id', 100)])
def test_only_admins_set_admin_only_network_attributes(client, sqlite_store, name, value):
    before = sqlite_store.revision()
    error = refused(send(client, 'POST', '/v2.0/networks', {'network': {name: value}}), 403)
    assert error == {'type': 'PolicyNotAuthorized', 'detail': '', 'message': (
        f'(rule:create_network and rule:create_network:{name}) is disallowed by policy')}
    assert sqlite_store.revision() == before
    # A provider attribute alone is not a segment: the admin names a whole one.
    body = {name: value}
    if name == 'provider:physical_network':
        body['provider:network_type'] = 'flat'
    elif name == 'provider:segmentation_id':
        body['provider:network_type'] = 'vxlan'
    net = created(send(client, 'POST', '/v2.0/networks', {'network': body}, ADMIN))
    assert net[name] == value


def test_admin_only_attributes_on_update(client, objects):
    mine = objects['networks']['id']
    for name in ('router:external', 'shared'):
        error = refused(send(client, 'PUT', f'/v2.0/networks/{mine}', {'network': {name: True}}),
                        403)
        assert error['message'] == (
            f'(rule:update_network and rule:update_network:{name}) is disallowed by policy')
        # On update a value counts as set even when it changes nothing (Neutron's policy).
        refused(send(client, 'PUT', f'/v2.0/networks/{mine}', {'network': {name: False}}), 403)
    assert send(client, 'PUT', f'/v2.0/networks/{mine}', {'network': {'router:external': True}},
                ADMIN).json()['network']['router:external'] is True
    missing = '00000000-0000-0000-0000-000000000000'
    assert refused(send(client, 'PUT', f'/v2.0/networks/{missing}',
                        {'network': {'router:external': True}}), 404)['type'] == \
        'NetworkNotFound'


def test_defaults_of_admin_only_attributes_may_be_given(client):
    """A create that names the default value sets nothing (the clients send shared=false)."""
    created(send(client, 'POST', '/v2.0/networks', {'network': {
        'shared': False, 'router:external': 'false', 'provider:network_type': None,
        'provider:physical_network': None, 'provider:segmentation_id': None}}))


def test_external_network_of_non_admin_is_not_seen_by_others(client):
    """The reason for the policy: router:external shows a network to every project."""
    response = send(client, 'POST', '/v2.0/networks', {'network': {'router:external': True}})
    assert response.status_code == 403
    assert client.get('/v2.0/networks', headers={'X-Project-Id': 'other'}).json() == {
        'networks': []}


# binding:profile

def test_null_binding_profile_clears_it(client, objects):
    """ML2 takes null as {} (it was a pydantic error: 500)."""
    net = objects['networks']['id']
    port = created(send(client, 'POST', '/v2.0/ports',
                        {'port': {'network_id': net, 'binding:profile': None}}, ADMIN))
    assert port['binding:profile'] == {}
    port = created(send(client, 'POST', '/v2.0/ports',
                        {'port': {'network_id': net, 'binding:profile': {'a': 1}}}, ADMIN))
    updated = send(client, 'PUT', f'/v2.0/ports/{port["id"]}', {'port': {'binding:profile': None}},
                   ADMIN)
    assert updated.json()['port']['binding:profile'] == {}


def test_binding_profile_fits_neutrons_column(client, objects):
    net = objects['networks']['id']
    pad = 'x' * (4095 - len(json.dumps({'k': ''})))
    port = created(send(client, 'POST', '/v2.0/ports',
                        {'port': {'network_id': net, 'binding:profile': {'k': pad}}}, ADMIN))
    error = refused(send(client, 'PUT', f'/v2.0/ports/{port["id"]}',
                         {'port': {'binding:profile': {'k': pad + 'x'}}}, ADMIN))
    assert (error['type'], error['message']) == (
        'InvalidInput', 'Invalid input for operation: binding:profile value too large.')


# Nesting

def nested(levels: int, inner=None) -> dict:
    value = inner if inner is not None else {}
    for _ in range(levels - 1):
        value = {'a': value}
    return value


def test_deep_binding_profile_is_refused(client, objects):
    """256 levels passed validation, then pydantic refused to serialize the port: 500."""
    net = objects['networks']['id']
    for levels in (256, wire.MAX_DEPTH - 1):   # the body's and the port's dicts come on top
        error = refused(send(client, 'POST', '/v2.0/ports',
                             {'port': {'network_id': net, 'binding:profile': nested(levels)}}))
        assert error['message'] == (
            f'Body contains invalid data: nested deeper than {wire.MAX_DEPTH} levels')
    created(send(client, 'POST', '/v2.0/ports', {'port': {
        'network_id': net, 'binding:profile': nested(wire.MAX_DEPTH - 2)}}, ADMIN))


def test_json_nested_100000_deep_is_an_invalid_body(sqlite_store):
    """The JSON parser's RecursionError was a 500 (the body fits a raised size limit)."""
    conf = df_conf.load([])
    conf.set_override('max_request_body_size', 1 << 20, group='api')
    with in_process(sqlite_store, conf) as client:
        for body in ('[' * 100_000 + ']' * 100_000,
                     '{"network": ' + '{"a": ' * 100_000 + '1' + '}' * 100_001):
            error = refused(send(client, 'POST', '/v2.0/networks', body))
            assert error == {'type': 'HTTPBadRequest', 'message': 'Body contains invalid data',
                             'detail': ''}


@pytest.mark.parametrize('body', ['[]', '"network"', '3', 'null', '{"network": {"name": "x"',
                                  '\xff\xfe', '{"network": {}} trailing'])
def test_bodies_that_are_no_json_object(client, body):
    error = refused(client.post('/v2.0/networks', content=body.encode('latin-1')))
    assert error['message'] == 'Body contains invalid data'


# Request body size

def asgi_scope(method: str, path: str, headers: list) -> dict:
    return {'type': 'http', 'asgi': {'version': '3.0'}, 'http_version': '1.1',
            'method': method, 'scheme': 'http', 'path': path, 'raw_path': path.encode(),
            'query_string': b'', 'root_path': '', 'client': ('127.0.0.1', 1),
            'server': ('127.0.0.1', 9696), 'headers': headers}


def asgi_post(app, headers: list, chunks, path='/v2.0/networks'):
    """POST through the ASGI app itself, the body fed from the ``chunks`` iterator as the
    server would, without buffering it: (status, headers, body, chunks read)."""
    scope = asgi_scope('POST', path, [(b'content-type', b'application/json'), *headers])
    read, sent = [0], []

    async def receive():
        chunk = next(chunks, None)
        if chunk is None:
            return {'type': 'http.request', 'body': b'', 'more_body': False}
        read[0] += 1
        return {'type': 'http.request', 'body': chunk, 'more_body': True}

    async def send_(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send_))
    start = next(m for m in sent if m['type'] == 'http.response.start')
    body = b''.join(m.get('body', b'') for m in sent if m['type'] == 'http.response.body')
    return start['status'], dict(start['headers']), json.loads(body), read[0]


def endless(chunk: bytes):
    """A body that never ends (a test reading it whole would never finish)."""
    yield b'{"network": {"name": "'
    for _ in range(10_000):
        yield chunk
    raise AssertionError('the whole body was read')


# Of a refused body, at most DRAIN_FACTOR times the limit is read (and dropped, never held),
# so that the 413 reaches a client still sending: in 4 KiB chunks, this many.
DRAINED_CHUNKS = wire.DRAIN_FACTOR * 114688 // 4096 + 2


def test_declared_length_over_the_limit_is_refused_and_dropped(sqlite_store):
    app = create_app(sqlite_store, df_conf.load([]))
    status, headers, body, read = asgi_post(app, [(b'content-length', b'114689')],
                                            endless(b'x' * 4096))
    assert status == 413 and read <= DRAINED_CHUNKS
    assert headers[b'connection'] == b'close'
    assert body == {'NeutronError': {
        'type': 'HTTPRequestEntityTooLarge', 'detail': '',
        'message': 'Request is too large. Larger than max_request_body_size (114688).'}}


def test_a_declared_length_past_what_is_drained_is_refused_unread(sqlite_store):
    app = create_app(sqlite_store, df_conf.load([]))
    status, _, _, read = asgi_post(app, [(b'content-length', b'10000000000')],
                                   endless(b'x' * 4096))
    assert (status, read) == (413, 0)


def test_chunked_body_over_the_limit_is_refused_as_it_arrives(sqlite_store):
    app = create_app(sqlite_store, df_conf.load([]))
    status, headers, body, read = asgi_post(app, [(b'transfer-encoding', b'chunked')],
                                            endless(b'x' * 4096))
    assert status == 413 and read <= DRAINED_CHUNKS
    assert headers[b'connection'] == b'close'
    assert error_of_body(body) == ('HTTPRequestEntityTooLarge',
                                   'Request is too large. Larger than 114688.')


def error_of_body(body: dict) -> tuple:
    return body['NeutronError']['type'], body['NeutronError']['message']


def test_body_of_exactly_the_limit_is_read(client):
    text = json.dumps({'network': {'name': 'n'}})
    assert send(client, 'POST', '/v2.0/networks', text.ljust(114688)).status_code == 201
    refused(send(client, 'POST', '/v2.0/networks', text.ljust(114689)), 413)


def test_limit_follows_the_option(sqlite_store):
    conf = df_conf.load([])
    conf.set_override('max_request_body_size', 2048, group='api')
    with in_process(sqlite_store, conf) as client:
        assert send(client, 'POST', '/v2.0/networks', '{}'.ljust(2048)).status_code == 400
        error = refused(send(client, 'POST', '/v2.0/networks', '{}'.ljust(2049)), 413)
        assert error['message'] == (
            'Request is too large. Larger than max_request_body_size (2048).')


# A real server: what the connection does

@pytest.fixture
def serve():
    """serve(app): uvicorn serving ``app`` on a free loopback port, in a thread; its port."""
    servers = []

    def start(app) -> int:
        sock = socket.socket()
        sock.bind(('127.0.0.1', 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level='warning', access_log=False))
        thread = threading.Thread(target=server.run, kwargs={'sockets': [sock]}, daemon=True)
        thread.start()
        servers.append((server, thread, sock))
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), 'uvicorn did not start'
            time.sleep(0.01)
        return sock.getsockname()[1]

    yield start
    for server, thread, sock in servers:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _fails(*args, **kwargs):
    raise RuntimeError('a bug')


# A store every operation of which fails as no StoreError does: a bug somewhere.
Broken = type('Broken', (store_api.Store,),
              {name: _fails for name in store_api.Store.__abstractmethods__})


def test_unexpected_error_is_a_500_neutron_error_on_a_live_connection(serve, caplog):
    """Starlette answered, then re-raised, and uvicorn reset the keep-alive connection."""
    port = serve(create_app(Broken(), df_conf.load([])))
    connection = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    with caplog.at_level(logging.ERROR, logger='dragonflow.api.wire'):
        for path in ('/v2.0/networks', '/v2.0/ports', '/'):
            connection.request('GET', path)
            response = connection.getresponse()
            body = json.loads(response.read())
            if path == '/':
                assert response.status == 200   # the same connection still serves
                continue
            assert response.status == 500
            assert body == {'NeutronError': {
                'type': 'HTTPInternalServerError', 'detail': '',
                'message': 'Request Failed: internal server error while processing your '
                           'request.'}}
    failures = [r for r in caplog.records if r.name == 'dragonflow.api.wire']
    assert len(failures) == 2 and all(r.exc_info and r.exc_info[0] is RuntimeError
                                      for r in failures)
    connection.close()


def test_chunked_body_over_the_limit_through_a_server(serve, sqlite_store):
    port = serve(create_app(sqlite_store, df_conf.load([])))
    connection = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    chunks = (b'x' * 8192 for _ in range(64))   # 512 KiB, no Content-Length
    connection.request('POST', '/v2.0/networks', body=chunks, encode_chunked=True,
                       headers={'Content-Type': 'application/json'})
    response = connection.getresponse()
    assert response.status == 413
    assert response.getheader('connection') == 'close'
    assert json.loads(response.read())['NeutronError']['type'] == 'HTTPRequestEntityTooLarge'
    connection.close()


# The store's trouble is a 503

class Damaged(store_api.StoreError):
    """A store error no handler knows (a corrupted database, say)."""


@pytest.mark.parametrize('error', [
    store_api.Unavailable('database is locked'), Damaged('file is not a database'),
    store_api.Compacted(1, 5)],
    ids=lambda e: type(e).__name__)
def test_every_store_error_is_a_503_neutron_error(error):
    def fail(*args, **kwargs):
        raise error
    failing = type('Failing', (store_api.Store,),
                   {name: fail for name in store_api.Store.__abstractmethods__})()
    with in_process(failing) as client:
        for response in (client.get('/v2.0/networks'),
                         send(client, 'POST', '/v2.0/networks', {'network': {}}),
                         send(client, 'PUT', '/v2.0/ports/x', {'port': {'name': 'p'}}),
                         client.delete('/v2.0/routers/x')):
            assert response.status_code == 503, response.text
            assert error_of(response)['type'] == 'ServiceUnavailable'




def test_corrupted_sqlite_file_is_a_503(tmp_path):
    """It was a 500 (sqlite3.DatabaseError); the driver now raises a StoreError for it."""
    store = nb.connect(f'sqlite://{tmp_path / "nb.sqlite"}')
    with in_process(store) as client:
        created(send(client, 'POST', '/v2.0/networks', {'network': {}}))
        for name in os.listdir(tmp_path):   # the database and its WAL, overwritten in place
            path = tmp_path / name
            path.write_bytes(b'garbage!' * (path.stat().st_size // 8 + 1))
        for response in (client.get('/v2.0/networks'),
                         send(client, 'POST', '/v2.0/networks', {'network': {}})):
            assert response.status_code == 503, response.text
            assert error_of(response)['type'] == 'ServiceUnavailable'
    store.close()



# Found by the fuzzer (test_fuzz.py)

def test_automatic_ipv6_addresses_need_a_64_prefix(client, objects):
    """A SLAAC subnet on fd00::/127 was accepted, then its ports got EUI-64 addresses outside
    it (the store held an address on no subnet)."""
    net = objects['networks']['id']
    for modes in ({'ipv6_address_mode': 'slaac'}, {'ipv6_ra_mode': 'dhcpv6-stateless'}):
        error = refused(send(client, 'POST', '/v2.0/subnets', {'subnet': {
            'network_id': net, 'cidr': 'fd00::/127', 'ip_version': 6, **modes}}))
        assert (error['type'], error['message']) == (
            'InvalidInput', 'Invalid input for operation: Invalid CIDR fd00::/127 for IPv6 '
                            'address mode. OpenStack uses the EUI-64 address format, which '
                            'requires the prefix to be /64.')
    refused(send(client, 'POST', '/v2.0/subnets', {'subnet': {
        'network_id': net, 'cidr': 'fd00::/64', 'ip_version': 6, 'ipv6_address_mode': 'slaac',
        'ipv6_ra_mode': 'dhcpv6-stateful'}}))
    refused(send(client, 'POST', '/v2.0/subnets', {'subnet': {
        'network_id': net, 'cidr': 'fd00::/64', 'ip_version': 6, 'ipv6_address_mode': 'slaac',
        'enable_dhcp': False}}))
    created(send(client, 'POST', '/v2.0/subnets', {'subnet': {
        'network_id': net, 'cidr': 'fd00::/64', 'ip_version': 6, 'ipv6_address_mode': 'slaac'}}))


def test_a_client_gone_before_its_body_is_no_failure(sqlite_store, caplog):
    app = create_app(sqlite_store, df_conf.load([]))
    scope = asgi_scope('POST', '/v2.0/networks', [])
    sent = []

    async def receive():
        return {'type': 'http.disconnect'}

    async def send_(message):
        sent.append(message)

    with caplog.at_level(logging.ERROR):
        asyncio.run(app(scope, receive, send_))
    assert sent == [] and not caplog.records


def test_ports_only_on_networks_of_the_caller_or_shared(client):
    """An external network is seen by every project, but only its owner (or an admin) puts
    ports on it: others would use up its addresses (Neutron's create_port policy)."""
    other = {'X-Project-Id': 'other'}
    external = created(send(client, 'POST', '/v2.0/networks',
                            {'network': {'router:external': True}}, ADMIN))
    send(client, 'POST', '/v2.0/subnets', {'subnet': {
        'network_id': external['id'], 'cidr': '203.0.113.0/29', 'ip_version': 4}}, ADMIN)
    error = refused(send(client, 'POST', '/v2.0/ports',
                         {'port': {'network_id': external['id']}}, other), 403)
    assert error['message'] == 'rule:create_port is disallowed by policy'
    shared = created(send(client, 'POST', '/v2.0/networks', {'network': {'shared': True}},
                          ADMIN))
    created(send(client, 'POST', '/v2.0/ports', {'port': {'network_id': shared['id']}}, other))
    error = refused(send(client, 'POST', '/v2.0/ports', {'port': {
        'network_id': shared['id'], 'device_owner': 'network:dhcp'}}, other), 403)
    assert error['message'] == (
        '(rule:create_port and rule:create_port:device_owner) is disallowed by policy')
    created(send(client, 'POST', '/v2.0/ports', {'port': {'network_id': external['id']}},
                 ADMIN))


def test_a_port_may_not_name_another_projects_router(client, objects):
    """A port of the default project posing as an interface of another project's router."""
    theirs = created(send(client, 'POST', '/v2.0/routers', {'router': {}},
                          {'X-Project-Id': 'other'}))
    body = {'network_id': objects['networks']['id'], 'device_id': theirs['id'],
            'device_owner': 'network:router_interface'}
    error = refused(send(client, 'POST', '/v2.0/ports', {'port': body}), 409)
    assert error['type'] == 'DeviceIDNotOwnedByTenant'
    port = objects['ports']['id']
    refused(send(client, 'PUT', f'/v2.0/ports/{port}', {'port': {
        'device_id': theirs['id'], 'device_owner': 'network:router_interface'}}), 409)
    mine = objects['routers']['id']
    assert send(client, 'PUT', f'/v2.0/ports/{port}', {'port': {
        'device_id': mine, 'device_owner': 'network:router_interface'}}).status_code == 200


@pytest.mark.parametrize('address', [167772161, True, 10.5])
def test_addresses_are_text(client, objects, address):
    """ipaddress takes 167772161 for 10.0.0.1: an address given as a number passed the
    checks, then the stored model refused it (500)."""
    net, subnet = objects['networks']['id'], objects['subnets']['id']
    router = objects['routers']['id']
    send(client, 'PUT', f'/v2.0/routers/{router}/add_router_interface', {'subnet_id': subnet})
    route = {'destination': '10.9.0.0/24', 'nexthop': address}
    for method, path, body in (
            ('POST', 'subnets', {'subnet': {'network_id': net, 'cidr': '10.5.0.0/24',
                                            'ip_version': 4, 'host_routes': [route]}}),
            ('POST', 'subnets', {'subnet': {'network_id': net, 'cidr': '10.5.0.0/24',
                                            'ip_version': 4, 'dns_nameservers': [address]}}),
            ('POST', 'subnets', {'subnet': {'network_id': net, 'cidr': '10.5.0.0/24',
                                            'ip_version': 4, 'gateway_ip': address}}),
            ('PUT', f'subnets/{subnet}', {'subnet': {'allocation_pools': [
                {'start': address, 'end': '10.0.0.9'}]}}),
            ('PUT', f'routers/{router}', {'router': {'routes': [route]}}),
            ('PUT', f'routers/{router}/add_extraroutes', {'router': {'routes': [route]}}),
            ('POST', 'ports', {'port': {'network_id': net, 'fixed_ips': [
                {'ip_address': address}]}}),
            ('POST', 'ports', {'port': {'network_id': net, 'allowed_address_pairs': [
                {'ip_address': address}]}}),
            ('POST', 'security-group-rules', {'security_group_rule': {
                'security_group_id': objects['security_groups']['id'], 'direction': 'ingress',
                'remote_ip_prefix': address}})):
        refused(send(client, method, f'/v2.0/{path}', body))
