"""The mirror against a real (sqlite) store: keys kept, nothing lost to a racing writer, no
going back to an older revision, no resurrection after a delete."""
import threading

import pytest

from dragonflow import store as df_store
from dragonflow.model import Chassis, Network, Router, Subnet
from dragonflow.neutron import mirror
from dragonflow.store import api


@pytest.fixture
def store(tmp_path):
    s = df_store.connect(f'sqlite:///{tmp_path}/nb.db')
    yield s
    s.close()


def network(revision, **fields):
    return {'id': 'n1', 'project_id': 'demo', 'name': 'net', 'mtu': 1450,
            'provider:network_type': 'vxlan', 'provider:segmentation_id': 100,
            'revision_number': revision, **fields}


def stored(store, model, id):
    record = store.get(model.table, id)
    return None if record is None else model.from_doc(record.value, record.revision)


def test_key_is_allocated_once_and_kept_across_updates(store):
    nb = mirror.NbMirror(store)
    first = nb.upsert(Network, network(1))
    nb.upsert(Network, network(2, name='renamed'))
    assert stored(store, Network, 'n1').key == first.key
    assert stored(store, Network, 'n1').name == 'renamed'
    assert store.allocate_key('network') == first.key + 1  # no second allocation


def test_the_same_dict_again_writes_nothing(store):
    nb = mirror.NbMirror(store)
    nb.upsert(Network, network(1))
    revision = store.revision()
    nb.upsert(Network, network(1))
    assert store.revision() == revision


def test_an_older_revision_does_not_overwrite_a_newer_one(store):
    nb = mirror.NbMirror(store)
    nb.upsert(Network, network(5, name='new'))
    assert nb.upsert(Network, network(4, name='old')) is None
    assert stored(store, Network, 'n1').name == 'new'


def test_a_late_postcommit_does_not_bring_a_deleted_object_back(store):
    nb = mirror.NbMirror(store)
    nb.upsert(Network, network(3))
    nb.delete(Network.table, 'n1', 3)
    assert nb.upsert(Network, network(3)) is None
    assert stored(store, Network, 'n1') is None
    nb.delete(Network.table, 'n1')  # deleting again is fine


class RacingStore:
    """A store whose first commit of ``table`` loses to another writer's update, made just
    before it (the read-then-write window of two Neutron API workers)."""

    def __init__(self, store, table, rival):
        self.store, self.table, self.rival, self.raced = store, table, rival, False

    def __getattr__(self, name):
        return getattr(self.store, name)

    def commit(self, ops):
        if not self.raced and any(op.table == self.table for op in ops):
            self.raced = True
            self.rival()
        return self.store.commit(ops)


def test_a_racing_writer_is_not_lost_and_its_key_is_taken(store):
    rival, first = mirror.NbMirror(store), []
    racing = RacingStore(store, Network.table,
                         lambda: first.append(rival.upsert(Network, network(1))))
    written = mirror.NbMirror(racing).upsert(Network, network(2, name='second'))
    assert racing.raced
    assert stored(store, Network, 'n1').name == 'second'
    # The loser read "no record" and allocated a key; it re-read and took the winner's.
    assert written.key == first[0].key == stored(store, Network, 'n1').key


def test_concurrent_writers_of_one_object_agree_on_one_key(store):
    nb = mirror.NbMirror(store)
    keys, start = [], threading.Barrier(6)

    def write(revision):
        start.wait()
        keys.append(nb.upsert(Network, network(revision, name=f'r{revision}')))

    threads = [threading.Thread(target=write, args=(r,)) for r in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = stored(store, Network, 'n1')
    assert {k.key for k in keys if k is not None} == {final.key}
    assert final.name == 'r6'  # the newest revision wins whatever the order


def test_subnets_have_no_key(store):
    mirror.NbMirror(store).upsert(Subnet, {'id': 's1', 'network_id': 'n1', 'ip_version': 4,
                                           'cidr': '10.0.0.0/24', 'revision_number': 1})
    assert stored(store, Subnet, 's1').cidr == '10.0.0.0/24'


def test_gateway_chassis_scheduled_once_then_kept(store):
    nb = mirror.NbMirror(store)
    nb.upsert(Network, network(1, id='ext', **{'provider:network_type': 'flat',
                                              'provider:physical_network': 'physnet1',
                                              'provider:segmentation_id': None}))
    for name in ('c1', 'c2'):
        store.put(Chassis.table, name, Chassis(id=name, tunnel_ip='192.0.2.1', gateway=True,
                                               physical_networks=['physnet1']).to_doc())
    store.put(Chassis.table, 'compute', Chassis(id='compute', tunnel_ip='192.0.2.9').to_doc())

    def router(id, revision, network_id='ext'):
        return {'id': id, 'revision_number': revision, 'gw_port_id': 'gw-' + id,
                'external_gateway_info': {'network_id': network_id,
                                          'external_fixed_ips': []}}

    adjust = mirror.schedule_gateway(store)
    first = nb.upsert(Router, router('r1', 1), adjust=adjust)
    second = nb.upsert(Router, router('r2', 1), adjust=adjust)
    assert first.gateway_chassis == ['c1', 'c2']
    assert second.gateway_chassis == ['c2', 'c1']  # least-loaded first
    store.put(Chassis.table, 'c0', Chassis(id='c0', tunnel_ip='192.0.2.3', gateway=True,
                                           physical_networks=['physnet1']).to_doc())
    store.delete(Chassis.table, 'c2')
    again = nb.upsert(Router, {**router('r1', 2), 'name': 'renamed'}, adjust=adjust)
    # Never reordered (that would move traffic): the gone chassis dropped, the new one last.
    assert again.gateway_chassis == ['c1', 'c0']
    cleared = nb.upsert(Router, {'id': 'r1', 'revision_number': 3, 'gw_port_id': None,
                                 'external_gateway_info': None}, adjust=adjust)
    assert cleared.gateway_chassis == [] and cleared.gateway_port_id is None


def test_gives_up_after_so_many_conflicts(store):
    class AlwaysConflicts(RacingStore):
        def commit(self, ops):
            raise api.Conflict(Network.table, 'n1', 0, 1)

    nb = mirror.NbMirror(AlwaysConflicts(store, Network.table, None), attempts=3)
    with pytest.raises(mirror.MirrorGaveUp):
        nb.upsert(Network, network(1))


def test_a_lost_record_comes_back_with_its_key(store):
    nb = mirror.NbMirror(store)
    key = nb.upsert(Network, network(1)).key
    store.delete(Network.table, 'n1')
    assert nb.upsert(Network, network(1)).key == key
