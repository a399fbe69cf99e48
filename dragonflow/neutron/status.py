"""The status worker: the chassis' StatusReports told to Neutron.

Under Neutron a chassis never writes a port or floating IP (status_source 'report'): it writes
a StatusReport of its own (controller/reports.py), and this worker, run by
neutron-periodic-workers (DfMechanismDriver.get_workers), turns each into Neutron's status:

- a port ACTIVE: the chassis has its flows in, so Dragonflow's provisioning block is complete
  (provisioning_blocks.provisioning_complete; ML2 makes the port ACTIVE once no block is
  left, and again when the port had none, after a DOWN);
- a port DOWN: unplugged from that chassis (the core plugin's update_port_status);
- a floating IP ACTIVE or DOWN: the L3 plugin's update_floatingip_status.

A report counts only if it speaks of the object as the NB store has it now: its
object_revision is the NB object's revision, and a port's report comes from the chassis it is
bound to. Any older report says nothing of the current version (the chassis reports again for
the new one), so reports may be read late, twice or out of order: the result is the same. A
report of an object neither the NB store nor Neutron has any more is deleted (its chassis may
be gone for good).

It follows the store's change log from the revision it last handled; on start, and when the
log was compacted past that revision, it reads every report again first. Store errors and
Neutron's are retried with backoff from the last revision handled; handling a report twice is
harmless.
"""
import dataclasses
import logging
from typing import Callable, Optional, Protocol

from dragonflow.model import FloatingIP, Port, StatusReport
from dragonflow.neutron.workers import ThreadWorker
from dragonflow.store import api

LOG = logging.getLogger(__name__)
BACKOFF = (0.1, 5.0)  # seconds: the first pause after an error, the longest
WAIT_SECONDS = 1.0  # one wait for news, so that a stop is noticed

ACTIVE, DOWN, STALE, GONE = 'active', 'down', 'stale', 'gone'


class Neutron(Protocol):
    """What the worker asks of Neutron (PluginStatus: through its plugins)."""

    def port_active(self, port_id: str) -> None:
        """Dragonflow's provisioning of the port is complete."""

    def port_down(self, port_id: str) -> None:
        """The port is DOWN."""

    def floatingip_status(self, floatingip_id: str, status: str) -> None:
        """The floating IP's status is ``status``."""

    def exists(self, resource: str, id: str) -> bool:
        """Neutron still has the port ('ports') or floating IP ('floatingips')."""


def decide(report: StatusReport, current: Optional[api.Record]) -> str:
    """What a report means, given the NB record of its object (None: absent): ACTIVE or
    DOWN to tell Neutron, STALE to ignore (it speaks of another version, or of a chassis the
    port is no longer bound to), GONE when the NB store has no such object (deleted, unless
    Neutron says otherwise: the mirror may be behind)."""
    if current is None:
        return GONE
    if current.revision != report.object_revision:
        return STALE
    if report.resource == Port.table and \
            current.value.get('binding:host_id') != report.chassis:
        return STALE
    return ACTIVE if report.status == 'ACTIVE' else DOWN


@dataclasses.dataclass
class StatusFollower:
    """The decision loop without the thread: ``step`` handles what is due once."""
    store: api.Store
    neutron: Neutron
    after: Optional[int] = None  # the last revision handled; None: read every report again
    handled: int = 0  # reports told to Neutron (tests and logs)

    def step(self, wait: float = 0.0) -> None:
        """Read every report (at start, after compaction), else the next page of changes
        (waiting up to ``wait`` seconds for one). Raises what the store or Neutron raised;
        ``after`` then still names the last revision fully handled."""
        if self.after is None:
            revision = self.store.revision()  # first: what changes after it comes as events
            for record in self.store.list(StatusReport.table):
                self.handle(StatusReport.from_doc(record.value, record.revision))
            self.after = revision
            return
        try:
            batch = self.store.changes(self.after)
        except api.Compacted:
            LOG.warning('change log compacted past revision %d: reading every status report '
                        'again', self.after)
            self.after = None
            return
        if not batch:
            if wait:
                self.store.wait(self.after, wait)
            return
        # The newest version of each report in this page; deleted ones need nothing.
        latest = {}
        for event in batch:
            if event.table == StatusReport.table:
                latest[event.id] = None if event.deleted else event
        for event in latest.values():
            if event is not None:
                self.handle(StatusReport.from_doc(event.value, event.revision))
        self.after = batch[-1].revision

    def handle(self, report: StatusReport) -> None:
        if report.resource not in (Port.table, FloatingIP.table):
            LOG.warning('status report %s of an unknown resource: ignored', report.id)
            return
        verdict = decide(report, self.store.get(report.resource, report.resource_id))
        if verdict == STALE:
            return
        if verdict == GONE:
            if not self.neutron.exists(report.resource, report.resource_id):
                self._delete(report)
            return
        LOG.info('%s %s is %s on chassis %s (revision %d)', report.resource,
                 report.resource_id, report.status, report.chassis, report.object_revision)
        if report.resource == Port.table:
            if verdict == ACTIVE:
                self.neutron.port_active(report.resource_id)
            else:
                self.neutron.port_down(report.resource_id)
        else:
            self.neutron.floatingip_status(report.resource_id,
                                           'ACTIVE' if verdict == ACTIVE else 'DOWN')
        self.handled += 1

    def _delete(self, report: StatusReport) -> None:
        try:
            self.store.delete(StatusReport.table, report.id, expect=report.revision)
            LOG.info('status report %s deleted: Neutron has no %s %s', report.id,
                     report.resource, report.resource_id)
        except api.Conflict:
            pass  # rewritten or deleted meanwhile: its next version is an event of its own


class PluginStatus:
    """Neutron's side, through its plugins, with an admin context (in the periodic workers'
    process, where the plugins are loaded)."""

    def __init__(self):
        from neutron_lib import context as n_context
        from neutron_lib.plugins import constants as plugin_constants
        from neutron_lib.plugins import directory
        self.context = n_context.get_admin_context()
        self.core = directory.get_plugin()
        self.l3 = directory.get_plugin(plugin_constants.L3)

    def port_active(self, port_id: str) -> None:
        from neutron.db import provisioning_blocks
        from neutron_lib.callbacks import resources

        from dragonflow.neutron import PROVISIONING_ENTITY
        provisioning_blocks.provisioning_complete(self.context, port_id, resources.PORT,
                                                  PROVISIONING_ENTITY)

    def port_down(self, port_id: str) -> None:
        from neutron_lib import constants as n_const
        self.core.update_port_status(self.context, port_id, n_const.PORT_STATUS_DOWN)

    def floatingip_status(self, floatingip_id: str, status: str) -> None:
        if self.l3 is None:
            LOG.warning('no L3 plugin: floating IP %s stays as it is', floatingip_id)
            return
        self.l3.update_floatingip_status(self.context, floatingip_id, status)

    def exists(self, resource: str, id: str) -> bool:
        from neutron_lib import exceptions
        try:
            if resource == Port.table:
                self.core.get_port(self.context, id, fields=['id'])
            elif self.l3 is not None:
                self.l3.get_floatingip(self.context, id, fields=['id'])
        except exceptions.NotFound:
            return False
        return True


class StatusWorker(ThreadWorker):
    """Follows the status reports in a thread of the neutron-periodic-workers process
    (worker_process_count 0); the store is connected in start(), after the fork."""
    thread_name = 'df-status'

    def __init__(self, connect: Optional[Callable[[], api.Store]] = None,
                 neutron: Optional[Callable[[], Neutron]] = None):
        super().__init__('dragonflow status reports')
        self._connect, self._neutron = connect, neutron
        self.follower: Optional[StatusFollower] = None

    def _connector(self) -> Callable[[], api.Store]:
        if self._connect is not None:
            return self._connect
        from oslo_config import cfg

        from dragonflow import store as nb
        from dragonflow.neutron import config
        conf = config.register(cfg.CONF).df
        return lambda: nb.connect(conf.store_url, timeout=conf.store_timeout)

    def _run(self) -> None:
        connect, pause, store = self._connector(), BACKOFF[0], None
        while not self._stop.is_set():
            try:
                store = store or connect()
                if self.follower is None:
                    self.follower = StatusFollower(store, (self._neutron or PluginStatus)())
                self.follower.step(wait=WAIT_SECONDS)
                pause = BACKOFF[0]
            except Exception as e:  # noqa: BLE001 - the store or Neutron away: retried
                after = self.follower.after if self.follower else None
                LOG.warning('status reports after revision %s not handled, retrying in '
                            '%.1f s: %s', after, pause, e)
                self._stop.wait(pause)
                pause = min(pause * 2, BACKOFF[1])
        if store is not None:
            store.close()
