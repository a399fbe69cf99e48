"""A real Neutron server for tests: MariaDB, the API under uWSGI, the periodic workers.

Everything lives in one state directory (configuration, database, logs) and runs in its own
process groups: MariaDB listens on a unix socket only (no address is taken), the API on a
free loopback port. Nothing is installed here (``make setup`` does that); a failure while
starting stops what had started and raises with the end of the failing log.

Identity is df-api's: a paste filter (dragonflow/lab/neutron_identity.py) reads X-Project-Id
and X-Roles, so ``sdk(project, admin)`` acts as an admin or a member of a project and
Neutron's default policies apply; a request without those headers is an admin's of
``default_project_id``.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from dragonflow.lab.stores import FAST_TMP, free_port

VENV_BIN = Path(sys.executable).parent
MARIADB_SERVER = shutil.which('mariadbd', path='/usr/sbin:/usr/bin') or '/usr/sbin/mariadbd'
MARIADB_INSTALL_DB = shutil.which('mariadb-install-db', path='/usr/bin:/usr/sbin') or \
    '/usr/bin/mariadb-install-db'
MARIADB_CLIENT = shutil.which('mariadb', path='/usr/bin:/usr/sbin') or '/usr/bin/mariadb'
DATABASE = 'neutron'
START_TIMEOUT = 120.0
STOP_GRACE = 10.0

# Errors Neutron always logs here, harmless: oslo.cache lists a memcache backend whose
# client library is not installed (no cache is configured); every network delete tells
# Placement (routed networks' inventory), which this deployment has not, from a thread that
# dies with the error.
# ML2 logs ERROR for every port bound on a host no driver accepts; tests that ask for that
# name such hosts NOT_A_CHASSIS-<suffix>.
NOT_A_CHASSIS = 'not-a-chassis'
LOG_NOISE = ("Could not load 'oslo_cache.memcache_pool'", 'in _delete_nova_inventory',
             f'on host {NOT_A_CHASSIS}-')
LOG_LINE = re.compile(r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d')  # oslo.log's, not a traceback's

# Option groups Neutron reads from the ML2 file; any other group goes to neutron.conf.
ML2_GROUPS = ('ml2', 'ml2_type_', 'df', 'securitygroup')


def _ml2_defaults(mechanism_drivers: str) -> dict:
    """The network types and ranges df-api has by default (dragonflow/conf.py [ml2*])."""
    return {
        'ml2': {'type_drivers': 'vxlan,geneve,gre,flat,vlan',
                'project_network_types': 'vxlan',
                'mechanism_drivers': mechanism_drivers,
                'extension_drivers': 'port_security'},
        'ml2_type_vxlan': {'vni_ranges': '1:65535'},
        'ml2_type_geneve': {'vni_ranges': '1:65535', 'max_header_size': 38},
        'ml2_type_gre': {'tunnel_id_ranges': '1:65535'},
        'ml2_type_flat': {'flat_networks': '*'},
        'ml2_type_vlan': {'network_vlan_ranges': 'physnet1:100:200'},
    }


def _ini(groups: dict) -> str:
    return ''.join(f'[{group}]\n' + ''.join(f'{k} = {v}\n' for k, v in options.items()) + '\n'
                   for group, options in groups.items())


def _merge(into: dict, more: dict) -> dict:
    for group, options in more.items():
        into.setdefault(group, {}).update(options)
    return into


class StartError(RuntimeError):
    """A part of the stack did not start; the message ends with its log."""


class NeutronServer:
    """Neutron with ML2 (``mechanism_drivers``) and ``service_plugins`` on its own MariaDB.

    ``config``: more options, {group: {option: value}}: ml2*, df and securitygroup groups go
    to ml2_conf.ini, the others to neutron.conf. ``store_url`` becomes ``[df] store_url``.
    ``state_dir`` is removed on stop unless ``keep_state``.
    """

    def __init__(self, store_url: Optional[str] = None, mechanism_drivers: str = 'df',
                 service_plugins: str = 'df-l3', config: Optional[dict] = None,
                 workers: int = 1, periodic_workers: bool = True,
                 default_project_id: str = 'demo', state_dir: Optional[str] = None,
                 keep_state: bool = False, start_timeout: float = START_TIMEOUT):
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix='df-neutron-', dir=FAST_TMP))
        self.store_url = store_url
        self.mechanism_drivers, self.service_plugins = mechanism_drivers, service_plugins
        self.config = config or {}
        self.workers, self.periodic_workers = workers, periodic_workers
        self.default_project_id = default_project_id
        self.keep_state, self.start_timeout = keep_state, start_timeout
        self.port: Optional[int] = None
        self.url: Optional[str] = None
        self.socket = self.state_dir / 'mariadb' / 'mysqld.sock'
        self.procs: dict[str, subprocess.Popen] = {}  # name -> process group leader
        self.spawned: list[int] = []  # every process group started, for checks that none is left
        self.timings: dict[str, float] = {}  # seconds each start step took

    # -- life cycle

    def __enter__(self) -> 'NeutronServer':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> 'NeutronServer':
        """MariaDB, the schema, the API, the periodic workers; ready when the API answers."""
        try:
            self._timed('mariadb', self._start_mariadb)
            self._write_config()
            self._timed('migrate', self._migrate)
            # The periodic workers load the plugins while the API does: started together.
            if self.periodic_workers:
                self._spawn('periodic-workers', [str(VENV_BIN / 'neutron-periodic-workers'),
                                                 *self._config_args()])
            self._timed('api', self._start_api)
            self._check_running()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process group, newest first (SIGKILL after a grace); safe to repeat."""
        for name in reversed(list(self.procs)):
            self._stop_group(self.procs.pop(name))
        if not self.keep_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def pgids(self) -> list[int]:
        """The process groups still running (each part of the stack is one)."""
        return [proc.pid for proc in self.procs.values() if group_alive(proc.pid)]

    # -- clients

    def sdk(self, project: Optional[str] = None, admin: bool = True, roles: str = None):
        """An openstacksdk Connection acting for ``project`` (default_project_id if None),
        as an admin or with ``roles`` (default 'member') — the headers tests/api sends
        df-api."""
        import openstack

        conn = openstack.connection.Connection(auth_type='none', auth={'endpoint': self.url},
                                               network_endpoint_override=self.url + '/')
        headers = conn.session.additional_headers
        headers['X-Project-Id'] = project or self.default_project_id
        headers['X-Roles'] = 'admin' if admin else (roles or 'member')
        return conn

    def errors_logged(self) -> str:
        """The API's and workers' ERROR lines and tracebacks, whole ('' if none)."""
        found = []
        for name in ('neutron-api', 'periodic-workers'):
            path = self.log_path(name)
            if path.exists():
                found += [f'{name}: {error}' for error in _errors(path.read_text(
                    errors='replace'))]
        return '\n'.join(found)

    def log_path(self, name: str) -> Path:
        return self.state_dir / f'{name}.log'

    # -- the steps

    def _timed(self, step: str, run) -> None:
        began = time.monotonic()
        run()
        self.timings[step] = round(time.monotonic() - began, 2)

    def _start_mariadb(self) -> None:
        directory = self.state_dir / 'mariadb'
        (directory / 'data').mkdir(parents=True)
        defaults = directory / 'my.cnf'
        defaults.write_text(_ini({'mysqld': {
            'datadir': directory / 'data', 'socket': self.socket,
            'pid-file': directory / 'mysqld.pid', 'log-error': self.log_path('mariadb'),
            'user': 'root', 'character-set-server': 'utf8mb4',
            # Throwaway test data: nothing needs to reach the disk, and a small server.
            'innodb_flush_log_at_trx_commit': 0, 'innodb_doublewrite': 0,
            'innodb_flush_method': 'fsync', 'innodb_buffer_pool_size': '64M',
            'innodb_log_file_size': '16M', 'performance_schema': 'OFF',
            'skip-networking': 1}}))  # nothing listens on any address
        self._run('mariadb-install-db', [MARIADB_INSTALL_DB, f'--defaults-file={defaults}',
                                         '--auth-root-authentication-method=normal',
                                         '--skip-test-db'])
        self._spawn('mariadb', [MARIADB_SERVER, f'--defaults-file={defaults}'],
                    own_log=True)
        self._wait('mariadb', self.socket.exists)
        self._wait('mariadb', lambda: self._sql('SELECT 1', check=False) == 0)
        self._sql(f'CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4')

    def _sql(self, statement: str, check: bool = True) -> int:
        done = subprocess.run([MARIADB_CLIENT, f'--socket={self.socket}', '-uroot', '-e',
                               statement], capture_output=True, text=True, timeout=30)
        if check and done.returncode:
            raise StartError(f'MariaDB refused {statement!r}: {done.stderr}')
        return done.returncode

    def _write_config(self) -> None:
        lock = self.state_dir / 'lock'
        lock.mkdir()
        neutron = {
            'DEFAULT': {
                'core_plugin': 'ml2', 'service_plugins': self.service_plugins,
                'auth_strategy': 'noauth', 'transport_url': 'fake://',
                'api_paste_config': self.state_dir / 'api-paste.ini',
                'state_path': self.state_dir,
                'notify_nova_on_port_status_changes': 'false',
                'notify_nova_on_port_data_changes': 'false',
                'enable_traditional_dhcp': 'false', 'use_stderr': 'true'},
            'database': {'connection': f'mysql+pymysql://root@/{DATABASE}?unix_socket='
                                       f'{self.socket}&charset=utf8mb4'},
            'oslo_concurrency': {'lock_path': lock},
        }
        ml2 = _ml2_defaults(self.mechanism_drivers)
        if self.store_url:
            ml2['df'] = {'store_url': self.store_url}
        for group, options in self.config.items():
            target = ml2 if group.startswith(ML2_GROUPS) else neutron
            _merge(target, {group: options})
        (self.state_dir / 'neutron.conf').write_text(_ini(neutron))
        (self.state_dir / 'ml2_conf.ini').write_text(_ini(ml2))
        (self.state_dir / 'api-paste.ini').write_text(self._api_paste())

    def _api_paste(self) -> str:
        """Neutron's installed api-paste.ini, the header identity filter in place of its
        fixed noauth project."""
        installed = Path(sys.prefix) / 'etc' / 'neutron' / 'api-paste.ini'
        text = installed.read_text()
        if ' fake_project_id ' not in text:
            raise StartError(f'{installed}: no fake_project_id filter in its noauth pipeline')
        return text.replace(' fake_project_id ', ' df_identity ') + (
            '\n[filter:df_identity]\n'
            'paste.filter_factory = dragonflow.lab.neutron_identity:filter_factory\n'
            f'default_project_id = {self.default_project_id}\n'
            'default_roles = admin\n')

    def _config_args(self) -> list[str]:
        return ['--config-file', str(self.state_dir / 'neutron.conf'),
                '--config-file', str(self.state_dir / 'ml2_conf.ini')]

    def _migrate(self) -> None:
        self._run('migrate', [str(VENV_BIN / 'neutron-db-manage'), *self._config_args(),
                              'upgrade', 'heads'])

    def _start_api(self, attempts: int = 3) -> None:
        for attempt in range(attempts):
            self.port = free_port()
            self.url = f'http://127.0.0.1:{self.port}'
            self._write_uwsgi_ini()
            self._spawn('neutron-api', [str(VENV_BIN / 'uwsgi'), '--ini',
                                        str(self.state_dir / 'uwsgi.ini')])
            try:
                self._wait('neutron-api', self._api_answers)
                return
            except StartError:
                taken = 'Address already in use' in self.log_path('neutron-api').read_text(
                    errors='replace')
                if not taken or attempt == attempts - 1:
                    raise
                self._stop_group(self.procs.pop('neutron-api'))  # the port was taken meanwhile

    def _write_uwsgi_ini(self) -> None:
        options = [
            ('module', 'neutron.wsgi.api:application'), ('home', sys.prefix),
            ('http-socket', f'127.0.0.1:{self.port}'), ('master', 'true'),
            ('processes', self.workers), ('threads', 1), ('enable-threads', 'true'),
            ('lazy-apps', 'true'), ('need-app', 'true'), ('die-on-term', 'true'),
            # With http-socket uWSGI closes the connection after each response without
            # saying so: keep-alive clients would then see ECONNRESET.
            ('add-header', 'Connection: close'),
            ('env', f'OS_NEUTRON_CONFIG_DIR={self.state_dir}'),
            ('env', 'OS_NEUTRON_CONFIG_FILES=neutron.conf;ml2_conf.ini'),
            ('disable-logging', 'true'), ('procname-prefix-spaced', 'df-neutron'),
        ]
        (self.state_dir / 'uwsgi.ini').write_text(
            '[uwsgi]\n' + ''.join(f'{k} = {v}\n' for k, v in options))

    def _api_answers(self) -> bool:
        request = urllib.request.Request(self.url + '/v2.0/networks',
                                         headers={'X-Roles': 'admin'})
        try:
            with urllib.request.urlopen(request, timeout=1) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    # -- processes

    def _spawn(self, name: str, command: list[str], own_log: bool = False) -> None:
        """Start ``command`` as a new process group; its output in <name>.log unless it
        writes its own log there."""
        with open(os.devnull if own_log else self.log_path(name), 'ab') as log:
            self.procs[name] = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.state_dir, start_new_session=True)
        self.spawned.append(self.procs[name].pid)

    def _run(self, name: str, command: list[str]) -> None:
        """Run a step to its end (own process group, killed with it on timeout)."""
        self._spawn(name, command)
        proc = self.procs[name]
        try:
            proc.wait(self.start_timeout)
        except subprocess.TimeoutExpired:
            raise StartError(f'{name} still running after {self.start_timeout} s:\n'
                             f'{self._tail(name)}') from None
        if proc.returncode:
            raise StartError(f'{name} exited with {proc.returncode}:\n{self._tail(name)}')
        self.procs.pop(name)
        _wait_group_gone(proc.pid, STOP_GRACE)

    def _wait(self, name: str, ready) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not ready():
            self._check_running()
            if time.monotonic() > deadline:
                raise StartError(f'{name} not ready after {self.start_timeout} s:\n'
                                 f'{self._tail(name)}')
            time.sleep(0.1)

    def _check_running(self) -> None:
        """Any part of the stack that exited fails the start."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise StartError(f'{name} exited with {proc.returncode}:\n{self._tail(name)}')

    def _tail(self, name: str, lines: int = 30) -> str:
        try:
            text = self.log_path(name).read_text(errors='replace')
        except OSError:
            return '(no log)'
        return '\n'.join(text.splitlines()[-lines:])

    @staticmethod
    def _stop_group(proc: subprocess.Popen) -> None:
        _signal_group(proc.pid, signal.SIGTERM)
        if not _wait_group_gone(proc.pid, STOP_GRACE, proc):
            _signal_group(proc.pid, signal.SIGKILL)
            _wait_group_gone(proc.pid, STOP_GRACE, proc)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def _errors(log: str) -> list[str]:
    """ERROR lines, and each traceback with its indented lines and its exception's line;
    without the known noise."""
    errors, lines = [], log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith('Traceback'):
            # Its frames are indented, its last line is not; another process's log lines
            # may come in between (they are looked at on their own).
            block = [line]
            for later in lines[i + 1:]:
                if LOG_LINE.match(later):
                    continue
                block.append(later)
                if not later.startswith(' '):
                    break
            errors.append('\n'.join(block))
        elif ' ERROR ' in line or ' CRITICAL ' in line:
            errors.append(line)
    return [error for error in errors if not any(noise in error for noise in LOG_NOISE)]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_group_gone(pgid: int, timeout: float, leader: subprocess.Popen = None) -> bool:
    """Wait until no process of the group is left (the leader reaped as well)."""
    deadline = time.monotonic() + timeout
    while True:
        if leader is not None:
            leader.poll()  # reap it, else its zombie keeps the group alive
        if not group_alive(pgid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def processes_in(directory: Path) -> list[int]:
    """Pids of the processes working in ``directory`` or naming it on their command line:
    every part of a lab Neutron does both."""
    found = []
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / 'cwd')
            cmdline = (entry / 'cmdline').read_bytes().decode(errors='replace')
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        if cwd.startswith(str(directory)) or str(directory) in cmdline:
            found.append(int(entry.name))
    return found
