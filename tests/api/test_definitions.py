"""Checks every resource definition passes, as neutron-lib's shared definition test does."""
import pytest
from fastapi.testclient import TestClient

from dragonflow import conf as df_conf
from dragonflow import store as nb
from dragonflow.api import definitions, errors
from dragonflow.api.attributes import REQUIRED, UNSET
from dragonflow.api.handlers.base import aliases
from dragonflow.api.server import create_app
from dragonflow.api.service import Service

STANDARD = {'id', 'name', 'description', 'tenant_id', 'project_id', 'tags', 'created_at',
            'updated_at', 'revision_number'}
# Stored fields only the data plane uses: never shown by the API.
DATA_PLANE_ONLY = {'key', 'interfaces', 'gateway_port_id', 'floating_port_id',
                   'status_source'}  # who reports the status: the API's, not the client's
# Neutron's rules and floating IPs have no name (the stored objects keep an empty one).
UNNAMED = (definitions.SECURITY_GROUP_RULE, definitions.FLOATINGIP)
RESOURCES = list(definitions.RESOURCES.values())


@pytest.mark.parametrize('rdef', RESOURCES, ids=lambda r: r.name)
def test_standard_attributes(rdef):
    unnamed = rdef in UNNAMED
    assert STANDARD - ({'name'} if unnamed else set()) <= set(rdef.attributes)
    assert not rdef.attributes['id'].allow_post and not rdef.attributes['id'].allow_put


@pytest.mark.parametrize('rdef', RESOURCES, ids=lambda r: r.name)
def test_defaults_are_valid_values(rdef):
    for name, attr in rdef.attributes.items():
        if not attr.allow_post or attr.default in (REQUIRED, UNSET):
            continue
        value = attr.convert(attr.default) if attr.convert else attr.default
        assert not (attr.validate and attr.validate(value)), name


@pytest.mark.parametrize('rdef', RESOURCES, ids=lambda r: r.name)
def test_writable_attributes_are_stored(rdef):
    """Whatever a client may set is kept in the stored object (nothing silently dropped)."""
    model = Service(None, df_conf.load([])).handlers[rdef.collection].model
    # Input-only attributes (a floating IP's subnet_id) choose, they are not kept.
    writable = {n for n, a in rdef.attributes.items()
                if (a.allow_post or a.allow_put) and a.visible}
    assert writable - {'tenant_id'} <= aliases(model)
    unnamed = {'name'} if rdef in UNNAMED else set()
    assert aliases(model) - set(rdef.attributes) <= DATA_PLANE_ONLY | unnamed


@pytest.fixture
def client(tmp_path):
    store = nb.connect(f'sqlite://{tmp_path / "nb.sqlite"}')
    with TestClient(create_app(store)) as client:
        yield client
    store.close()


ADMIN = {'X-Roles': 'admin'}


def test_responses_show_exactly_the_visible_attributes(client):
    """An admin sees every visible attribute; others all but the admin-only ones."""
    net = client.post('/v2.0/networks', json={'network': {'router:external': True}},
                      headers=ADMIN).json()['network']
    subnet = client.post('/v2.0/subnets', json={'subnet': {
        'network_id': net['id'], 'cidr': '10.0.0.0/24', 'ip_version': 4}}).json()['subnet']
    port = client.post('/v2.0/ports', json={'port': {'network_id': net['id']}}).json()['port']
    router = client.post('/v2.0/routers', json={'router': {}}, headers=ADMIN).json()['router']
    group, = client.get('/v2.0/security-groups').json()['security_groups']  # the default
    rule = group['security_group_rules'][0]
    fip = client.post('/v2.0/floatingips', json={'floatingip': {
        'floating_network_id': net['id']}}).json()['floatingip']
    for rdef, shown in zip(RESOURCES, (net, subnet, port, router, group, rule, fip),
                           strict=True):
        assert list(shown) == rdef.visible()
        url = f'/v2.0/{rdef.url_segment}'
        for headers in (ADMIN, {}):
            listed = [o for o in client.get(url, headers=headers).json()[rdef.collection]
                      if o['id'] == shown['id']]
            one = client.get(f'{url}/{shown["id"]}', headers=headers).json()[rdef.name]
            assert listed == [one]
            hidden = [n for n in rdef.visible() if rdef.attributes[n].admin_only_visible]
            assert list(one) == [n for n in rdef.visible() if headers or n not in hidden]


def _unreachable(*args, **kwargs):
    raise nb.api.Unavailable('database is locked')


# A store every operation of which fails as unreachable.
Unreachable = type('Unreachable', (nb.api.Store,),
                   {name: _unreachable for name in nb.api.Store.__abstractmethods__})


def test_store_unavailable_is_503_neutron_error():
    with TestClient(create_app(Unreachable(), df_conf.load([]))) as client:
        for response in (client.get('/v2.0/networks'),
                         client.post('/v2.0/networks', json={'network': {'name': 'n'}})):
            assert response.status_code == 503
            assert response.json()['NeutronError']['type'] == 'ServiceUnavailable'


def test_errors_render_as_neutron_errors():
    error = errors.NetworkNotFound(net_id='x')
    assert (error.status, error.body()) == (404, {'NeutronError': {
        'type': 'NetworkNotFound', 'message': 'Network x could not be found.', 'detail': ''}})
    assert errors.SubnetInUse(subnet_id='s').msg == (
        'Unable to complete operation on subnet s: One or more ports have an IP allocation '
        'from this subnet.')
