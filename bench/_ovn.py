"""OVN on this machine, for side-by-side benchmarks (recipe: shared/notes/harness.md).

NB and SB ovsdb-servers and ovn-northd on unix sockets in the run's directory; chassis like
Dragonflow's lab chassis (a namespace with its own ovsdb-server and ovs-vswitchd, netdev
datapath, br-phy on an underlay bridge) running ovn-controller with Geneve. With
``physical_networks`` each chassis also joins the lab's physical networks (lab/physical.py,
under this cloud's prefix: the first has its own upstream router and internet host) through
br-ex (br-<name> for the others), named in ovn-bridge-mappings as Dragonflow's chassis name
them in bridge_mappings. Every namespace carries the run's prefix; close() stops every daemon
by its pidfile and deletes every namespace with that prefix, after any failure.
"""
import os
import secrets
import shutil
import subprocess

from dragonflow.lab import netns, ovs
from dragonflow.lab.cloud import join_underlay, wait_for
from dragonflow.lab.physical import PhysicalNetwork

UNDERLAY_PREFIX = '172.31.1.'


class OvnChassis:
    def __init__(self, cloud: 'OvnCloud', name: str, index: int):
        self.cloud, self.name = cloud, name
        self.netns = f'{cloud.prefix}-{name}'
        self.tunnel_ip = f'{UNDERLAY_PREFIX}{10 + index}'
        self.dir = os.path.join(cloud.workdir, name)
        self.ovs = ovs.Ovs(self.netns, self.dir)

    def start(self) -> None:
        netns.add(self.netns)
        self.ovs.start()
        join_underlay(self.ovs, self.name, self.cloud.underlay_ns, self.tunnel_ip)
        physicals = self.cloud.physicals.values()
        for physical in physicals:
            physical.join(self)
        mappings = ['external_ids:ovn-bridge-mappings="'
                    + ','.join(p.mapping for p in physicals) + '"'] if physicals else []
        self.ovs.vsctl('set', 'Open_vSwitch', '.', *mappings,
                       f'external_ids:system-id={self.name}',
                       f'external_ids:ovn-remote=unix:{self.cloud.sb_sock}',
                       'external_ids:ovn-encap-type=geneve',
                       f'external_ids:ovn-encap-ip={self.tunnel_ip}',
                       'external_ids:ovn-bridge-datapath-type=netdev')
        self.start_controller()

    def start_controller(self) -> None:
        """ovn-controller, detached (also to start it again after it was killed)."""
        # No --unixctl in ovn-controller 23.03: OVN_RUNDIR places its control socket, and
        # OVS_RUNDIR tells it where br-int.mgmt is.
        subprocess.run(['ip', 'netns', 'exec', self.netns, 'ovn-controller',
                        self.ovs.ovsdb_connection, f'--pidfile={self.dir}/ovn-controller.pid',
                        f'--log-file={self.dir}/ovn-controller.log', '--detach'],
                       check=True, capture_output=True, env=dict(self.ovs.env,
                                                                 OVN_RUNDIR=self.dir))

    @property
    def controller_pid(self):
        return _pid(os.path.join(self.dir, 'ovn-controller.pid'))

    def close(self) -> None:
        _kill(os.path.join(self.dir, 'ovn-controller.pid'))
        self.ovs.stop()
        netns.delete(self.netns)


class OvnCloud:
    def __init__(self, workdir: str, prefix: str = None, physical_networks: tuple = ()):
        self.prefix = prefix or 'ovn' + secrets.token_hex(3)
        self.physicals = {name: PhysicalNetwork(self.prefix, name,
                                                'br-ex' if i == 0 else f'br-{name}'[:15],
                                                with_upstream=i == 0)
                          for i, name in enumerate(physical_networks)}
        self.workdir = workdir
        self.underlay_ns = f'{self.prefix}-underlay'
        self.nb_sock = os.path.join(workdir, 'nb.sock')
        self.sb_sock = os.path.join(workdir, 'sb.sock')
        self.chassis: dict[str, OvnChassis] = {}

    def start(self, chassis: int = 2) -> 'OvnCloud':
        missing = [p for p in ('ovn-northd', 'ovn-controller', 'ovn-nbctl') if not shutil.which(p)]
        if missing or not os.path.exists('/usr/share/ovn/ovn-nb.ovsschema'):
            raise RuntimeError(f'OVN is not installed here ({", ".join(missing) or "schemas"} '
                               'missing): apt-get install ovn-central ovn-host')
        os.makedirs(self.workdir, exist_ok=True)
        try:
            for db in ('nb', 'sb'):
                self._db(db)
            env = dict(os.environ, OVN_RUNDIR=self.workdir, OVS_RUNDIR=self.workdir)
            subprocess.run(['ovn-northd', f'--ovnnb-db=unix:{self.nb_sock}',
                            f'--ovnsb-db=unix:{self.sb_sock}',
                            f'--pidfile={self.workdir}/ovn-northd.pid',
                            f'--log-file={self.workdir}/ovn-northd.log', '--detach'],
                           check=True, capture_output=True, env=env)
            self.nbctl('--no-wait', 'init')
            netns.add(self.underlay_ns)
            netns.run('ip', 'link', 'add', 'br0', 'type', 'bridge', netns=self.underlay_ns)
            netns.run('ip', 'link', 'set', 'br0', 'up', netns=self.underlay_ns)
            for physical in self.physicals.values():
                physical.start()
            for index in range(1, chassis + 1):
                c = OvnChassis(self, f'ch{index}', index)
                self.chassis[c.name] = c
                c.start()
            wait_for(lambda: all(self.sbctl('--bare', '--columns=name', 'find', 'Chassis',
                                            f'name={name}').strip() for name in self.chassis),
                     30, what='OVN chassis registered')
            self.nbctl('--wait=hv', 'sync')
        except BaseException:
            self.close()
            raise
        return self

    def _db(self, db: str) -> None:
        path = os.path.join(self.workdir, f'ovn{db}.db')
        subprocess.run(['ovsdb-tool', 'create', path, f'/usr/share/ovn/ovn-{db}.ovsschema'],
                       check=True, capture_output=True)
        subprocess.run(['ovsdb-server', path, f'--remote=punix:{self.workdir}/{db}.sock',
                        f'--pidfile={self.workdir}/ovsdb-{db}.pid',
                        f'--unixctl={self.workdir}/ovsdb-{db}.ctl',
                        f'--log-file={self.workdir}/ovsdb-{db}.log', '--detach'],
                       check=True, capture_output=True)

    @property
    def physical(self):
        """The first physical network (the one with the upstream router), if any."""
        return next(iter(self.physicals.values()), None)

    def nbctl(self, *args: str) -> str:
        return netns.run('ovn-nbctl', f'--db=unix:{self.nb_sock}', '--timeout=30', *args)

    def sbctl(self, *args: str) -> str:
        return netns.run('ovn-sbctl', f'--db=unix:{self.sb_sock}', '--timeout=30', *args)

    def close(self) -> None:
        for c in self.chassis.values():
            c.close()
        for physical in self.physicals.values():
            physical.close()
        for name in ('ovn-northd', 'ovsdb-nb', 'ovsdb-sb'):
            _kill(os.path.join(self.workdir, name + '.pid'))
        for leftover in netns.names(self.prefix + '-'):
            netns.delete(leftover)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _pid(path: str):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _kill(pidfile: str) -> None:
    pid = _pid(pidfile)
    if pid:
        ovs._kill(pid)


def vm_port(nbctl, mac: str, ip: str, secure: bool) -> None:
    """The logical switch port 'vm' on 'tenant'; with port security, in port group
    pg_open with the ACLs of an open security group."""
    address = f'{mac} {ip}'
    if not secure:
        nbctl('lsp-add', 'tenant', 'vm', '--', 'lsp-set-addresses', 'vm', address)
        return
    nbctl('--', '--id=@p', 'create', 'Logical_Switch_Port', 'name=vm',
          f'addresses="{address}"', f'port_security="{address}"',
          '--', 'add', 'Logical_Switch', 'tenant', 'ports', '@p',
          '--', 'pg-add', 'pg_open', 'vm')
    # What the Neutron OVN driver writes for port security's drop and a group allowing
    # egress anything and ingress ICMP and TCP from anywhere, stateful.
    for direction, port, priority, match, verdict in (
            ('from-lport', 'inport', 1001, 'ip', 'drop'),
            ('to-lport', 'outport', 1001, 'ip', 'drop'),
            ('from-lport', 'inport', 1002, 'ip4', 'allow-related'),
            ('to-lport', 'outport', 1002, 'ip4 && icmp4', 'allow-related'),
            ('to-lport', 'outport', 1002, 'ip4 && tcp', 'allow-related')):
        nbctl('--type=port-group', 'acl-add', 'pg_open', direction, str(priority),
              f'{port} == @pg_open && {match}', verdict)
