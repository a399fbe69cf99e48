"""df-neutron-sync against real Neutron: NB records left behind by failed postcommits (lost,
stale, or still there after Neutron deleted the object) are listed by ``--mode log`` and
written back by ``--mode repair``, with the data-plane keys they had."""
import subprocess

import pytest

from dragonflow.lab.neutron import VENV_BIN
from dragonflow.model import (
    FloatingIP,
    Network,
    Port,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from dragonflow.neutron import mirror
from dragonflow.store import api
from tests.neutron.conftest import dragonflow_plugins, unique
from tests.neutron.conftest import nb_object as nb

pytestmark = pytest.mark.skipif(dragonflow_plugins() != ('df', 'df-l3'),
                                reason='the df entry points are not installed')


def sync(neutron, mode: str) -> subprocess.CompletedProcess:
    """One df-neutron-sync pass on the fixture's own config files; grace 0: the test's
    changes are all over (their postcommits done or, here, skipped by hand)."""
    return subprocess.run(
        [str(VENV_BIN / 'df-neutron-sync'),
         '--config-file', str(neutron.state_dir / 'neutron.conf'),
         '--config-file', str(neutron.state_dir / 'ml2_conf.ini'),
         '--mode', mode, '--grace', '0'],
        capture_output=True, text=True, timeout=180)


def listed(done: subprocess.CompletedProcess) -> set:
    """(table, id) of the differences the command printed."""
    found = set()
    for line in done.stdout.splitlines():
        verb, _, rest = line.partition(': ')
        if verb in ('differs', 'repaired') and rest:
            found.add(tuple(rest.split()[1].split('/', 1)))
    return found


class Snapshot:
    """An object's NB record and mirror mark as they are now, put back later as if the
    postcommits after this moment had failed."""

    def __init__(self, store, model, id):
        self.store, self.table, self.id = store, model.table, id
        self.mark_id = mirror.mark_id(model.table, id)
        self.record = store.get(self.table, id)
        self.mark = store.get(mirror.MIRROR_TABLE, self.mark_id)
        assert self.record is not None and self.mark is not None, (self.table, id)

    def restore(self) -> None:
        ops = []
        for table, id, old in ((self.table, self.id, self.record),
                               (mirror.MIRROR_TABLE, self.mark_id, self.mark)):
            now = self.store.get(table, id)
            ops.append(api.Put(table, id, old.value,
                               expect=now.revision if now else api.MUST_NOT_EXIST))
        self.store.commit(ops)


def lose(store, model, id) -> None:
    """The NB record gone, its mark left (a store that lost a write)."""
    store.commit([api.Delete(model.table, id)])


@pytest.fixture
def conn(neutron):
    return neutron.sdk()


@pytest.fixture
def cleanup(conn):
    undo = []
    yield undo.append
    for action in reversed(undo):
        action()


def test_lost_and_stale_records_are_listed_then_repaired_with_their_keys(
        neutron, conn, neutron_store, cleanup):
    external = conn.network.create_network(name=unique('ext'), is_router_external=True)
    cleanup(lambda: conn.network.delete_network(external, ignore_missing=True))
    conn.network.create_subnet(network_id=external.id, ip_version=4, cidr='172.25.7.0/24')
    network = conn.network.create_network(name=unique('net'))
    cleanup(lambda: conn.network.delete_network(network, ignore_missing=True))
    subnet = conn.network.create_subnet(network_id=network.id, ip_version=4,
                                        cidr='10.47.0.0/24')
    group = conn.network.create_security_group(name=unique('sg'))
    cleanup(lambda: conn.network.delete_security_group(group, ignore_missing=True))
    rule = conn.network.create_security_group_rule(
        security_group_id=group.id, direction='ingress', protocol='tcp',
        port_range_min=22, port_range_max=22)
    port = conn.network.create_port(network_id=network.id, security_group_ids=[group.id])
    cleanup(lambda: conn.network.delete_port(port, ignore_missing=True))
    router = conn.network.create_router(name=unique('r'),
                                        external_gateway_info={'network_id': external.id})
    cleanup(lambda: conn.network.delete_router(router, ignore_missing=True))
    conn.network.add_interface_to_router(router, subnet=subnet.id)
    cleanup(lambda: conn.network.remove_interface_from_router(router, subnet=subnet.id))
    fip = conn.network.create_ip(floating_network_id=external.id, port_id=port.id)
    cleanup(lambda: conn.network.delete_ip(fip, ignore_missing=True))

    keys = {(m, id): nb(neutron_store, m, id).key for m, id in (
        (Network, network.id), (Port, port.id), (SecurityGroupRule, rule.id),
        (Router, router.id))}
    # Updates whose postcommits "failed": the NB keeps the records and marks from before.
    stale = [Snapshot(neutron_store, Network, network.id),
             Snapshot(neutron_store, Router, router.id),
             Snapshot(neutron_store, SecurityGroup, group.id)]
    conn.network.update_network(network, name='renamed')
    conn.network.update_router(router, name='renamed')
    conn.network.update_security_group(group, description='renamed')
    for snapshot in stale:
        snapshot.restore()
    assert nb(neutron_store, Network, network.id).name != 'renamed'
    # Records lost by the store.
    lost = [(Subnet, subnet.id), (SecurityGroupRule, rule.id), (Port, port.id),
            (FloatingIP, fip.id)]
    for model, id in lost:
        lose(neutron_store, model, id)

    revision = neutron_store.revision()
    logged = sync(neutron, 'log')
    assert logged.returncode == 1, logged.stdout + logged.stderr
    expected = {(m.table, id) for m, id in lost} | {
        (Network.table, network.id), (Router.table, router.id),
        (SecurityGroup.table, group.id)}
    assert expected <= listed(logged), logged.stdout
    assert neutron_store.revision() == revision  # log mode wrote nothing
    assert nb(neutron_store, Port, port.id) is None

    repaired = sync(neutron, 'repair')
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert expected <= listed(repaired), repaired.stdout
    assert nb(neutron_store, Network, network.id).name == 'renamed'
    assert nb(neutron_store, Router, router.id).name == 'renamed'
    assert nb(neutron_store, SecurityGroup, group.id).description == 'renamed'
    assert nb(neutron_store, Subnet, subnet.id).cidr == '10.47.0.0/24'
    assert nb(neutron_store, Port, port.id).security_groups == [group.id]
    assert nb(neutron_store, FloatingIP, fip.id).port_id == port.id
    assert [i.subnet_id for i in nb(neutron_store, Router, router.id).interfaces] == \
        [subnet.id]
    assert {(m, id): nb(neutron_store, m, id).key for m, id in keys} == keys

    again = sync(neutron, 'log')
    assert not expected & listed(again), again.stdout


def test_object_deleted_in_neutron_leaves_nb_on_repair(neutron, conn, neutron_store):
    network = conn.network.create_network(name=unique('net'))
    subnet = conn.network.create_subnet(network_id=network.id, ip_version=4,
                                        cidr='10.48.0.0/24')
    left = [Snapshot(neutron_store, Subnet, subnet.id),
            Snapshot(neutron_store, Network, network.id)]
    conn.network.delete_network(network)  # its delete postcommits "failed":
    for snapshot in left:
        snapshot.restore()
    assert nb(neutron_store, Network, network.id) is not None

    logged = sync(neutron, 'log')
    assert logged.returncode == 1, logged.stdout + logged.stderr
    gone = {(Network.table, network.id), (Subnet.table, subnet.id)}
    assert gone <= listed(logged), logged.stdout
    assert nb(neutron_store, Subnet, subnet.id) is not None

    repaired = sync(neutron, 'repair')
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert nb(neutron_store, Network, network.id) is None
    assert nb(neutron_store, Subnet, subnet.id) is None
    tombstone = neutron_store.get(mirror.MIRROR_TABLE, mirror.mark_id(Network.table,
                                                                      network.id))
    assert tombstone.value['deleted'] is True


def test_bad_config_exits_2(neutron, tmp_path):
    bad = tmp_path / 'ml2_conf.ini'
    bad.write_text((neutron.state_dir / 'ml2_conf.ini').read_text() +
                   '\n[df]\nstore_url = nosuch://nowhere\n')
    done = subprocess.run(
        [str(VENV_BIN / 'df-neutron-sync'),
         '--config-file', str(neutron.state_dir / 'neutron.conf'),
         '--config-file', str(bad), '--mode', 'log'],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stdout + done.stderr
    assert 'df-neutron-sync:' in done.stderr
