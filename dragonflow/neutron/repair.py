"""The repair pass: Neutron's database written again into the NB store, what differs fixed.

ML2 only logs a failed update or delete postcommit, and a store outage during a postcommit or
callback leaves the NB store behind Neutron. Every ``[df] repair_interval`` seconds a worker
in neutron-periodic-workers reads every mirrored resource from Neutron and upserts it (the
mirror writes only what differs, and never goes back to an older revision), then deletes the
NB objects of those tables that Neutron no longer has. The NB ids are read before Neutron's
lists, so an object created meanwhile is never taken for a deleted one.
"""
import logging
import threading

from neutron_lib import context as n_context
from neutron_lib import worker
from neutron_lib.plugins import constants as plugin_constants
from neutron_lib.plugins import directory
from oslo_config import cfg

from dragonflow import store as nb
from dragonflow.model import (
    FloatingIP,
    Network,
    Port,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from dragonflow.neutron import config, mirror
from dragonflow.neutron.mech_driver import network_dict

LOG = logging.getLogger(__name__)
TABLES = (Network, Subnet, Port, SecurityGroup, SecurityGroupRule, Router, FloatingIP)


class RepairPass:
    """One comparison of Neutron (``core``: the ML2 plugin, ``l3``: df-l3 or None) with the
    NB store the mirror writes."""

    def __init__(self, nb_mirror: mirror.NbMirror, core, l3=None):
        self.mirror, self.core, self.l3 = nb_mirror, core, l3

    def run(self, context) -> dict:
        """Returns how many objects of each table Neutron has and how many were removed."""
        before = {m.table: {r.id for r in self.mirror.store.list(m.table)} for m in TABLES}
        seen = {m.table: set() for m in TABLES}
        for model, objects in self._neutron(context):
            for obj in objects:
                seen[model.table].add(obj['id'])
                self._guarded(model.table, obj['id'], self._write, context, model, obj)
        removed = {}
        for table, ids in before.items():
            gone = sorted(ids - seen[table])
            for id in gone:
                self._guarded(table, id, self.mirror.delete, table, id)
            removed[table] = len(gone)
        return {'seen': {t: len(ids) for t, ids in seen.items()}, 'removed': removed}

    def _neutron(self, context):
        yield Network, [network_dict(_Dict(n)) for n in self.core.get_networks(context)]
        yield Subnet, self.core.get_subnets(context)
        yield SecurityGroup, self.core.get_security_groups(context)
        yield SecurityGroupRule, self.core.get_security_group_rules(context)
        yield Port, self.core.get_ports(context)
        if self.l3 is not None:
            yield Router, self.l3.get_routers(context)
            yield FloatingIP, self.l3.get_floatingips(context)

    def _write(self, context, model, obj) -> None:
        if model is Router:
            self.l3.sync_router(context, obj['id'])
        elif model is FloatingIP:
            self.l3.sync_floatingip(context, obj['id'])
        elif model is SecurityGroup:
            self.mirror.upsert(model, {k: v for k, v in obj.items()
                                       if k != 'security_group_rules'})
        else:
            self.mirror.upsert(model, obj)

    @staticmethod
    def _guarded(table, id, write, *args) -> None:
        """One object that cannot be written is logged; the pass goes on."""
        try:
            write(*args)
        except Exception:  # noqa: BLE001 - level-triggered: the next pass tries again
            LOG.warning('repair of %s/%s failed', table, id, exc_info=True)


class _Dict:
    """What network_dict reads of an ML2 NetworkContext, for a plain network dict."""

    def __init__(self, current: dict):
        self.current = current


class RepairWorker(worker.BaseWorker):
    """Runs the repair pass every [df] repair_interval seconds (a thread of one periodic
    worker process)."""

    def __init__(self):
        super().__init__(worker_process_count=0, desc='dragonflow NB repair')
        self._stop = threading.Event()
        self._thread = None

    def start(self, name='neutron-server', desc=None):
        super().start(name, desc)
        config.register()
        self._thread = threading.Thread(target=self._loop, name='df-repair', daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        conf = cfg.CONF.df
        store = nb.connect(conf.store_url, timeout=conf.store_timeout)
        l3 = directory.get_plugin(plugin_constants.L3)
        repair = RepairPass(mirror.NbMirror(store), directory.get_plugin(),
                            l3 if hasattr(l3, 'sync_router') else None)  # df-l3 only
        while not self._stop.wait(conf.repair_interval):
            try:
                counts = repair.run(n_context.get_admin_context())
                LOG.debug('repair pass: %s', counts)
            except Exception:  # noqa: BLE001 - Neutron's DB or the store away: next time
                LOG.warning('repair pass failed', exc_info=True)
        store.close()

    def stop(self):
        self._stop.set()

    def wait(self):
        if self._thread is not None:
            self._thread.join(timeout=10)

    def reset(self):
        pass
