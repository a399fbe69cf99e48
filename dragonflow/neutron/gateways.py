"""Gateway chassis lists kept complete under Neutron: df-api's scheduler job, reused.

A router's gateway_chassis is made when its gateway is set (the L3 plugin's sync, see
mirror.schedule_gateway); after that only the chassis change: a new gateway chassis is
registered, one loses its physnet or its record. df-api keeps the lists right with
api/l3_scheduler.Scheduler, which follows the NB change log and only extends lists (never
reorders them: that would move traffic). This worker runs that same Scheduler in
neutron-periodic-workers, over the NB store the plugins mirror into. It only writes the NB
routers' gateway_chassis, which Neutron has no field for, so Neutron's DB stays the truth of
everything else. SNAT stays in 'gateway' mode: distributed SNAT's network:chassis_snat ports
would be NB-only ports, which Neutron (and the repair pass) do not know.
"""
import logging
import types

from dragonflow.neutron.workers import ThreadWorker

LOG = logging.getLogger(__name__)


def scheduler_conf(interval: float) -> types.SimpleNamespace:
    """The [l3] options l3_scheduler.Scheduler reads, as df-api's conf has them."""
    return types.SimpleNamespace(l3=types.SimpleNamespace(snat_mode='gateway',
                                                          schedule_interval=interval))


class GatewayWorker(ThreadWorker):
    """l3_scheduler.Scheduler in a thread of the periodic workers' process."""
    thread_name = 'df-gateways'

    def __init__(self):
        super().__init__('dragonflow gateway chassis')

    def _run(self) -> None:
        from oslo_config import cfg

        from dragonflow import store as nb
        from dragonflow.api import l3_scheduler
        from dragonflow.neutron import config
        conf = config.register(cfg.CONF).df
        store = nb.connect(conf.store_url, timeout=conf.store_timeout)
        try:
            l3_scheduler.Scheduler(store, scheduler_conf(conf.schedule_interval)).run(
                self._stop)
        finally:
            store.close()
