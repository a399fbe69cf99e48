"""dfctl: look at a Dragonflow deployment (status, flows) and run the demo."""
import argparse
import re
import subprocess
import sys

from dragonflow import conf as df_conf
from dragonflow import store as df_store
from dragonflow.controller import apps
from dragonflow.model import Chassis, ChassisStatus, Port, Router
from dragonflow.model.objects import DEVICE_OWNER_CHASSIS_SNAT
from dragonflow.store import api


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='dfctl', description=__doc__)
    parser.add_argument('--config-file', action='append', default=[],
                        help='Dragonflow INI file(s) naming the store ([store] url).')
    commands = parser.add_subparsers(dest='command', required=True)

    status = commands.add_parser('status', help='chassis, ports bound, store revision seen; '
                                                'routers\' gateway chassis')
    status.set_defaults(run=cmd_status)

    flows = commands.add_parser('flows', help="the switch's flows grouped by owning app")
    flows.add_argument('--app', choices=sorted(apps.APP_IDS), help='only this app\'s flows')
    flows.add_argument('--bridge', default=None, help='bridge (default: the configured one)')
    flows.add_argument('--rundir', default=None,
                       help='Open vSwitch run directory holding <bridge>.mgmt')
    flows.set_defaults(run=cmd_flows)

    demo = commands.add_parser('demo', help='an all-in-one deployment with VMs; see README')
    demo.add_argument('--once', action='store_true',
                      help='exit after the connectivity matrix; status 0 only if it is right')
    demo.add_argument('--workdir', default=None, help='where the demo keeps its files')
    demo.set_defaults(run=cmd_demo)

    args = parser.parse_args(argv)
    conf = df_conf.load(['--config-file=' + f for f in args.config_file])
    try:
        return args.run(args, conf)
    except api.StoreError as e:
        print(f'dfctl: the store at {conf.store.url} is not reachable: {e}', file=sys.stderr)
        return 2


def cmd_status(args, conf) -> int:
    store = df_store.connect(conf.store.url, timeout=conf.store.timeout)
    revision = store.revision()
    ports = [Port.from_doc(r.value, r.revision) for r in store.list(Port.table)]
    beats = store.heartbeats()  # only those not expired: the others are down
    print(f'store {conf.store.url} at revision {revision}')
    rows = [('CHASSIS', 'TUNNEL IP', 'STATE', 'PORTS BOUND', 'NETWORKS', 'ROUTERS',
             'REVISION SEEN')]
    for record in store.list(Chassis.table):
        chassis = Chassis.from_doc(record.value, record.revision)
        bound = sum(1 for p in ports if p.binding_host_id == chassis.id and p.status == 'ACTIVE')
        if chassis.id in beats:
            status = ChassisStatus.model_validate(beats[chassis.id])
            rows.append((chassis.id, chassis.tunnel_ip, 'up', str(bound),
                         str(len(status.networks)), str(len(status.routers)),
                         f'{status.revision_seen} / {revision}'))
        else:  # no heartbeat within three intervals
            rows.append((chassis.id, chassis.tunnel_ip, 'DOWN', str(bound), '-', '-',
                         f'- / {revision}'))
    print(_table(rows))
    routers = _gateway_rows(store, ports, beats)
    if len(routers) > 1:
        print()
        print(_table(routers))
    return 0


def _gateway_rows(store, ports, beats) -> list[tuple]:
    """Per router with a gateway: its gateway chassis in priority order, the chassis whose
    heartbeat says they hold it now (more than one: they disagree on who is alive), and how
    many chassis SNAT it themselves (distributed mode)."""
    holding: dict[str, list[str]] = {}
    for chassis_id, value in sorted(beats.items()):
        for router_id in ChassisStatus.model_validate(value).active_gateways:
            holding.setdefault(router_id, []).append(chassis_id)
    snat = {}
    for port in ports:
        if port.device_owner == DEVICE_OWNER_CHASSIS_SNAT:
            snat[port.device_id] = snat.get(port.device_id, 0) + 1
    rows = [('ROUTER', 'NAME', 'GATEWAY CHASSIS', 'ACTIVE ON', 'CHASSIS SNAT')]
    for record in store.list(Router.table):
        router = Router.from_doc(record.value, record.revision)
        if router.external_gateway_info is None:
            continue
        rows.append((router.id, router.name or '-', ','.join(router.gateway_chassis) or '-',
                     ','.join(holding.get(router.id, [])) or '-',
                     str(snat.get(router.id, 0))))
    return rows


def cmd_flows(args, conf) -> int:
    bridge = args.bridge or conf.controller.integration_bridge
    target = f'{args.rundir}/{bridge}.mgmt' if args.rundir else bridge
    result = subprocess.run(['ovs-ofctl', '-O', 'OpenFlow13', 'dump-flows', target],
                            capture_output=True, text=True)
    if result.returncode != 0:
        print(f'dfctl: cannot read the flows of {target}: {result.stderr.strip()}',
              file=sys.stderr)
        return 2
    print(format_flows(result.stdout, only_app=args.app))
    return 0


def format_flows(dump: str, only_app=None) -> str:
    """ovs-ofctl dump-flows output regrouped by the app named in each flow's cookie."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for line in dump.splitlines():
        cookie = re.search(r'cookie=(0x[0-9a-f]+)', line)
        if not cookie:
            continue
        packets = int(re.search(r'n_packets=(\d+)', line).group(1))
        flow = re.sub(r'\s*(cookie|duration|n_packets|n_bytes|idle_age|hard_age)=[^ ,]*,?', '',
                      line).strip()
        groups.setdefault(apps.app_name(int(cookie.group(1), 16)), []).append((packets, flow))
    out = []
    for name in [a.NAME for a in apps.APPS] + ['unknown']:
        if name not in groups or (only_app and name != only_app):
            continue
        flows = groups[name]
        out.append(f'== {name}: {len(flows)} flows, {sum(p for p, _ in flows)} packets')
        out += [f'  {packets:>8}  {flow}' for packets, flow in flows]
    return '\n'.join(out)


def _table(rows) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return '\n'.join('  '.join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def cmd_demo(args, conf) -> int:
    from dragonflow.cli import demo
    return demo.run(once=args.once, workdir=args.workdir)


if __name__ == '__main__':
    sys.exit(main())
