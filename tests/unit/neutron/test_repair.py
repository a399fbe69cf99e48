"""The repair pass brings the NB store back to what Neutron holds, over a real sqlite store."""
import io
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dragonflow import store as df_store
from dragonflow.cli import neutron_sync
from dragonflow.lab.cloud import wait_for
from dragonflow.model import (
    FloatingIP,
    Network,
    Port,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from dragonflow.neutron import mirror, repair
from tests.unit.clock import Clock

OLD = '2020-01-01T00:00:00Z'  # long before the test clock: past any grace period
NOW = 1_700_000_000.0


@pytest.fixture
def store(tmp_path):
    s = df_store.connect(f'sqlite:///{tmp_path}/nb.db')
    yield s
    s.close()


@pytest.fixture
def clock():
    c = Clock()
    c.now = NOW
    return c


class FakeNeutron:
    """Neutron's API dicts by model, as PluginReader lists them."""

    def __init__(self):
        self.by_model = {
            Network: [{'id': 'n1', 'name': 'net', 'revision_number': 2, 'mtu': 1450,
                       'provider:network_type': 'vxlan', 'provider:segmentation_id': 5,
                       'updated_at': OLD}],
            Subnet: [{'id': 's1', 'network_id': 'n1', 'cidr': '10.0.0.0/24',
                      'ip_version': 4, 'revision_number': 1, 'updated_at': OLD}],
            SecurityGroup: [{'id': 'g1', 'name': 'default', 'revision_number': 1,
                             'updated_at': OLD}],
            SecurityGroupRule: [{'id': 'r1', 'security_group_id': 'g1',
                                 'direction': 'ingress', 'ethertype': 'IPv4',
                                 'protocol': 'tcp', 'revision_number': 1,
                                 'updated_at': OLD}],
            Port: [{'id': 'p1', 'network_id': 'n1', 'mac_address': 'fa:16:3e:00:00:01',
                    'fixed_ips': [{'subnet_id': 's1', 'ip_address': '10.0.0.5'}],
                    'security_groups': ['g1'], 'revision_number': 4, 'updated_at': OLD}],
            Router: [],
            FloatingIP: [],
        }

    def objects_of(self, model):
        return self.by_model[model]

    def objects(self, model):
        return [dict(o) for o in self.by_model[model]]

    def extra(self, model, neutron):
        return {}

    def update(self, model, id, **fields):
        for obj in self.by_model[model]:
            if obj['id'] == id:
                obj.update(fields, revision_number=obj['revision_number'] + 1)


def stored(store, model, id):
    record = store.get(model.table, id)
    return None if record is None else model.from_doc(record.value, record.revision)


def mark(store, model, id):
    record = store.get(mirror.MIRROR_TABLE, mirror.mark_id(model.table, id))
    return None if record is None else record.value


def repair_of(store, neutron, clock, **kwargs):
    return repair.Repair(store, mirror.NbMirror(store), neutron, now=clock, **kwargs)


def tables(store):
    return {m: sorted(r.id for r in store.list(m.table)) for m in repair.ORDER}


def test_objects_missing_in_nb_are_created_parents_first(store, clock):
    neutron = FakeNeutron()
    after = store.revision()
    result = repair_of(store, neutron, clock).run('repair')
    assert result.counts()[Port.table] == {'created': 1, 'updated': 0, 'deleted': 0}
    assert stored(store, Port, 'p1').security_groups == ['g1']
    assert (mark(store, Port, 'p1')['revision_number'], mark(store, Port, 'p1')['deleted']) \
        == (4, False)
    written = [e.table for e in store.changes(after) if e.table != mirror.MIRROR_TABLE]
    assert written == [Network.table, Subnet.table, SecurityGroup.table,
                       SecurityGroupRule.table, Port.table]


def test_log_mode_reports_and_writes_nothing(store, clock):
    neutron = FakeNeutron()
    revision = store.revision()
    result = repair_of(store, neutron, clock).run('log')
    assert sorted((d.table, d.id, d.action) for d in result.differences) == sorted([
        (Network.table, 'n1', 'created'), (Subnet.table, 's1', 'created'),
        (SecurityGroup.table, 'g1', 'created'), (SecurityGroupRule.table, 'r1', 'created'),
        (Port.table, 'p1', 'created')])
    assert not result.in_sync
    assert store.revision() == revision


def test_newer_revision_than_the_mark_is_rewritten_with_its_key(store, clock):
    neutron = FakeNeutron()
    repair_of(store, neutron, clock).run('repair')
    key = stored(store, Network, 'n1').key
    neutron.update(Network, 'n1', name='renamed')  # its update postcommit failed
    result = repair_of(store, neutron, clock).run('repair')
    assert [(d.id, d.action, d.neutron_revision, d.mirrored_revision)
            for d in result.differences] == [('n1', 'updated', 3, 2)]
    assert stored(store, Network, 'n1').name == 'renamed'
    assert stored(store, Network, 'n1').key == key


def test_nb_object_without_mark_is_rewritten(store, clock):
    neutron = FakeNeutron()
    repair_of(store, neutron, clock).run('repair')
    store.commit([df_store.api.Delete(mirror.MIRROR_TABLE, mirror.mark_id(Subnet.table, 's1'))])
    result = repair_of(store, neutron, clock).run('repair')
    assert [(d.id, d.action) for d in result.differences] == [('s1', 'updated')]
    assert mark(store, Subnet, 's1')['revision_number'] == 1


def test_objects_neutron_lacks_are_deleted_children_first(store, clock):
    neutron = FakeNeutron()
    repair_of(store, neutron, clock).run('repair')
    gone = {m: neutron.by_model[m] for m in (Network, Subnet, Port)}
    for model in gone:
        neutron.by_model[model] = []
    after = store.revision()
    result = repair_of(store, neutron, clock).run('repair')
    assert {(d.table, d.action) for d in result.differences} == {
        (Network.table, 'deleted'), (Subnet.table, 'deleted'), (Port.table, 'deleted')}
    deleted = [e.table for e in store.changes(after)
               if e.table != mirror.MIRROR_TABLE and e.deleted]
    assert deleted == [Port.table, Subnet.table, Network.table]
    assert (mark(store, Port, 'p1')['revision_number'], mark(store, Port, 'p1')['deleted']) \
        == (4, True)
    assert tables(store)[SecurityGroup] == ['g1']


def test_older_neutron_revision_than_mirrored_is_no_difference(store, clock):
    """A postcommit wrote a newer revision than the one the pass read: nothing to do."""
    neutron = FakeNeutron()
    repair_of(store, neutron, clock).run('repair')
    mirror.NbMirror(store).upsert(Port, {**neutron.by_model[Port][0], 'revision_number': 9,
                                         'name': 'newer'})
    result = repair_of(store, neutron, clock).run('repair')
    assert result.in_sync
    assert stored(store, Port, 'p1').name == 'newer'


def test_recent_changes_are_left_to_their_postcommits(store, clock):
    neutron = FakeNeutron()
    repair_of(store, neutron, clock).run('repair')
    neutron.update(Port, 'p1', name='in flight', updated_at='2023-11-14T22:13:10Z')
    result = repair_of(store, neutron, clock, grace=30).run('repair')  # 10 s ago
    assert result.in_sync and result.recent == 1
    assert stored(store, Port, 'p1').name != 'in flight'
    clock.now += 30
    result = repair_of(store, neutron, clock, grace=30).run('repair')
    assert [(d.id, d.action) for d in result.differences] == [('p1', 'updated')]
    assert stored(store, Port, 'p1').name == 'in flight'


def test_a_recent_object_neutron_lacks_is_left_to_its_delete_postcommit(store, clock):
    neutron = FakeNeutron()
    neutron.update(Port, 'p1', updated_at='2023-11-14T22:13:10Z')  # 10 s ago
    repair_of(store, neutron, clock, grace=0).run('repair')
    neutron.by_model[Port] = []
    result = repair_of(store, neutron, clock, grace=30).run('repair')
    assert result.in_sync and result.recent == 1
    assert stored(store, Port, 'p1') is not None
    clock.now += 30
    result = repair_of(store, neutron, clock, grace=30).run('repair')
    assert [(d.id, d.action) for d in result.differences] == [('p1', 'deleted')]
    assert stored(store, Port, 'p1') is None


def test_a_lost_record_comes_back_with_its_key(store, clock):
    neutron = FakeNeutron()
    repair_of(store, neutron, clock).run('repair')
    key = stored(store, Port, 'p1').key
    store.commit([df_store.api.Delete(Port.table, 'p1')])  # by hand, mark left
    result = repair_of(store, neutron, clock).run('repair')
    assert [(d.id, d.action) for d in result.differences] == [('p1', 'created')]
    assert stored(store, Port, 'p1').key == key


def test_nb_read_before_neutron_so_a_new_object_is_not_deleted(store, clock):
    """An object whose create postcommit lands between the pass's two reads."""
    late = {'id': 's2', 'network_id': 'n1', 'cidr': '10.1.0.0/24', 'ip_version': 4,
            'revision_number': 1, 'updated_at': '2023-11-14T22:13:19Z'}

    class Racing(FakeNeutron):
        def objects(self, model):
            if model is Network:  # the create commits and is mirrored meanwhile
                self.objects_of(Subnet).append(late)
                mirror.NbMirror(store).upsert(Subnet, late)
            return super().objects(model)

    result = repair_of(store, Racing(), clock).run('repair')
    assert (Subnet.table, 's2') not in {(d.table, d.id) for d in result.differences}
    assert stored(store, Subnet, 's2') is not None


def test_a_bad_object_does_not_stop_the_pass(store, clock):
    neutron = FakeNeutron()
    neutron.by_model[Port].insert(0, {'id': 'bad', 'network_id': 'n1', 'revision_number': 1,
                                      'updated_at': OLD})  # no MAC address
    result = repair_of(store, neutron, clock).run('repair')
    assert [d.id for d in result.failed] == ['bad']
    assert stored(store, Subnet, 's1') is not None and stored(store, Port, 'p1') is not None


def test_an_object_the_mirror_has_deleted_is_not_brought_back(store, clock):
    neutron = FakeNeutron()
    repair_of(store, neutron, clock).run('repair')
    mirror.NbMirror(store).delete(Port.table, 'p1', revision=4)
    result = repair_of(store, neutron, clock).run('repair')
    assert [(d.id, d.action) for d in result.failed] == [('p1', 'created')]
    assert stored(store, Port, 'p1') is None


def test_a_second_pass_finds_and_writes_nothing(store, clock):
    neutron = FakeNeutron()
    repair_of(store, neutron, clock).run('repair')
    revision = store.revision()
    result = repair_of(store, neutron, clock).run('repair')
    assert result.in_sync
    assert store.revision() == revision


def test_two_passes_at_once_leave_one_record_and_one_key_per_object(tmp_path, clock):
    """Two periodic workers: both read an empty NB, then both write every object."""
    url = f'sqlite:///{tmp_path}/nb.db'
    stores = [df_store.connect(url) for _ in range(2)]
    both_read = threading.Barrier(2, timeout=30)
    written = [{}, {}]

    class Reader(FakeNeutron):
        def objects(self, model):
            if model is Network:
                both_read.wait()  # both passes have read the (empty) NB side
            return super().objects(model)

    class Recording(mirror.NbMirror):
        def __init__(self, store, seen):
            super().__init__(store)
            self.seen = seen

        def upsert(self, model, neutron, adjust=None, **extra):
            obj = super().upsert(model, neutron, adjust, **extra)
            self.seen[neutron['id']] = getattr(obj, 'key', None)
            return obj

    results = [None, None]

    def run(i):
        pass_ = repair.Repair(stores[i], Recording(stores[i], written[i]), Reader(), now=clock)
        try:
            results[i] = pass_.run('repair')
        except BaseException as e:
            results[i] = e
            both_read.abort()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert [r.failed for r in results] == [[], []], results
        assert written[0] == written[1]  # the loser took the winner's key
        store = stores[0]
        assert tables(store)[Network] == ['n1'] and tables(store)[Port] == ['p1']
        keys = {id: getattr(stored(store, m, id), 'key', None)
                for m in repair.ORDER for id in tables(store)[m]}
        assert keys == written[0]
        assert repair_of(store, FakeNeutron(), clock).run('log').in_sync
    finally:
        for s in stores:
            s.close()


def test_unknown_mode_is_refused(store, clock):
    with pytest.raises(ValueError):
        repair_of(store, FakeNeutron(), clock).run('fix')


def test_worker_logs_a_failed_pass_and_tries_again(store):
    neutron = FakeNeutron()
    attempts = []

    def connect():
        attempts.append(1)
        if len(attempts) == 1:
            raise df_store.api.Unavailable('store away')
        return df_store.connect(store_url(store))

    worker = repair.RepairWorker(connect=connect, reader=lambda: neutron, interval=0.01)
    worker.start()
    try:
        wait_for(lambda: stored(store, Port, 'p1') is not None, timeout=10,
                 what='the pass after a failed one')
    finally:
        worker.stop()
        worker.wait()
    assert len(attempts) >= 2


def store_url(store):
    return f'sqlite://{store.path}'


def test_sync_command_says_why_and_exits_2_on_a_missing_config(tmp_path):
    command = Path(sys.executable).parent / 'df-neutron-sync'
    done = subprocess.run([str(command), '--config-file', str(tmp_path / 'none.conf'),
                           '--mode', 'log'], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert 'df-neutron-sync: Neutron configuration' in done.stderr
    assert 'none.conf' in done.stderr


def test_sync_command_exits_2_when_the_store_does_not_answer(tmp_path):
    config = tmp_path / 'neutron.conf'
    config.write_text('[DEFAULT]\ntransport_url = fake://\n'
                      '[df]\nstore_url = etcd://127.0.0.1:9\nstore_timeout = 1\n')
    done = subprocess.run([str(Path(sys.executable).parent / 'df-neutron-sync'),
                           '--config-file', str(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert 'df-neutron-sync: NB store etcd://127.0.0.1:9 unusable' in done.stderr


def test_sync_report_prints_counts_and_each_difference():
    result = repair.Result('log', differences=[
        repair.Difference(Port.table, 'p1', 'created', 4, None),
        repair.Difference(Subnet.table, 's9', 'deleted', None, 2)])
    out = io.StringIO()
    neutron_sync.report(result, out)
    lines = out.getvalue().splitlines()
    assert any(line.split() == [Port.table, '1', '0', '0'] for line in lines)
    assert any(line.split() == [Subnet.table, '0', '0', '1'] for line in lines)
    assert any(line.startswith('differs: created') and 'ports/p1' in line for line in lines)
    assert lines[-1] == '2 differences (log)'
