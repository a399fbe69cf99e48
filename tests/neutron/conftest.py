"""One real Neutron for the whole test session, with Dragonflow as its backend.

Neutron (MariaDB, the API under uWSGI, the periodic workers: dragonflow/lab/neutron.py)
takes about ten seconds to start, so the session starts it once. Its NB store is a sqlite
file in the session's directory (``neutron_store``), the one the ``df`` mechanism driver
and ``df-l3`` service plugin mirror Neutron into. Until those entry points are installed
the stack runs Neutron's own ``logger`` driver and ``router`` plugin, so the fixture itself
stays tested.
"""
import uuid
from importlib.metadata import entry_points

import pytest

from dragonflow import store as nb
from dragonflow.lab.neutron import NeutronServer, group_alive, processes_in


def pytest_configure(config):
    # openstacksdk warns about its own future API changes, webob (Neutron's) about cgi.
    for category in ('DeprecationWarning', 'PendingDeprecationWarning'):
        config.addinivalue_line('filterwarnings', f'ignore::{category}:openstack.*')
    config.addinivalue_line('filterwarnings', "ignore:'cgi' is deprecated:DeprecationWarning")


def unique(prefix: str) -> str:
    """A name no other test of the session's one Neutron uses."""
    return f'{prefix}-{uuid.uuid4().hex[:8]}'


def nb_object(store, model, id):
    """The NB store's object, or None."""
    record = store.get(model.table, id)
    return None if record is None else model.from_doc(record.value, record.revision)


def dragonflow_plugins() -> tuple[str, str]:
    """(mechanism_drivers, service_plugins): Dragonflow's when installed, else Neutron's
    reference ones."""
    drivers = entry_points(group='neutron.ml2.mechanism_drivers').names
    plugins = entry_points(group='neutron.service_plugins').names
    if 'df' in drivers and 'df-l3' in plugins:
        return 'df', 'df-l3'
    return 'logger', 'router'


@pytest.fixture(scope='session')
def neutron_store_url(tmp_path_factory) -> str:
    return f'sqlite://{tmp_path_factory.mktemp("neutron") / "nb.sqlite"}'


@pytest.fixture(scope='session')
def neutron_store(neutron_store_url):
    """The NB store Neutron's Dragonflow driver writes."""
    store = nb.connect(neutron_store_url)
    yield store
    store.close()


@pytest.fixture(scope='session')
def neutron(neutron_store_url):
    """The session's Neutron; on teardown it must stop leaving no process and no file."""
    mechanism_drivers, service_plugins = dragonflow_plugins()
    server = NeutronServer(store_url=neutron_store_url, mechanism_drivers=mechanism_drivers,
                           service_plugins=service_plugins)
    with server:
        yield server
        errors = server.errors_logged()
    assert not [pgid for pgid in server.spawned if group_alive(pgid)], server.spawned
    assert not processes_in(server.state_dir)
    assert not server.state_dir.exists(), server.state_dir
    assert not errors, errors

