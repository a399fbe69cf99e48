"""One Open vSwitch (ovsdb-server + ovs-vswitchd, userspace datapath) per chassis namespace.

Every instance has its own run directory, so bridges, sockets and pidfiles of chassis that share
the machine never collide (see docs/architecture.md, The lab).
"""
import os
import signal
import subprocess
import time

from dragonflow.lab import netns

SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema'


class Ovs:
    def __init__(self, namespace: str, rundir: str):
        self.netns = namespace
        self.rundir = rundir
        self.db_sock = os.path.join(rundir, 'db.sock')
        self.env = dict(os.environ, OVS_RUNDIR=rundir, OVS_LOGDIR=rundir, OVS_DBDIR=rundir)

    @property
    def ovsdb_connection(self) -> str:
        return 'unix:' + self.db_sock

    def start(self) -> None:
        os.makedirs(self.rundir, exist_ok=True)
        db = os.path.join(self.rundir, 'conf.db')
        subprocess.run(['ovsdb-tool', 'create', db, SCHEMA], check=True)
        self._daemon('ovsdb-server', db, f'--remote=punix:{self.db_sock}',
                     '--remote=db:Open_vSwitch,Open_vSwitch,manager_options')
        self.vsctl('--no-wait', 'init')
        self._daemon('ovs-vswitchd', self.ovsdb_connection)

    def _daemon(self, program: str, *args: str) -> None:
        d = self.rundir
        cmd = ['ip', 'netns', 'exec', self.netns, program, *args,
               f'--pidfile={d}/{program}.pid', f'--unixctl={d}/{program}.ctl',
               f'--log-file={d}/{program}.log', '--detach']
        subprocess.run(cmd, check=True, env=self.env, capture_output=True, text=True)

    def restart_switch(self) -> None:
        """Kill ovs-vswitchd and start it again: the datapath and every flow are lost; the
        bridges and ports come back from the database."""
        self.kill_switch()
        self.start_switch()

    def kill_switch(self) -> None:
        """ovs-vswitchd dies (SIGKILL, as in a crash): nothing forwards, no BFD is sent; the
        database stays."""
        pid = self._pid('ovs-vswitchd')
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 5
            while not _is_zombie(pid) and time.monotonic() < deadline:
                time.sleep(0.05)  # its pidfile is free once it is gone

    def start_switch(self) -> None:
        self._daemon('ovs-vswitchd', self.ovsdb_connection)

    def stop(self) -> None:
        for program in ('ovs-vswitchd', 'ovsdb-server'):
            pid = self._pid(program)
            if pid:
                _kill(pid)

    def _pid(self, program: str):
        try:
            with open(os.path.join(self.rundir, program + '.pid')) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def vsctl(self, *args: str) -> str:
        return netns.run('ovs-vsctl', f'--db={self.ovsdb_connection}', '--timeout=10', *args)

    def ofctl(self, *args: str, bridge: str = 'br-int') -> str:
        mgmt = os.path.join(self.rundir, bridge + '.mgmt')
        return netns.run('ovs-ofctl', '-O', 'OpenFlow13', args[0], mgmt, *args[1:])

    def appctl(self, *args: str) -> str:
        ctl = os.path.join(self.rundir, 'ovs-vswitchd.ctl')
        return netns.run('ovs-appctl', '-t', ctl, *args)

    def add_bridge(self, name: str, fail_mode: str = 'secure') -> None:
        self.vsctl('--may-exist', 'add-br', name, '--', 'set', 'Bridge', name,
                   'datapath_type=netdev', f'fail-mode={fail_mode}')


def _kill(pid: int, grace: float = 3.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if _is_zombie(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _is_zombie(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().split(')')[-1].split()[0] == 'Z'
    except OSError:
        return True
