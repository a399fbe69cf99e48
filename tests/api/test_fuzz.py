"""Random Neutron-shaped requests on every write path of df-api, through the real app (issue #13).

A hypothesis state machine sends creates (single and bulk), updates and deletes of every
resource, router interfaces, extra routes and tags, as three callers (the default project, a
project named by header, an admin). Bodies are built from the attribute maps in
``definitions``: mostly plausible values (addresses inside the subnets that exist, ids of live
objects, MACs and addresses that collide), some hostile (lone surrogates, 1e400, NaN, deep
nesting, wrong types, unknown attributes). Every answer must be a success or a 4xx with a
NeutronError body; after every step the store must be consistent (``check_store``).

Deterministic (derandomized, no example database; the API's ids, random picks and clock
made repeatable) and bounded. For a longer search by hand: DF_FUZZ_EXAMPLES=N runs N state
machines instead of the default, DF_FUZZ_SHRINK=1 shrinks what it finds, DF_FUZZ_STATS=1
prints how often each route answered each status, DF_FUZZ_LOG=<file> writes every request.
"""
import contextlib
import ipaddress
import itertools
import json
import os
import random
import shutil
import tempfile
import time
import types
import uuid
from collections import Counter
from unittest import mock

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from dragonflow import conf as df_conf
from dragonflow import store as nb
from dragonflow.api import definitions, ipam
from dragonflow.api import txn as txns
from dragonflow.api.attributes import REQUIRED
from dragonflow.api.handlers import base as handlers_base
from dragonflow.api.handlers import networks as network_handlers
from dragonflow.api.handlers import security_groups as sg_handlers
from dragonflow.model import INTERNAL_MODELS, MODELS, SegmentAllocation
from dragonflow.model.objects import (
    DEVICE_OWNER_FLOATINGIP,
    DEVICE_OWNER_ROUTER_GATEWAY,
    DEVICE_OWNER_ROUTER_INTERFACE,
)

from .conftest import in_process

EXAMPLES = int(os.environ.get('DF_FUZZ_EXAMPLES', '150'))
STEPS = 80
# Shrinking a long failing run can take minutes: the failure's own message names the request
# that failed, and DF_FUZZ_SHRINK=1 asks for the shortest run that fails.
PHASES = [Phase.explicit, Phase.generate] + (
    [Phase.shrink] if os.environ.get('DF_FUZZ_SHRINK') == '1' else [])
HUGE = '"__1e400__"'   # stands for the JSON number 1e400 (json.dumps cannot write one)

CALLERS = [{}, {'X-Project-Id': 'other'}, {'X-Roles': 'admin', 'X-Project-Id': 'ops'}]
RESOURCES = list(definitions.RESOURCES.values())
PROJECTS = ['demo', 'other', 'ops', 'p3']
# Values a client may send, each list good ones first, then after ODD some that are close
# but wrong, which Api.pick draws seldom.
ODD = object()
CIDRS = ['10.0.0.0/24', '10.0.1.0/24', '10.0.0.0/16', '10.0.0.0/30', '10.0.0.0/31',
         '10.0.0.4/32', '192.168.0.0/28', '0.0.0.0/0', 'fd00::/64', 'fd00:0:0:1::/64',
         'fd00::/120', 'fd00::/127', '::/0', ODD, '10.0.0.1/24', '10.0.0.0', '10.0.0.0/33', 'x']
ADDRESSES = ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.254', '10.0.0.255', '10.0.0.0',
             '10.0.1.1', '10.0.1.2', '192.168.0.1', '192.168.0.14', '0.0.0.0',
             '255.255.255.255', 'fd00::1', 'fd00::2', 'fd00::ff', 'fd00:0:0:1::1', '::',
             ODD, '10.0.0.01', '10.0.0', 'fd00::1/64', '', 167772161, True]
PREFIXES = ['0.0.0.0/0', '::/0', '10.0.0.0/24', '10.0.0.5', 'fd00::/64', '10.0.0.5/24', ODD,
            '10.0.0.0/33', 'fd00::/129', 'x']
MACS = ['fa:16:3e:00:00:01', 'fa:16:3e:00:00:02', 'FA-16-3E-00-00-01', 'fa:16:3e:aa:bb:cc',
        ODD, '00:00:00:00:00:00', 'ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01', 'fa:16:3e:00:00']
PROTOCOLS = [None, 'tcp', 'udp', 'icmp', 'ipv6-icmp', 'icmpv6', 'any', 'TCP', '6', '17', 1,
             '58', '0', 0, '255', 'ip', 'sctp', 'gre', 'vrrp', '41', ODD, 256, 'bogus', -1]
PORTS = [None, None, 1, 22, 80, 255, 65535, '22', ODD, 0, 65536, -1, 22.5]
DEVICE_OWNERS = ['', '', 'compute:nova', DEVICE_OWNER_ROUTER_INTERFACE, 'network:dhcp',
                 'network:router_gateway', 'network:floatingip']
MODES = [None, None, None, 'slaac', 'dhcpv6-stateful', 'dhcpv6-stateless', ODD, 'bogus']
DESTINATIONS = ['10.9.0.0/24', '0.0.0.0/0', 'fd09::/64', '10.0.0.0/24', ODD, '10.9.0.1/24']
FLAGS = [True, False, 'true', 'False', '1', 'off', ODD, 'maybe', 2]
STRANGE_TEXT = ['bad\ud800', '\udfff', 'x' * 256, 'é' * 255, ' ', '\x00', 'default',
                'Default', '0', 'true', 'null', '{}', 'network:router_interface']

scalars = (st.none() | st.booleans() | st.integers() | st.integers(-2, 70000)
           | st.floats() | st.just(HUGE.strip('"')) | st.text(max_size=8)
           | st.sampled_from(STRANGE_TEXT + [v for v in ADDRESSES + CIDRS + MACS + PROTOCOLS
                                             if v is not ODD]))
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6) | st.sampled_from(STRANGE_TEXT),
                                      inner, max_size=3), max_leaves=6)
# JSON a careful client sends: finite numbers, valid text.
clean = st.recursive(st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def deep(levels: int):
    value = {}
    for _ in range(levels):
        value = {'a': value}
    return value


SPECIAL = [deep(40), [[[[[]]]]], HUGE.strip('"'), float('nan'), float('-inf'), None, {}, []]


def encode(body) -> str:
    return json.dumps(body).replace(HUGE, '1e400')


class Repeatable:
    """The API's ids, random picks and clock, made the same in every run: hypothesis replays
    a run to check it fails again, and its choices (which object, which address) depend on
    the answers the API gave."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.ids, self.seeds, self.ticks = itertools.count(1), itertools.count(1), itertools.count()

    def new_id(self) -> str:
        return str(uuid.UUID(int=next(self.ids)))

    def rng(self) -> random.Random:
        return random.Random(next(self.seeds))

    def now(self) -> str:
        return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(1_700_000_000 + next(self.ticks)))

    @contextlib.contextmanager
    def patched(self):
        with mock.patch.object(txns, 'new_id', self.new_id), \
                mock.patch.object(ipam, 'random', types.SimpleNamespace(Random=self.rng)), \
                mock.patch.object(network_handlers, 'random',
                                  types.SimpleNamespace(Random=self.rng)), \
                mock.patch.object(handlers_base, 'now', self.now), \
                mock.patch.object(sg_handlers, 'now', self.now):
            yield


REPEATABLE = Repeatable()
ANSWERS: Counter = Counter()   # (method, route, status) of every request sent
LOG = os.environ.get('DF_FUZZ_LOG')   # a file to write every request and answer to

callers = st.sampled_from([CALLERS[0]] + CALLERS)   # the default project most often
step = {'caller': callers, 'data': st.data(), 'rng': st.randoms(use_true_random=True)}


class Api(RuleBasedStateMachine):
    """One df-api over a new store; rules send requests, the invariant checks the store.

    Each step's choices of shape (which attributes, which flaw) come from a random.Random that
    hypothesis seeds, so they keep the odds written here; values come from hypothesis'
    strategies (text, junk)."""

    def __init__(self):
        super().__init__()
        REPEATABLE.reset()
        shm = '/dev/shm' if os.access('/dev/shm', os.W_OK) else None
        self.dir = tempfile.mkdtemp(prefix='df-fuzz-', dir=shm)
        self.store = nb.connect(f'sqlite://{self.dir}/nb.sqlite')
        conf = df_conf.load([])
        # Small ranges, so the fuzz reaches VLAN ids in use and taken flat networks.
        conf.set_override('network_vlan_ranges', ['physnet1:100:199', 'physnet2'],
                          group='ml2_type_vlan')
        conf.set_override('flat_networks', ['physnet1', 'physnet2'], group='ml2_type_flat')
        self.client = in_process(self.store, conf).__enter__()
        self.gone: list[str] = []   # ids of deleted objects: stale references are input too
        self.objects: dict[str, dict] = {}
        self.refresh()

    def teardown(self):
        try:
            for caller in CALLERS:
                for rdef in definitions.RESOURCES.values():
                    response = self.client.get(f'/v2.0/{rdef.url_segment}', headers=caller)
                    check_response('GET', rdef.url_segment, None, response)
                    assert response.status_code == 200, response.text
        finally:
            self.client.__exit__(None, None, None)
            self.store.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def begin(self, caller, data, rng) -> None:
        self.caller, self.data, self.rng = caller, data, rng

    # Choices

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, values: list):
        """One of ``values``: a good one, or one in 13 times one after ODD."""
        if ODD in values:
            cut = values.index(ODD)
            values = values[cut + 1:] if self.chance(1 / 13) else values[:cut]
        return self.rng.choice(values)

    def text(self) -> str:
        """Mostly valid text; now and then what no attribute may hold (surrogates, too long)."""
        if self.chance(0.1):
            return self.rng.choice(STRANGE_TEXT)
        return self.data.draw(st.text(max_size=20)) if self.chance(0.6) else \
            self.rng.choice(['', 'name', 'web', 'db'])

    def hostile(self):
        """Anything JSON can say, and a few things it cannot hold (1e400, NaN, deep nesting)."""
        return self.rng.choice(SPECIAL) if self.chance(0.25) else self.data.draw(junk)

    # What exists, read from the store itself

    def refresh(self) -> None:
        self.objects = {model.table: {r.id: model.from_doc(r.value, r.revision)
                                      for r in self.store.list(model.table)}
                        for model in MODELS.values()}

    def own_live(self, table: str) -> list[str]:
        """The live objects of ``table`` the caller may change (an admin: all)."""
        own = self.caller.get('X-Project-Id', 'demo')
        return [i for i in sorted(self.objects[table]) if 'X-Roles' in self.caller or
                getattr(self.objects[table][i], 'project_id', own) == own]

    def an_id(self, table: str) -> str:
        """Mostly a live object of ``table``; sometimes another kind's, a deleted one's or a
        random one (junk comes with the flaws of attributes())."""
        live = sorted(self.objects[table])
        mine = self.own_live(table)
        others = [i for t in self.objects.values() for i in t] + self.gone
        if mine and self.chance(0.7):
            return self.rng.choice(mine)
        if live and self.chance(0.6):
            return self.rng.choice(live)
        if others and self.chance(0.5):
            return self.rng.choice(others)
        return str(uuid.UUID(int=self.rng.getrandbits(128)))

    def an_external(self) -> str:
        """Mostly an external network's id."""
        external = sorted(i for i, n in self.objects['networks'].items() if n.external)
        return self.rng.choice(external) if external and self.chance(0.9) else \
            self.an_id('networks')

    def an_address(self) -> str:
        """An address of a subnet that exists (its first ones, its gateway: to collide), or
        one of ADDRESSES."""
        subnets = list(self.objects['subnets'].values())
        if not subnets or self.chance(0.2):
            return self.pick(ADDRESSES)
        subnet = self.rng.choice(subnets)
        if subnet.gateway_ip and self.chance(0.2):
            return subnet.gateway_ip
        first, last = ipam.host_range(subnet.cidr)
        return str(ipaddress.ip_address(self.rng.randint(first, min(last, first + 6))))

    def a_route(self) -> dict:
        return {'destination': self.pick(DESTINATIONS), 'nexthop': self.an_address()}

    def some(self, make, most: int = 3) -> list:
        return [make() for _ in range(self.rng.randint(0, most))]

    def a_project(self) -> str:
        """Mostly the caller's own project (another one only an admin or noauth may name)."""
        own = self.caller.get('X-Project-Id', 'demo')
        return own if self.chance(0.7) else self.rng.choice(PROJECTS)

    # Plausible values, by attribute name (names mean the same in every resource)

    def plausible(self, name: str):
        pick, chance, some = self.pick, self.chance, self.some
        cases = {
            'name': self.text, 'description': self.text,
            'device_id': lambda: self.an_id('routers') if chance(0.3) else self.text(),
            'tags': lambda: some(self.text),
            'admin_state_up': lambda: pick(FLAGS), 'shared': lambda: pick(FLAGS),
            'enable_dhcp': lambda: pick(FLAGS), 'router:external': lambda: pick(FLAGS),
            'port_security_enabled': lambda: pick(FLAGS),
            'mtu': lambda: pick([68, 1450, 1500, 9000, 65535, '1400', ODD, 67, 65536, 1.5e3]),
            'provider:network_type': lambda: pick(
                [None, 'vxlan', 'geneve', 'flat', 'vlan', 'local', ODD, 'gre']),
            'provider:physical_network': lambda: pick([None, 'physnet1', 'physnet2', ODD,
                                                       'physnet3', 'x' * 65]),
            'provider:segmentation_id': lambda: pick([None, 1, 100, 101, 4094, 16777215, ODD,
                                                      16777216, -1, 2 ** 32]),
            'network_id': lambda: self.an_id('networks'),
            'ip_version': lambda: pick([4, 6, '4', ODD, 5, '6.0']),
            'cidr': lambda: pick(CIDRS),
            'gateway_ip': lambda: None if chance(0.2) else self.an_address(),
            'allocation_pools': lambda: None if chance(0.2) else some(
                lambda: {'start': self.an_address(), 'end': self.an_address()}, 2),
            'dns_nameservers': lambda: some(lambda: pick(ADDRESSES), 2),
            'host_routes': lambda: some(self.a_route, 2),
            'routes': lambda: some(self.a_route),
            'ipv6_ra_mode': lambda: pick(MODES), 'ipv6_address_mode': lambda: pick(MODES),
            'mac_address': lambda: pick(MACS),
            'fixed_ips': lambda: some(lambda: {
                key: value for key, value in (('subnet_id', self.an_id('subnets')),
                                              ('ip_address', self.an_address()))
                if chance(0.7)}),
            'device_owner': lambda: pick(DEVICE_OWNERS),
            'security_groups': lambda: None if chance(0.2) else some(
                lambda: self.an_id('security_groups'), 2),
            'allowed_address_pairs': lambda: None if chance(0.2) else some(lambda: {
                'ip_address': self.an_address() if chance(0.7) else pick(PREFIXES),
                **({'mac_address': pick(MACS)} if chance(0.3) else {})}),
            'binding:host_id': lambda: pick(['', 'compute-1', 'ch2']),
            'binding:profile': lambda: None if chance(0.2) else self.data.draw(
                st.dictionaries(st.text(max_size=5), clean, max_size=3)),
            'binding:vnic_type': lambda: pick(['normal', 'direct', ODD, 'bogus']),
            'external_gateway_info': lambda: pick([None, {}, {
                'network_id': self.an_external()}, {
                'network_id': self.an_external(), 'enable_snat': pick(FLAGS),
                'external_fixed_ips': some(lambda: {
                    key: value for key, value in (('subnet_id', self.an_id('subnets')),
                                                  ('ip_address', self.an_address()))
                    if chance(0.7)}, 2)}, ODD, {'network_id': self.an_id('networks')},
                {'enable_snat': True}, {'network_id': self.an_external(), 'x': 1}]),
            'floating_network_id': lambda: self.an_external() if chance(0.8) else
            self.an_id('networks'),
            'floating_ip_address': self.an_address, 'fixed_ip_address': self.an_address,
            'subnet_id': lambda: self.an_id('subnets'),
            'port_id': lambda: None if chance(0.2) else self.an_id('ports'),
            'security_group_id': lambda: self.an_id('security_groups'),
            'remote_group_id': lambda: None if chance(0.5) else self.an_id('security_groups'),
            'direction': lambda: pick(['ingress', 'egress', ODD, 'up']),
            'protocol': lambda: pick(PROTOCOLS),
            'port_range_min': lambda: pick(PORTS), 'port_range_max': lambda: pick(PORTS),
            'ethertype': lambda: pick(['IPv4', 'IPv6', 'ipv4', ODD, 'IPv5']),
            'remote_ip_prefix': lambda: None if chance(0.3) else pick(PREFIXES),
        }
        return cases[name]() if name in cases else self.hostile()

    def attributes(self, rdef, verb: str) -> dict:
        """A body for ``rdef``: what a POST must give and a few attributes more that ``verb``
        may set, plausible values; one body in five with one thing wrong (a hostile value, an
        unknown or read-only attribute, a required one missing)."""
        body = {}
        for name, attr in rdef.attributes.items():
            if not (attr.allow_post if verb == 'POST' else attr.allow_put) or \
                    name in ('tenant_id', 'project_id'):
                continue
            if verb == 'POST' and attr.default is REQUIRED:
                odds = 1
            elif attr.admin_only and 'X-Roles' not in self.caller:
                odds = 0.03   # a 403 whenever set: seldom, or little else would pass
            else:
                odds = 0.15
            if self.chance(odds):
                body[name] = self.plausible(name)
        if verb == 'POST' and self.chance(0.15):   # the project, named once or twice
            project = self.a_project()
            for name in self.rng.choice([['tenant_id'], ['project_id'],
                                         ['tenant_id', 'project_id']]):
                body[name] = project
        if 'cidr' in body and body.get('ip_version') in (4, 6) and self.chance(0.8):
            body['ip_version'] = 6 if ':' in body['cidr'] else 4
        if self.chance(0.2):
            flaw = self.rng.choice(['hostile', 'unknown', 'missing'])
            if flaw == 'hostile':
                body[self.rng.choice(sorted(rdef.attributes))] = self.hostile()
            elif flaw == 'unknown':
                body[self.text()] = self.hostile()
            elif body:
                del body[self.rng.choice(sorted(body))]
        return body

    # Sending

    def send(self, method: str, path: str, body, as_is: bool = False):
        if body is not None and not as_is and self.chance(1 / 50):
            body = self.hostile()   # a body of the wrong shape altogether
        text = None if body is None else encode(body)
        response = self.client.request(method, path, content=text, headers={
            'content-type': 'application/json', **self.caller})
        check_response(method, path, text, response)
        parts = path.split('/')   # '', 'v2.0', collection, id, action or 'tags', tag
        route = '/'.join(parts[:3] + ['{id}'] * (len(parts) > 3) + parts[4:5]
                         + ['{tag}'] * (len(parts) > 5))
        ANSWERS[(method, route, response.status_code)] += 1
        if LOG:
            with open(LOG, 'a') as log:
                log.write(f'{response.status_code} {method} {path} {self.caller} {text!r:.400} '
                          f'{response.text!r:.400}\n')
        self.refresh()
        return response

    # Rules: every write path. One create rule per resource, so creates come most often.

    @initialize(**step)
    def topology(self, caller, data, rng):
        """Something to work on from the first step: a network of the default project with
        a subnet or two, a router and a security group."""
        self.begin(CALLERS[0], data, rng)
        net = self.send('POST', '/v2.0/networks', {'network': {'name': 'net'}}, True)
        for cidr in self.rng.sample([c for c in CIDRS[:CIDRS.index(ODD)] if '/0' not in c],
                                    self.rng.randint(1, 2)):
            self.send('POST', '/v2.0/subnets', {'subnet': {
                'network_id': net.json()['network']['id'], 'cidr': cidr,
                'ip_version': 6 if ':' in cidr else 4}}, True)
        self.send('POST', '/v2.0/ports', {'port': {'network_id': net.json()['network']['id']}},
                  True)
        self.send('POST', '/v2.0/routers', {'router': {'name': 'router'}}, True)
        self.send('POST', '/v2.0/security-groups', {'security_group': {'name': 'group'}}, True)
        # An external network (the admin's) with a subnet, for gateways and floating IPs.
        self.caller = CALLERS[2]
        public = self.send('POST', '/v2.0/networks', {'network': {
            'name': 'public', 'router:external': True}}, True).json()['network']
        self.send('POST', '/v2.0/subnets', {'subnet': {
            'network_id': public['id'], 'cidr': '192.168.0.0/28', 'ip_version': 4}}, True)
        self.caller = CALLERS[0]
        self.send('POST', '/v2.0/floatingips', {'floatingip': {
            'floating_network_id': public['id']}}, True)

    @rule(**step)
    def create_network(self, caller, data, rng):
        self.create(caller, data, rng, definitions.NETWORK)

    @rule(**step)
    def create_subnet(self, caller, data, rng):
        self.create(caller, data, rng, definitions.SUBNET)

    @rule(**step)
    def create_port(self, caller, data, rng):
        self.create(caller, data, rng, definitions.PORT)

    @rule(**step)
    def create_router(self, caller, data, rng):
        self.create(caller, data, rng, definitions.ROUTER)

    @rule(**step)
    def create_security_group(self, caller, data, rng):
        self.create(caller, data, rng, definitions.SECURITY_GROUP)

    @rule(**step)
    def create_security_group_rule(self, caller, data, rng):
        self.create(caller, data, rng, definitions.SECURITY_GROUP_RULE)

    @rule(**step)
    def create_floatingip(self, caller, data, rng):
        self.create(caller, data, rng, definitions.FLOATINGIP)

    def create(self, caller, data, rng, rdef):
        """One object, or (one time in four) a bulk create of one to three."""
        self.begin(caller, data, rng)
        if self.chance(0.25):
            body = {rdef.collection: self.some(lambda: self.attributes(rdef, 'POST'))}
        else:
            body = {rdef.name: self.attributes(rdef, 'POST')}
        self.send('POST', f'/v2.0/{rdef.url_segment}', body)

    @rule(rdef=st.sampled_from(RESOURCES), **step)
    def update(self, rdef, caller, data, rng):
        self.begin(caller, data, rng)
        renamable = 'name' in rdef.attributes and rdef.attributes['name'].allow_put
        mine = self.own_live(rdef.collection)
        if renamable and mine and self.chance(0.2):
            # A plain rename of one's own object: a port's many updatable attributes make a
            # random body that passes every check rare, and how rare depended on the
            # search's path (which differed with what the process had imported).
            target = self.rng.choice(mine)
            body = {rdef.name: {'name': f'renamed-{self.rng.randrange(100)}'}}
        else:
            target = self.an_id(rdef.collection)
            body = {rdef.name: self.attributes(rdef, 'PUT')}
        self.send('PUT', f'/v2.0/{rdef.url_segment}/{_path(target)}', body)

    @rule(rdef=st.sampled_from(RESOURCES), **step)
    def delete(self, rdef, caller, data, rng):
        """A delete; for a network or subnet, half the time after its ports (as a client
        tears down: router interfaces through their router)."""
        self.begin(caller, data, rng)
        id = self.an_id(rdef.collection)
        if rdef in (definitions.NETWORK, definitions.SUBNET) and self.chance(0.5):
            for port in list(self.objects['ports'].values()):
                if port.network_id == id or id in {f.subnet_id for f in port.fixed_ips}:
                    if port.device_owner == DEVICE_OWNER_ROUTER_INTERFACE:
                        self.send('PUT', f'/v2.0/routers/{port.device_id}/'
                                         'remove_router_interface', {'port_id': port.id}, True)
                    elif port.device_owner == DEVICE_OWNER_ROUTER_GATEWAY:
                        self.send('PUT', f'/v2.0/routers/{port.device_id}', {'router': {
                            'external_gateway_info': None}}, True)
                    elif port.device_owner == DEVICE_OWNER_FLOATINGIP:
                        self.send('DELETE', f'/v2.0/floatingips/{port.device_id}', None)
                    else:
                        self.send('DELETE', f'/v2.0/ports/{port.id}', None)
        if self.send('DELETE', f'/v2.0/{rdef.url_segment}/{_path(id)}', None).status_code == 204:
            self.gone.append(id)

    @rule(**step)
    def floating_ip_association(self, caller, data, rng):
        """A floating IP (re)associated with a port, or disassociated, as clients do."""
        self.begin(caller, data, rng)
        body = {'port_id': None if self.chance(0.3) else self.an_id('ports')}
        if self.chance(0.2):
            body['fixed_ip_address'] = self.an_address()
        self.send('PUT', f'/v2.0/floatingips/{_path(self.an_id("floatingips"))}',
                  {'floatingip': body})

    @rule(add=st.booleans(), **step)
    def router_interface(self, add, caller, data, rng):
        self.begin(caller, data, rng)
        info = {}
        if self.chance(0.6):
            info['subnet_id'] = self.an_id('subnets')
        if self.chance(0.4) or not info:
            info['port_id'] = self.an_id('ports')
        action = 'add_router_interface' if add else 'remove_router_interface'
        self.send('PUT', f'/v2.0/routers/{_path(self.an_id("routers"))}/{action}', info)

    @rule(add=st.booleans(), **step)
    def extra_routes(self, add, caller, data, rng):
        self.begin(caller, data, rng)
        body = {'router': {'routes': self.some(self.a_route)}}
        action = 'add_extraroutes' if add else 'remove_extraroutes'
        self.send('PUT', f'/v2.0/routers/{_path(self.an_id("routers"))}/{action}', body)

    @rule(rdef=st.sampled_from(RESOURCES), how=st.sampled_from(['set', 'add', 'remove', 'clear']),
          **step)
    def tags(self, rdef, how, caller, data, rng):
        self.begin(caller, data, rng)
        tagged = sorted(i for i, o in self.objects[rdef.collection].items() if o.tags)
        id = self.rng.choice(tagged) if how in ('remove', 'clear') and tagged and \
            self.chance(0.8) else \
            self.an_id(rdef.collection)
        base = f'/v2.0/{rdef.url_segment}/{_path(id)}/tags'
        current = self.objects[rdef.collection].get(id)
        tag = self.rng.choice(current.tags) if current and current.tags and self.chance(0.5) \
            else self.text()
        if how == 'set':
            answer = self.send('PUT', base, {'tags': self.some(self.text)} if self.chance(0.9)
                               else self.hostile())
            if answer.status_code == 200 and self.chance(0.5):   # and cleared again
                self.send('DELETE', base, None)
        elif how in ('add', 'remove') and _path(tag) and tag not in ('.', '..'):
            answer = self.send('PUT' if how == 'add' else 'DELETE', f'{base}/{_path(tag)}', None)
            if answer.status_code == 201 and self.chance(0.5):   # and off again
                self.send('DELETE', f'{base}/{_path(tag)}', None)
        elif how == 'clear':
            self.send('DELETE', base, None)

    @rule(rdef=st.sampled_from(RESOURCES), **step)
    def list_or_show(self, rdef, caller, data, rng):
        """Reads too answer whatever the query says: filters on any attribute (or none),
        fields, sorting, paging."""
        self.begin(caller, data, rng)
        names = sorted(rdef.attributes) + ['tags-any', 'not-tags', 'fixed_ips', 'ip_address',
                                           'fields', 'sort_key', 'sort_dir', 'limit', 'marker',
                                           'page_reverse', self.text()]
        params = []
        for _ in range(self.rng.randint(0, 4)):
            name = self.rng.choice(names)
            value = self.rng.choice([self.text(), str(self.plausible(name)) if name in
                                     rdef.attributes else 'x', self.an_id(rdef.collection),
                                     self.rng.choice(sorted(rdef.attributes)), '-1', '1e400',
                                     'desc', 'ip_address=10.0.0.1', '=', ''])
            params.append((name, value))
        query = '&'.join(f'{_path(k)}={_path(v)}' for k, v in params)
        path = f'/v2.0/{rdef.url_segment}'
        if self.chance(0.3):
            path += f'/{_path(self.an_id(rdef.collection))}'
        response = self.client.get(f'{path}?{query}', headers=self.caller)
        check_response('GET', f'{path}?{query}', None, response)

    @invariant()
    def consistent(self):
        check_store(self.store)


def _path(value) -> str:
    """``value`` as one URL path segment (ids may be junk too)."""
    text = value if isinstance(value, str) else json.dumps(value)
    return ''.join(c if c.isascii() and (c.isalnum() or c in '-_.~') else
                   ''.join(f'%{b:02X}' for b in c.encode('utf-8', 'surrogatepass'))
                   for c in text)


# 5xx answers Neutron gives for the state of the deployment, not for the input: no segment
# left for a network (a VLAN physnet without a range of its own, say).
DEPLOYMENT_ANSWERS = {(503, 'NoNetworkAvailable')}


def check_response(method: str, path: str, body, response) -> None:
    """Success, or a 4xx whose body is exactly a NeutronError (or one of Neutron's 5xx
    DEPLOYMENT_ANSWERS); JSON (ASCII) either way."""
    where = f'{method} {path} {body!r:.2000} -> {response.status_code} {response.text:.2000}'
    if response.status_code >= 500:
        assert (response.status_code,
                response.json().get('NeutronError', {}).get('type')) in DEPLOYMENT_ANSWERS, where
    if response.status_code == 204 or (response.status_code == 201 and method == 'PUT'):
        assert not response.content, where   # no content; a tag added (201) has none either
        return
    assert response.content.isascii(), where
    answer = response.json()
    if response.status_code >= 400:
        assert list(answer) == ['NeutronError'], where
        error = answer['NeutronError']
        assert sorted(error) == ['detail', 'message', 'type'], where
        assert isinstance(error['type'], str) and isinstance(error['message'], str), where


def check_store(store) -> None:
    """What must hold of the store whatever was asked of the API."""
    _, records = store.snapshot()
    tables = {}
    for record in records:
        model = MODELS.get(record.table) or INTERNAL_MODELS.get(record.table)
        assert model is not None, record
        tables.setdefault(record.table, {})[record.id] = model.from_doc(record.value)
    networks, subnets, ports, routers, groups, rules, ip_allocations, mac_allocations = (
        tables.get(t, {}) for t in ('networks', 'subnets', 'ports', 'routers',
                                    'security_groups', 'security_group_rules',
                                    'ip_allocations', 'mac_allocations'))
    assert not tables.get('fences'), 'a delete left its fence behind'

    for table in ('networks', 'ports', 'routers', 'security_groups', 'security_group_rules'):
        keys = Counter(o.key for o in tables.get(table, {}).values())
        assert all(n == 1 for n in keys.values()), (table, keys)

    for subnet in subnets.values():
        assert subnet.network_id in networks, subnet
        cidr = ipaddress.ip_network(subnet.cidr)
        for other in subnets.values():
            if other.id != subnet.id and other.network_id == subnet.network_id:
                assert not cidr.overlaps(ipaddress.ip_network(other.cidr)), (subnet, other)
        first, last = ipam.host_range(subnet.cidr)
        for pool in subnet.allocation_pools:
            start, end = (int(ipaddress.ip_address(a)) for a in (pool.start, pool.end))
            assert first <= start <= end <= last, subnet

    holders = Counter()
    for port in ports.values():
        assert port.network_id in networks, port
        allocation = mac_allocations.get(f'{port.network_id}/{port.mac_address}')
        assert allocation is not None and allocation.port_id == port.id, port
        for fixed in port.fixed_ips:
            subnet = subnets.get(fixed.subnet_id)
            assert subnet is not None and subnet.network_id == port.network_id, port
            assert ipam.is_host_ip(subnet.cidr, fixed.ip_address), port
            allocation = ip_allocations.get(f'{fixed.subnet_id}/{fixed.ip_address}')
            assert allocation is not None and allocation.port_id == port.id, port
            holders[(fixed.subnet_id, fixed.ip_address)] += 1
        assert set(port.security_groups) <= set(groups), port
    assert all(n == 1 for n in holders.values()), holders

    for allocation in ip_allocations.values():
        port = ports.get(allocation.port_id)
        assert port is not None, allocation   # no reservation outlives its port
        assert (allocation.subnet_id, allocation.ip_address) in {
            (f.subnet_id, f.ip_address) for f in port.fixed_ips}, allocation
        assert allocation.network_id == port.network_id, allocation
    for allocation in mac_allocations.values():
        port = ports.get(allocation.port_id)
        assert port is not None and port.mac_address == allocation.mac_address, allocation
        assert port.network_id == allocation.network_id, allocation

    for router in routers.values():
        for interface in router.interfaces:
            port = ports.get(interface.port_id)
            assert port is not None and interface.subnet_id in subnets, router
            assert (port.device_id, port.device_owner) == (
                router.id, DEVICE_OWNER_ROUTER_INTERFACE), (router, port)
            assert interface.subnet_id in {f.subnet_id for f in port.fixed_ips}, (router, port)
        connected = [ipaddress.ip_network(subnets[i.subnet_id].cidr) for i in router.interfaces]
        if router.gateway_port_id is not None:
            gateway = ports.get(router.gateway_port_id)
            assert gateway is not None and (gateway.device_id, gateway.device_owner) == (
                router.id, DEVICE_OWNER_ROUTER_GATEWAY), (router, gateway)
            assert networks[gateway.network_id].external, router
            info = router.external_gateway_info
            assert info is not None and info.network_id == gateway.network_id, router
            assert [f.model_dump() for f in info.external_fixed_ips] == [
                f.model_dump() for f in gateway.fixed_ips], (router, gateway)
            connected += [ipaddress.ip_network(subnets[f.subnet_id].cidr)
                          for f in gateway.fixed_ips]
        else:
            assert router.external_gateway_info is None, router
        for route in router.routes:
            assert any(ipaddress.ip_address(route.nexthop) in c for c in connected), router
    # (A port may claim to be a router's interface without being one: Neutron lets a client
    # set device_owner and device_id so, on its own router, and routes only by the router.)

    # Every gateway and FIP port df-api made (no project) belongs to one that exists.
    for port in ports.values():
        if port.device_owner == DEVICE_OWNER_ROUTER_GATEWAY and port.project_id == '':
            assert routers.get(port.device_id) and \
                routers[port.device_id].gateway_port_id == port.id, port
        if port.device_owner == DEVICE_OWNER_FLOATINGIP and port.project_id == '':
            fip = tables.get('floatingips', {}).get(port.device_id)
            assert fip is not None and fip.floating_port_id == port.id, port
    for fip in tables.get('floatingips', {}).values():
        port = ports.get(fip.floating_port_id)
        assert port is not None and port.network_id == fip.floating_network_id, fip
        assert fip.floating_ip_address in {f.ip_address for f in port.fixed_ips}, fip
        if fip.port_id is not None:
            fixed = ports.get(fip.port_id)
            assert fixed is not None, fip   # a deleted port takes its association along
            assert fip.fixed_ip_address in {f.ip_address for f in fixed.fixed_ips}, fip
            router = routers.get(fip.router_id)
            assert router is not None and router.external_gateway_info is not None and \
                router.external_gateway_info.network_id == fip.floating_network_id, fip
            assert any(i.subnet_id in {f.subnet_id for f in fixed.fixed_ips}
                       for i in router.interfaces), fip
        else:
            assert fip.fixed_ip_address is None and fip.router_id is None, fip
        pair = (fip.port_id, fip.fixed_ip_address, fip.floating_network_id)
        assert fip.port_id is None or sum(
            (f.port_id, f.fixed_ip_address, f.floating_network_id) == pair
            for f in tables['floatingips'].values()) == 1, fip

    segments = tables.get('segment_allocations', {})
    for network in networks.values():   # one segment each, held by its allocation
        if network.network_type is not None:
            allocation = segments.get(SegmentAllocation.make_id(
                network.network_type, network.physical_network, network.segmentation_id))
            assert allocation is not None and allocation.network_id == network.id, network
    for allocation in segments.values():
        assert allocation.network_id in networks, allocation   # released with its network

    for sg_rule in rules.values():
        assert sg_rule.security_group_id in groups, sg_rule
        assert sg_rule.remote_group_id is None or sg_rule.remote_group_id in groups, sg_rule
    for project, record in tables.get('default_security_groups', {}).items():
        group = groups.get(record.security_group_id)
        assert group is not None and group.project_id == project, record
    defaults = Counter(g.project_id for g in groups.values() if g.name == 'default')
    assert all(n == 1 for n in defaults.values()), defaults


def write_routes() -> set[tuple[str, str]]:
    """Every write path of df-api, as send() names routes."""
    routes = {('PUT', '/v2.0/routers/{id}/' + action) for action in (
        'add_router_interface', 'remove_router_interface', 'add_extraroutes',
        'remove_extraroutes')}
    for rdef in definitions.RESOURCES.values():
        one = f'/v2.0/{rdef.url_segment}/{{id}}'
        routes |= {('POST', f'/v2.0/{rdef.url_segment}'), ('PUT', one), ('DELETE', one),
                   ('PUT', one + '/tags'), ('DELETE', one + '/tags'),
                   ('PUT', one + '/tags/{tag}'), ('DELETE', one + '/tags/{tag}')}
    return routes


def test_every_write_path_answers_and_keeps_the_store_consistent():
    ANSWERS.clear()
    run = Api.TestCase
    run.settings = settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                            derandomize=True, database=None, phases=PHASES,
                            suppress_health_check=list(HealthCheck))
    with REPEATABLE.patched():
        run().runTest()
    if os.environ.get('DF_FUZZ_STATS'):
        for (method, route, status), count in sorted(ANSWERS.items()):
            print(f'{count:6} {status} {method} {route}')
    # The search reached every write path, and got past its checks to a success on each
    # (tags, the same code for every resource, on one resource or another).
    routes = {(method, _any_tags(route)) for method, route in write_routes()}
    succeeded = {(method, _any_tags(route)) for method, route, status in ANSWERS if status < 300}
    assert not routes - succeeded, sorted(routes - succeeded)


def _any_tags(route: str) -> str:
    parts = route.split('/')
    return '/'.join(parts[:2] + ['*'] + parts[3:]) if 'tags' in parts else route


def test_store_checks_can_fail(sqlite_store):
    """check_store sees a reservation whose port is gone (so a pass means something)."""
    from dragonflow.model import IPAllocation
    check_store(sqlite_store)
    stray = IPAllocation(id='s/10.0.0.9', subnet_id='s', network_id='n',
                         ip_address='10.0.0.9', port_id=str(uuid.uuid4()))
    sqlite_store.commit([nb.api.Put(stray.table, stray.id, stray.to_doc())])
    with pytest.raises(AssertionError, match='IPAllocation'):
        check_store(sqlite_store)
