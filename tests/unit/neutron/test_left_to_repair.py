"""A store that is down never fails a Neutron call whose DB transaction has committed: the
mirror's write is logged and left to the repair pass."""
import logging
import types

import pytest

from dragonflow.neutron import mirror
from dragonflow.neutron.mech_driver import DfMechanismDriver
from dragonflow.store import api


class DownStore:
    """Every call fails as a store that does not answer does."""

    def __getattr__(self, name):
        def unavailable(*args, **kwargs):
            raise api.Unavailable('connection refused')
        return unavailable


NETWORK = {'id': 'n1', 'name': 'net', 'project_id': 'p', 'tenant_id': 'p',
           'admin_state_up': True, 'status': 'ACTIVE', 'shared': False, 'mtu': 1450,
           'router:external': False, 'port_security_enabled': True, 'revision_number': 1,
           'provider:network_type': 'vxlan', 'provider:physical_network': None,
           'provider:segmentation_id': 7, 'tags': [], 'description': '',
           'created_at': '', 'updated_at': ''}


def driver_on(store) -> DfMechanismDriver:
    driver = DfMechanismDriver()
    driver.store, driver.mirror = store, mirror.NbMirror(store)
    return driver


def test_postcommits_log_a_store_outage_and_return(caplog):
    driver = driver_on(DownStore())
    context = types.SimpleNamespace(current=NETWORK, network_segments=[])
    with caplog.at_level(logging.WARNING, logger='dragonflow.neutron.mirror'):
        driver.create_network_postcommit(context)
        driver.delete_network_postcommit(context)
    assert [r.getMessage().split(':')[1].split()[0] for r in caplog.records] == [
        'create_network_postcommit', 'delete_network_postcommit']
    assert all('left to the repair pass' in r.getMessage() for r in caplog.records)


def test_other_errors_still_raise():
    @mirror.left_to_repair
    def broken():
        raise ValueError('a bug, not an outage')
    with pytest.raises(ValueError):
        broken()
