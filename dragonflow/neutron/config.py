"""The ``[df]`` options Neutron's Dragonflow driver and L3 plugin read from Neutron's own
configuration files (ml2_conf.ini or neutron.conf), registered on Neutron's cfg.CONF."""
from oslo_config import cfg

GROUP = 'df'

OPTIONS = [
    cfg.StrOpt('store_url', default='sqlite:////var/lib/dragonflow/nb.db',
               help='The NB store the driver mirrors Neutron into: sqlite:///path, '
                    'etcd://host:port[,host:port...][/prefix] or redis://host:port[/db]. '
                    'The same store df-controller reads.'),
    cfg.FloatOpt('store_timeout', default=5.0, min=0.1,
                 help='Seconds a store request may take before it counts as failed.'),
    cfg.IntOpt('repair_interval', default=60, min=0,
               help='Seconds between passes that compare Neutron\'s database with the NB '
                    'store and rewrite what differs (a failed postcommit is only logged by '
                    'ML2). 0 disables the pass.'),
    cfg.FloatOpt('schedule_interval', default=60.0, min=1,
                 help='Seconds between full passes over the routers\' gateway chassis lists '
                      '(new gateway chassis appended, gone ones dropped; changes of the '
                      'Chassis records are followed at once in between).'),
    cfg.FloatOpt('repair_grace', default=30.0, min=0,
                 help='Seconds after a change (Neutron\'s updated_at) during which the repair '
                      'pass leaves it to its own postcommit, which may still be on its way.'),
]


def register(conf: cfg.ConfigOpts = cfg.CONF) -> cfg.ConfigOpts:
    """Register the [df] options (idempotent) and return ``conf``."""
    conf.register_opts(OPTIONS, group=GROUP)
    return conf


def list_opts():
    """For oslo-config-generator."""
    return [(GROUP, OPTIONS)]
