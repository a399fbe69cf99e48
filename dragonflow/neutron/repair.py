"""The repair pass: Neutron's database compared with the NB store, what differs written again.

ML2 only logs a failed update or delete postcommit, and a store outage during a postcommit or
an L3 sync leaves the NB store behind Neutron. A pass reads, for every mirrored table, the NB
ids and the mirror's marks (``neutron_mirror``: the Neutron revision_number each object was
last written at, or its tombstone), then Neutron's objects (id, revision_number, updated_at):

- a Neutron object with no NB record, or one whose revision_number is newer than its mark
  (or has none), is written through ``NbMirror.upsert``, the driver's own translate path
  (mirror.TRANSLATORS), so the object keeps its NB ``key`` (a lost record gets back the key
  its mark kept);
- an NB object of those tables that Neutron no longer has is deleted with
  ``NbMirror.delete`` (which leaves a tombstone, so a late postcommit cannot bring it back).

Race safety. The NB side is read before Neutron's: an object created meanwhile then shows up
only on Neutron's side, so it is never taken for one Neutron deleted (the reverse order would
delete an object whose create postcommit landed between the two reads). Postcommits run after
Neutron's transaction, so an NB record whose object Neutron does not list is one Neutron has
deleted; deleting it again when its own delete postcommit is in flight is harmless (both write
the same tombstone, conditionally). A difference younger than ``grace`` seconds (Neutron's
updated_at; for an NB object Neutron lacks, the updated_at it was mirrored with) is left
alone: its postcommit may still be on its way, and writing it here would only race that write
and report a difference that is none; the next pass sees it settled. Should the pass write an
older revision than a postcommit did, the mirror refuses it (its marks never go backwards).

Several periodic-worker processes (one per neutron-periodic-workers, on several hosts) may run
passes at the same time: every mirror write is a compare-and-swap on what was read, a key is
allocated only when the NB record is absent and a loser of the race takes the winner's, and a
write of what is already there is skipped. Repeated or concurrent passes are idempotent: one
NB record and one key per object (tests/unit/neutron/test_repair.py).

Order: parents before children on create (networks, subnets, security groups, rules, ports,
routers, floating IPs), children before parents on delete, so the controllers never see an
object whose parent is missing.
"""
import dataclasses
import datetime
import logging
import time
from typing import Callable, Optional, Protocol

from neutron_lib import constants as n_const
from pydantic import ValidationError

from dragonflow.model import (
    FloatingIP,
    Model,
    Network,
    Port,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from dragonflow.neutron import mirror
from dragonflow.neutron.workers import ThreadWorker
from dragonflow.store import api

LOG = logging.getLogger(__name__)
# Parents first: the create/update order; deletes go the other way.
ORDER = (Network, Subnet, SecurityGroup, SecurityGroupRule, Port, Router, FloatingIP)
GRACE = 30.0
MODES = ('log', 'repair')
CREATED, UPDATED, DELETED = 'created', 'updated', 'deleted'


class NeutronReader(Protocol):
    """What the pass reads of Neutron (PluginReader: through its plugins)."""

    def objects(self, model: type[Model]) -> list[dict]:
        """Neutron's API dicts of the resource ``model`` mirrors (with id, revision_number,
        updated_at)."""

    def extra(self, model: type[Model], neutron: dict) -> dict:
        """The translator's keyword arguments for one object (mirror.upsert ``extra``)."""


@dataclasses.dataclass(frozen=True)
class Difference:
    table: str
    id: str
    action: str  # CREATED, UPDATED or DELETED
    neutron_revision: Optional[int] = None
    mirrored_revision: Optional[int] = None

    def __str__(self) -> str:
        return (f'{self.action:8} {self.table}/{self.id} neutron revision '
                f'{self.neutron_revision} mirrored {self.mirrored_revision}')


@dataclasses.dataclass
class Result:
    mode: str
    differences: list[Difference] = dataclasses.field(default_factory=list)
    failed: list[Difference] = dataclasses.field(default_factory=list)
    recent: int = 0  # left to their postcommits (younger than the grace period)

    def counts(self) -> dict:
        """{table: {created, updated, deleted}} of the differences found."""
        counts = {m.table: {CREATED: 0, UPDATED: 0, DELETED: 0} for m in ORDER}
        for difference in self.differences:
            counts[difference.table][difference.action] += 1
        return counts

    @property
    def in_sync(self) -> bool:
        return not self.differences


def _age(updated_at, now: float) -> float:
    """Seconds since Neutron's updated_at (ISO text or datetime, UTC); inf when unknown."""
    if not updated_at:
        return float('inf')
    if isinstance(updated_at, str):
        try:
            updated_at = datetime.datetime.fromisoformat(updated_at)
        except ValueError:
            return float('inf')
    if updated_at.tzinfo is None:
        updated_at = updated_at.replace(tzinfo=datetime.timezone.utc)
    return now - updated_at.timestamp()


class Repair:
    """One pass at a time over ``store`` (see the module docstring)."""

    def __init__(self, store: api.Store, nb_mirror: mirror.NbMirror, reader: NeutronReader,
                 grace: float = GRACE, now: Callable[[], float] = time.time):
        self.store, self.mirror, self.reader = store, nb_mirror, reader
        self.grace, self.now = grace, now

    def run(self, mode: str = 'repair') -> Result:
        if mode not in MODES:
            raise ValueError(f'mode {mode!r}: one of {MODES}')
        result = Result(mode)
        # NB first (see the module docstring), then Neutron.
        in_nb = {m.table: {r.id: r.value.get('updated_at') for r in self.store.list(m.table)}
                 for m in ORDER}
        marks = {r.id: r.value for r in self.store.list(mirror.MIRROR_TABLE)}
        in_neutron = {m: self.reader.objects(m) for m in ORDER}
        now = self.now()
        for model in ORDER:
            for neutron in in_neutron[model]:
                difference = self._compare(model, neutron, in_nb, marks)
                if difference is None:
                    continue
                if _age(neutron.get('updated_at'), now) < self.grace:
                    result.recent += 1
                    continue
                result.differences.append(difference)
                if mode == 'repair':
                    self._write(result, difference, model, neutron)
        for model in reversed(ORDER):
            listed = {n['id'] for n in in_neutron[model]}
            for id in sorted(set(in_nb[model.table]) - listed):
                if _age(in_nb[model.table][id], now) < self.grace:
                    result.recent += 1
                    continue
                mark = marks.get(mirror.mark_id(model.table, id)) or {}
                difference = Difference(model.table, id, DELETED,
                                        mirrored_revision=mark.get('revision_number'))
                result.differences.append(difference)
                if mode == 'repair':
                    self._write(result, difference, model, None)
        return result

    @staticmethod
    def _compare(model, neutron: dict, in_nb: dict, marks: dict) -> Optional[Difference]:
        table, id = model.table, neutron['id']
        revision = neutron.get('revision_number')
        mark = marks.get(mirror.mark_id(table, id)) or {}
        seen = None if mark.get('deleted') else mark.get('revision_number')
        if id not in in_nb[table]:
            return Difference(table, id, CREATED, revision, seen)
        if seen is None or (revision is not None and revision > seen):
            return Difference(table, id, UPDATED, revision, seen)
        return None

    def _write(self, result: Result, difference: Difference, model, neutron) -> None:
        """One object written or deleted; one that cannot be translated is logged and the
        pass goes on (a store error ends the pass: the next one tries again)."""
        try:
            if neutron is None:
                self.mirror.delete(model.table, difference.id)
                return
            adjust = mirror.schedule_gateway(self.store) if model is Router else None
            if self.mirror.upsert(model, neutron, adjust=adjust,
                                  **self.reader.extra(model, neutron)) is None:
                # Its tombstone is as new as Neutron's revision: left for an operator to see.
                LOG.warning('repair of %s refused: the mirror has it deleted', difference)
                result.failed.append(difference)
        except (ValidationError, KeyError, TypeError, ValueError):
            LOG.warning('repair of %s failed', difference, exc_info=True)
            result.failed.append(difference)


class PluginReader:
    """Neutron read through its loaded plugins (ML2 and df-l3) with an admin context."""

    def __init__(self, context, core, l3=None):
        self.context, self.core, self.l3 = context, core, l3

    def objects(self, model: type[Model]) -> list[dict]:
        listing = {Network: self.core.get_networks, Subnet: self.core.get_subnets,
                   SecurityGroup: self.core.get_security_groups,
                   SecurityGroupRule: self.core.get_security_group_rules,
                   Port: self.core.get_ports}
        if model in listing:
            return listing[model](self.context)
        if self.l3 is None:  # no df-l3: no router or floating IP is Dragonflow's
            return []
        if model is Router:
            return self.l3.get_routers(self.context)
        return self.l3.get_floatingips(self.context)

    def extra(self, model: type[Model], neutron: dict) -> dict:
        """What df-l3's syncs pass the translators: a router's interface ports, a floating
        IP's own port (the API dict does not show it)."""
        if model is Router:
            return {'interface_ports': self.core.get_ports(self.context, filters={
                'device_id': [neutron['id']],
                'device_owner': [n_const.DEVICE_OWNER_ROUTER_INTF]})}
        if model is FloatingIP:
            fip = self.l3._get_floatingip(self.context, neutron['id'])
            return {'floating_port_id': fip.floating_port_id}
        return {}


def plugin_reader() -> PluginReader:
    """A reader over the plugins Neutron loaded (in neutron-periodic-workers or after
    neutron.manager.init())."""
    from neutron_lib import context as n_context
    from neutron_lib.plugins import constants as plugin_constants
    from neutron_lib.plugins import directory
    l3 = directory.get_plugin(plugin_constants.L3)
    return PluginReader(n_context.get_admin_context(), directory.get_plugin(),
                        l3 if hasattr(l3, 'sync_router') else None)  # df-l3's only


def log_result(result: Result) -> None:
    for difference in result.differences:
        LOG.info('repair (%s): %s', result.mode, difference)
    if result.differences or result.failed:
        LOG.warning('repair pass (%s): %d differences, %d failed, %d left to postcommits',
                    result.mode, len(result.differences), len(result.failed), result.recent)


class RepairWorker(ThreadWorker):
    """Runs a repair pass every [df] repair_interval seconds, in a thread of the
    neutron-periodic-workers process (worker_process_count 0). A failed pass (Neutron's DB
    or the store away) is logged and the next interval tries again."""
    thread_name = 'df-repair'

    def __init__(self, connect: Optional[Callable[[], api.Store]] = None,
                 reader: Optional[Callable[[], NeutronReader]] = None,
                 interval: Optional[float] = None):
        super().__init__('dragonflow NB repair')
        self._connect, self._reader, self._interval = connect, reader, interval
        self.passes = 0

    def _settings(self):
        from oslo_config import cfg

        from dragonflow import store as nb
        from dragonflow.neutron import config
        conf = config.register(cfg.CONF).df
        connect = self._connect or (lambda: nb.connect(conf.store_url,
                                                       timeout=conf.store_timeout))
        interval = self._interval if self._interval is not None else conf.repair_interval
        # [df] repair_grace once config.py has it; GRACE until then.
        grace = getattr(conf, 'repair_grace', GRACE)
        return connect, self._reader or plugin_reader, interval, grace

    def _run(self) -> None:
        connect, reader, interval, grace = self._settings()
        store = None
        while not self._stop.wait(interval):
            try:
                store = store or connect()
                repair = Repair(store, mirror.NbMirror(store), reader(), grace=grace)
                log_result(repair.run('repair'))
            except Exception:  # noqa: BLE001 - level-triggered: the next pass tries again
                LOG.warning('repair pass failed; next in %ss', interval, exc_info=True)
            self.passes += 1
        if store is not None:
            store.close()
