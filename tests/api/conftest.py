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

    def __init__(self, workdir: Path, store_url: str, name: str = 'df-api'):
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.config = workdir / f'{name}.ini'
        self.log = workdir / f'{name}.log'
        self.config.write_text(f'[store]\nurl = {store_url}\n\n'
                               f'[api]\nbind_port = {self.port}\naccess_log = false\n')
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

    def start(count: int = 1) -> list[DfApi]:
        workdir = tmp_path_factory.mktemp('df-api')
        url = f'sqlite://{workdir / "nb.sqlite"}'
        return [start_one(workdir, url, f'df-api-{i}') for i in range(count)]

    def start_one(workdir, url, name, attempts=3) -> DfApi:
        for attempt in range(attempts):
            api = DfApi(workdir, url, name)
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
