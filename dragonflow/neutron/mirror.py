"""Neutron's resources into the NB store: idempotent, conditional, never going backwards.

Every write is a compare-and-swap on what was read, retried on ``api.Conflict``, so any number
of Neutron API workers may mirror one object at once: none loses another's update, and an
object's data-plane ``key`` is the one already in its NB record (a new one is allocated only
when there is no record, and a racing writer that loses re-reads and takes the winner's key,
so an object never gets two keys; the loser's allocation is simply never used).

Postcommits of one object from two workers may arrive out of order. Next to each object the
mirror keeps the Neutron ``revision_number`` it last wrote and the object's key, in a table of
its own (``neutron_mirror``, id '<table>/<id>'; controllers skip tables not in MODELS),
written in the same commit: an older revision than the one mirrored is not written, a deleted
object leaves a tombstone there so a late postcommit does not bring it back, and an object
whose NB record was lost (removed by hand) comes back with its key.
"""
import functools
import logging
from typing import Callable, Iterable, Optional

from dragonflow.api import l3_scheduler
from dragonflow.model import (
    Chassis,
    FloatingIP,
    Model,
    Network,
    Port,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from dragonflow.neutron import translate
from dragonflow.store import api

LOG = logging.getLogger(__name__)
MIRROR_TABLE = 'neutron_mirror'
ATTEMPTS = 50
# The allocate_key kinds df-api uses (api/handlers: keys.next(...)).
KEY_KINDS = {Network: 'network', Port: 'port', Router: 'router',
             SecurityGroup: 'security_group', SecurityGroupRule: 'security_group_rule'}
TRANSLATORS = {Network: translate.network, Subnet: translate.subnet, Port: translate.port,
               Router: translate.router, SecurityGroup: translate.security_group,
               SecurityGroupRule: translate.security_group_rule,
               FloatingIP: translate.floating_ip}
# existing NB object (or None), the new one -> what to write
Adjust = Callable[[Optional[Model], Model], Model]


class MirrorGaveUp(api.StoreError):
    """Lost the compare-and-swap race ATTEMPTS times in a row."""


def left_to_repair(method):
    """For the API path (postcommits, callbacks, the L3 plugin's writes): a store that is
    down must not fail a call whose DB transaction has committed (ML2 would even delete what
    it just created), so the error is logged and the write left to the repair pass
    (repair.py), which finds the object missing or older than Neutron's revision."""
    @functools.wraps(method)
    def mirrored(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except api.StoreError as e:
            LOG.warning('NB store: %s not mirrored now, left to the repair pass: %s',
                        method.__name__, e)
            return None
    return mirrored


def mark_id(table: str, id: str) -> str:
    return f'{table}/{id}'


def _stale(mark: Optional[api.Record], revision: Optional[int]) -> bool:
    """Whether Neutron's ``revision`` of an object is older than what was mirrored (or the
    object was deleted since)."""
    if mark is None:
        return False
    seen, deleted = mark.value.get('revision_number'), mark.value.get('deleted', False)
    if revision is None or seen is None:
        return deleted
    return revision <= seen if deleted else revision < seen


def _expect(record: Optional[api.Record]) -> int:
    return record.revision if record is not None else api.MUST_NOT_EXIST


class NbMirror:
    """Writes Neutron's view of objects into ``store``."""

    def __init__(self, store: api.Store, attempts: int = ATTEMPTS):
        self.store = store
        self.attempts = attempts

    def upsert(self, model: type[Model], neutron: dict, adjust: Optional[Adjust] = None,
               **extra) -> Optional[Model]:
        """Write ``neutron`` (a Neutron API dict) as a ``model`` object; ``extra`` goes to its
        translator (translate.py). Returns what the store holds, or None when Neutron's dict
        is older than what was mirrored."""
        table, id = model.table, neutron['id']
        revision = neutron.get('revision_number')
        allocated = None
        for _ in range(self.attempts):
            record = self.store.get(table, id)
            mark = self.store.get(MIRROR_TABLE, mark_id(table, id))
            if _stale(mark, revision):
                LOG.debug('%s/%s: revision %s older than mirrored', table, id, revision)
                return None
            existing = model.from_doc(record.value, record.revision) if record else None
            fields = dict(extra)
            if model in KEY_KINDS:
                if existing is not None:
                    fields['key'] = existing.key
                elif mark is not None and mark.value.get('key'):
                    fields['key'] = mark.value['key']  # the record was lost: same key again
                else:
                    allocated = allocated or self.store.allocate_key(KEY_KINDS[model])
                    fields['key'] = allocated
            obj = TRANSLATORS[model](neutron, **fields)
            if adjust is not None:
                obj = adjust(existing, obj)
            ops = []
            if existing is None or existing.to_doc() != obj.to_doc():
                ops.append(api.Put(table, id, obj.to_doc(), expect=_expect(record)))
            new_mark = {'revision_number': revision, 'deleted': False}
            if 'key' in fields:
                new_mark['key'] = fields['key']
            if mark is None or mark.value != new_mark:
                ops.append(api.Put(MIRROR_TABLE, mark_id(table, id), new_mark,
                                   expect=_expect(mark)))
            if not ops:
                return existing
            try:
                written = self.store.commit(ops)
            except api.Conflict:
                continue
            obj.revision = written if ops[0].table == table else existing.revision
            return obj
        raise MirrorGaveUp(f'{table}/{id}: {self.attempts} conflicting writers in a row')

    def delete(self, table: str, id: str, revision: Optional[int] = None) -> None:
        """Delete the NB object (if there) and leave a tombstone of Neutron's last revision."""
        for _ in range(self.attempts):
            record = self.store.get(table, id)
            mark = self.store.get(MIRROR_TABLE, mark_id(table, id))
            seen = mark.value.get('revision_number') if mark else None
            last = max(r for r in (revision, seen, 0) if r is not None)
            ops = [api.Put(MIRROR_TABLE, mark_id(table, id),
                           {'revision_number': last, 'deleted': True}, expect=_expect(mark))]
            if record is not None:
                ops.append(api.Delete(table, id, expect=record.revision))
            try:
                self.store.commit(ops)
                return
            except api.Conflict:
                continue
        raise MirrorGaveUp(f'{table}/{id}: {self.attempts} conflicting writers in a row')

    def delete_many(self, table: str, ids: Iterable[str]) -> None:
        for id in ids:
            self.delete(table, id)

    def ids_where(self, model: type[Model], predicate) -> list[str]:
        """Ids of the NB objects of ``model`` for which ``predicate(obj)`` holds."""
        return [r.id for r in self.store.list(model.table)
                if predicate(model.from_doc(r.value, r.revision))]

    def has(self, model: type[Model], id: str) -> bool:
        return self.store.get(model.table, id) is not None


def schedule_gateway(store: api.Store) -> Adjust:
    """Router.gateway_chassis as df-api keeps it (l3_scheduler): a gateway on a new network
    gets every candidate chassis, least-loaded first (the other routers' lists make the load,
    live chassis before silent ones); while it stays on its network the list is never
    reordered, only extended with new candidates and rid of chassis that can no longer hold
    it (l3_scheduler.extended, what df-api's scheduler job does), so each sync of the router
    (and each repair pass) does what that job does; cleared with the gateway."""
    def adjust(existing: Optional[Router], new: Router) -> Router:
        info = new.external_gateway_info
        if info is None:
            return new
        record = store.get(Network.table, info.network_id)
        network = Network.from_doc(record.value) if record else None
        load = l3_scheduler.Load(Router.from_doc(r.value) for r in store.list(Router.table)
                                 if r.id != new.id)
        chassis = [Chassis.from_doc(r.value) for r in store.list(Chassis.table)]
        ordered = l3_scheduler.candidates(chassis, l3_scheduler.physnet_of(network), load,
                                          set(store.heartbeats()))
        if existing is not None and existing.external_gateway_info is not None and \
                existing.external_gateway_info.network_id == info.network_id:
            ordered = l3_scheduler.extended(existing.gateway_chassis, ordered)
        return new.model_copy(update={'gateway_chassis': ordered})
    return adjust
