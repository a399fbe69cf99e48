"""Real df-api processes for the API tests, and openstacksdk / CLI clients pointed at them.

Each server is ``df-api --config-file <tmp ini>`` on a free loopback port with a sqlite store
in a temporary directory; it is killed on teardown even when the test fails. Its log is kept
next to the store and printed when it does not start.
"""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import openstack
import pytest

VENV_BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0


def pytest_configure(config):
    # openstacksdk and starlette's test client warn about their own future API changes.
    for category in ('DeprecationWarning', 'PendingDeprecationWarning'):
        config.addinivalue_line('filterwarnings', f'ignore::{category}:openstack.*')
    config.addinivalue_line('filterwarnings', 'ignore:Using `httpx` with:UserWarning')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class DfApi:
    """One df-api process."""

    def __init__(self, workdir: Path, store_url: str, name: str = 'df-api',
                 config: dict = None):
        """``config``: more options, {group: {option: value}} ([api] ones too)."""
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.config = workdir / f'{name}.ini'
        self.log = workdir / f'{name}.log'
        groups = {'store': {'url': store_url},
                  'api': {'bind_port': self.port, 'access_log': 'false'}}
        for group, options in (config or {}).items():
            groups.setdefault(group, {}).update(options)
        self.config.write_text(''.join(
            f'[{group}]\n' + ''.join(f'{k} = {v}\n' for k, v in options.items()) + '\n'
            for group, options in groups.items()))
        with open(self.log, 'wb') as log:
            self.proc = subprocess.Popen([str(VENV_BIN / 'df-api'), '--config-file',
                                          str(self.config)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self) -> 'DfApi':
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + '/', timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f'df-api did not start:\n{self.log.read_text()}')

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def errors_logged(self) -> str:
        """Tracebacks in the log: a server must never fail unexpectedly."""
        text = self.log.read_text()
        return text if 'Traceback' in text else ''


@pytest.fixture(scope='session')
def start_apis(tmp_path_factory):
    """start(n): n df-api processes sharing one new sqlite store."""
    started: list[DfApi] = []

    def start(count: int = 1, config: dict = None) -> list[DfApi]:
        workdir = tmp_path_factory.mktemp('df-api')
        url = f'sqlite://{workdir / "nb.sqlite"}'
        return [start_one(workdir, url, f'df-api-{i}', config) for i in range(count)]

    def start_one(workdir, url, name, config, attempts=3) -> DfApi:
        for attempt in range(attempts):
            api = DfApi(workdir, url, name, config)
            started.append(api)
            try:
                return api.wait_ready()
            except RuntimeError:
                if attempt == attempts - 1:  # else: the free port was taken meanwhile
                    raise

    yield start
    for api in started:
        api.stop()


@pytest.fixture(scope='module')
def api_server(start_apis):
    """One df-api process (and store) shared by the tests of a module."""
    server, = start_apis(1)
    yield server
    assert not server.errors_logged(), server.errors_logged()


def connect(url: str, project: str = None, admin: bool = False) -> openstack.connection.Connection:
    """openstacksdk as the notes say a keystone-less deployment uses it."""
    conn = openstack.connection.Connection(auth_type='none', auth={'endpoint': url},
                                           network_endpoint_override=url + '/')
    if project:
        conn.session.additional_headers['X-Project-Id'] = project
    if admin:
        conn.session.additional_headers['X-Roles'] = 'admin'
    return conn


@pytest.fixture
def conn(api_server):
    return connect(api_server.url)


# Provider networks as a deployment configures them (Neutron's ML2 option names).
ML2_CONFIG = {'ml2_type_vlan': {'network_vlan_ranges': 'physnet1:100:102,physnet2'},
              'ml2_type_flat': {'flat_networks': 'physnet1,physnet3'}}


@pytest.fixture(scope='module')
def ml2_server(start_apis):
    """A df-api with physnets: VLAN ids 100-102 on physnet1, physnet2 for provider VLANs
    only, flat networks on physnet1 and physnet3."""
    server, = start_apis(1, ML2_CONFIG)
    yield server
    assert not server.errors_logged(), server.errors_logged()


@pytest.fixture
def admin(ml2_server):
    return connect(ml2_server.url, project='ops', admin=True)


@pytest.fixture
def user(ml2_server):
    return connect(ml2_server.url, project=unique('project'))


def cli_for(server, tmp_path):
    """openstack(*args): the CLI against ``server`` with a clouds.yaml as a user has; JSON
    output parsed unless json_output=False."""
    import json
    clouds = tmp_path / 'clouds.yaml'
    clouds.write_text('clouds:\n'
                      '  df:\n'
                      '    auth_type: none\n'
                      '    auth:\n'
                      f'      endpoint: {server.url}\n'
                      f'    network_endpoint_override: {server.url}/\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith('OS_')}
    env['OS_CLIENT_CONFIG_FILE'] = str(clouds)

    def openstack(*args: str, json_output: bool = True):
        command = [str(VENV_BIN / 'openstack'), '--os-cloud', 'df', *args] + (
            ['-f', 'json'] if json_output else [])
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f'{" ".join(args)}: {done.stderr}'
        return json.loads(done.stdout) if json_output and done.stdout.strip() else done.stdout
    return openstack


def neutron_error(call, *args, **kwargs) -> tuple[int, dict]:
    """Run a failing SDK call; its HTTP status and NeutronError (checking the body's form)."""
    with pytest.raises(openstack.exceptions.HttpException) as raised:
        call(*args, **kwargs)
    response = raised.value.response
    body = response.json()
    assert list(body) == ['NeutronError'], body
    assert sorted(body['NeutronError']) == ['detail', 'message', 'type'], body
    return response.status_code, body['NeutronError']


def raw(conn, method: str, path: str, **kwargs):
    """A request through the SDK's network adapter, for bodies the SDK would not send."""
    response = getattr(conn.network, method)(path, raise_exc=False, **kwargs)
    return response.status_code, (response.json() if response.content else None)


def unique(prefix: str) -> str:
    return f'{prefix}-{uuid.uuid4().hex[:8]}'


# df-api in this process: starlette's TestClient over a store, no server or socket.

def in_process(store, conf=None):
    """A TestClient over df-api on ``store``; server errors come back as responses."""
    from fastapi.testclient import TestClient

    from dragonflow import conf as df_conf
    from dragonflow.api.server import create_app
    return TestClient(create_app(store, conf or df_conf.load([])),
                      raise_server_exceptions=False)


@pytest.fixture
def sqlite_store(tmp_path):
    from dragonflow import store as nb
    store = nb.connect(f'sqlite://{tmp_path / "nb.sqlite"}')
    yield store
    store.close()


@pytest.fixture
def client(sqlite_store):
    with in_process(sqlite_store) as client:
        yield client


def error_of(response) -> dict:
    """The NeutronError of a response, checking the body has exactly Neutron's form."""
    body = response.json()
    assert list(body) == ['NeutronError'], body
    assert sorted(body['NeutronError']) == ['detail', 'message', 'type'], body
    return body['NeutronError']
