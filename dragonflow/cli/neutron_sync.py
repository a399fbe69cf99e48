"""df-neutron-sync: one repair pass (dragonflow/neutron/repair.py) run by hand.

    df-neutron-sync --config-file neutron.conf --config-file ml2_conf.ini --mode log|repair

Loads Neutron's configuration and plugins the way Neutron's own commands do (its common
options, then neutron.manager.init(): ML2 with the ``df`` driver, df-l3), reads ``[df]
store_url`` from those files, compares Neutron's database with the NB store and prints the
per-table counts and each difference. ``--mode log`` writes nothing; ``--mode repair`` writes
what differs through the driver's mirror.

Exit status: 0 in sync (log) or repaired; 1 when differences remain (log mode, or objects that
could not be written); 2 on a bad configuration or an NB store that does not answer.
"""
import argparse
import sys

from dragonflow.neutron import repair

IN_SYNC, DIFFERENCES, UNUSABLE = 0, 1, 2


def _arguments(argv):
    parser = argparse.ArgumentParser(
        prog='df-neutron-sync', description=__doc__.split('\n\n')[0],
        epilog='Any other argument (--config-file, --config-dir...) is Neutron\'s.')
    parser.add_argument('--mode', choices=repair.MODES, default='log',
                        help='log: report the differences; repair: write them (default log)')
    parser.add_argument('--grace', type=float, default=repair.GRACE,
                        help='seconds: changes younger than this are left to their '
                             f'postcommits (default {repair.GRACE:g})')
    return parser.parse_known_args(argv)


def _fail(message: str) -> int:
    print(f'df-neutron-sync: {message}', file=sys.stderr)
    return UNUSABLE


def _configure(neutron_args):
    """Neutron's configuration (its common options and ours); returns cfg.CONF."""
    from neutron.common import config as neutron_config
    from oslo_config import cfg

    from dragonflow.neutron import config
    neutron_config.register_common_config_options()
    config.register(cfg.CONF)
    neutron_config.init(neutron_args)
    neutron_config.setup_logging()
    return cfg.CONF


def _load_plugins() -> None:
    """ML2 (with the df driver) and the service plugins, as neutron-server loads them."""
    from neutron import manager
    manager.init()


def _connect(conf):
    from dragonflow import store as nb
    store = nb.connect(conf.df.store_url, timeout=conf.df.store_timeout)
    try:
        store.revision()  # answers, or we say so before reading Neutron
    except BaseException:
        store.close()
        raise
    return store


def report(result: repair.Result, out=sys.stdout) -> None:
    counts = result.counts()
    verb = 'repaired' if result.mode == 'repair' else 'differs'
    print(f'{"table":24} {"created":>8} {"updated":>8} {"deleted":>8}', file=out)
    for table, by_action in counts.items():
        print(f'{table:24} {by_action["created"]:8} {by_action["updated"]:8} '
              f'{by_action["deleted"]:8}', file=out)
    for difference in result.differences:
        print(f'{verb}: {difference}', file=out)
    for difference in result.failed:
        print(f'failed: {difference}', file=out)
    if result.recent:
        print(f'{result.recent} recent changes left to their postcommits', file=out)
    print('in sync' if result.in_sync else
          f'{len(result.differences)} differences ({result.mode})', file=out)


def main(argv=None) -> int:
    args, neutron_args = _arguments(sys.argv[1:] if argv is None else argv)
    from oslo_config import cfg
    try:
        conf = _configure(neutron_args)
    except (cfg.Error, RuntimeError) as e:
        return _fail(f'Neutron configuration not usable: {e}')
    from dragonflow.neutron import mirror
    from dragonflow.store import api
    try:
        store = _connect(conf)  # before the plugins: their driver would fail on it too
    except (api.StoreError, OSError, ValueError) as e:
        return _fail(f'NB store {conf.df.store_url} unusable: {e}')
    try:
        try:
            _load_plugins()
        except Exception as e:  # noqa: BLE001 - any plugin's initialize, Neutron's DB
            return _fail(f'Neutron plugins not loadable: {type(e).__name__}: {e}')
        try:
            result = repair.Repair(store, mirror.NbMirror(store), repair.plugin_reader(),
                                   grace=args.grace).run(args.mode)
        except api.StoreError as e:
            return _fail(f'NB store {conf.df.store_url} failed during the pass: {e}')
    finally:
        store.close()
    report(result)
    if result.failed or (args.mode == 'log' and not result.in_sync):
        return DIFFERENCES
    return IN_SYNC


if __name__ == '__main__':
    sys.exit(main())
