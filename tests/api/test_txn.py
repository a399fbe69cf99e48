"""dragonflow.api.txn: conditional commits, re-planning on conflicts, fences, keys."""
import threading
import time

import pytest

from dragonflow import store as nb
from dragonflow.api import txn
from dragonflow.api.handlers.security_groups import ensure_default
from dragonflow.model import Fence, Network, SecurityGroup, SecurityGroupRule
from dragonflow.store.api import MUST_NOT_EXIST, Check, Conflict, Delete, Put


@pytest.fixture
def store(tmp_path):
    store = nb.connect(f'sqlite://{tmp_path / "nb.sqlite"}')
    yield store
    store.close()


def net(id='n1', name='', key=1) -> Network:
    return Network(id=id, key=key, name=name)


def stored(store, id='n1') -> Network:
    record = store.get(Network.table, id)
    return Network.from_doc(record.value, record.revision)


def test_writes_carry_the_revision_read(store):
    store.put(Network.table, 'n1', net().to_doc())
    plan = txn.Txn(store)
    current = plan.get(Network, 'n1')
    plan.require(current)
    plan.update(current.model_copy(update={'name': 'x'}))
    plan.create(net('n2', key=2))
    plan.delete(net('n3').model_copy(update={'revision': 7}))
    assert plan.operations() == [
        Put(Network.table, 'n1', net(name='x').to_doc(), current.revision),
        Put(Network.table, 'n2', net('n2', key=2).to_doc(), MUST_NOT_EXIST),
        Delete(Network.table, 'n3', 7)]


def test_reads_show_the_txns_own_writes(store):
    store.put(Network.table, 'n1', net().to_doc())
    plan = txn.Txn(store)
    plan.create(net('n2', key=2))
    plan.delete(plan.get(Network, 'n1'))
    assert [n.id for n in plan.all(Network)] == ['n2']
    assert plan.get(Network, 'n1') is None
    plan.delete(plan.get(Network, 'n2'))   # created and deleted: only the absence matters
    assert plan.operations()[0] == Check(Network.table, 'n2', MUST_NOT_EXIST)


def test_run_replans_after_a_conflicting_commit(store):
    store.put(Network.table, 'n1', net(name='0').to_doc())
    attempts = []

    def increment(plan, keys):
        current = plan.get(Network, 'n1')
        attempts.append(current.name)
        if len(attempts) == 1:  # someone else writes between our read and our commit
            store.put(Network.table, 'n1', net(name='10').to_doc())
        plan.update(current.model_copy(update={'name': str(int(current.name) + 1)}))
        return keys.next('network')

    key, revision = txn.run(store, increment)
    assert attempts == ['0', '10'] and stored(store).name == '11'
    assert key == 1  # the key allocated by the first attempt is reused by the second
    assert store.allocate_key('network') == 2


def test_creators_wait_for_a_fence_and_break_an_expired_one(store):
    store.put(Network.table, 'n1', net().to_doc())
    with txn.fenced(store, Network, 'n1'):
        with pytest.raises(txn.Retry):
            txn.require_unfenced(txn.Txn(store), Network, 'n1')
    assert store.get(Fence.table, 'networks/n1') is None  # released on the way out

    store.put(Fence.table, 'networks/n1', {'id': 'networks/n1', 'expires': time.time() - 1})
    plan = txn.Txn(store)
    txn.require_unfenced(plan, Network, 'n1')   # its deleter is gone: broken in our commit
    plan.commit()
    assert store.get(Fence.table, 'networks/n1') is None


def test_a_delete_and_a_create_under_it_cannot_both_succeed(store):
    """The write skew fences prevent: check-then-delete racing a create of a dependent."""
    store.put(Network.table, 'n1', net().to_doc())
    created = threading.Event()

    def create_dependent(plan, keys):
        network = plan.get(Network, 'n1')
        if network is None:
            return False
        plan.require(network)
        txn.require_unfenced(plan, Network, 'n1')
        plan.create(net('child', key=9))
        return True

    with txn.fenced(store, Network, 'n1'):
        creator = threading.Thread(target=lambda: created.set() if txn.run(
            store, create_dependent)[0] else None)
        creator.start()
        time.sleep(0.2)  # the creator is held off while the fence stands
        assert store.get(Network.table, 'child') is None
        store.delete(Network.table, 'n1')
    creator.join(10)
    assert not created.is_set() and store.get(Network.table, 'child') is None


def test_interleaved_first_uses_make_one_default_security_group(store):
    """Two plans that both found no default group: the second commit fails, and its re-plan
    uses the group the first one made."""
    plans = [txn.Txn(store), txn.Txn(store)]
    made = [ensure_default(p, txn.Keys(store), 'p1') for p in plans]
    assert made[0].id != made[1].id
    plans[0].commit()
    with pytest.raises(Conflict):
        plans[1].commit()
    again, _ = txn.run(store, lambda t, keys: ensure_default(t, keys, 'p1'))
    assert again.id == made[0].id
    assert [r.id for r in store.list(SecurityGroup.table)] == [made[0].id]
    assert len(store.list(SecurityGroupRule.table)) == 4
