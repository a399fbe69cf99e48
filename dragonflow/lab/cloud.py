"""A whole Dragonflow deployment on one machine: the NB store, df-api, and chassis, each
chassis a network namespace with its own Open vSwitch and df-controller; VMs are namespaces
plugged into a chosen chassis. The data-plane tests and `dfctl demo` both stand on it.

With ``api='neutron'`` the API is a real Neutron (lab/neutron.py) whose Dragonflow driver
mirrors it into the cloud's store, in place of df-api; plugging a VM then binds its port to
the chassis through the API first, as Nova does.

Every namespace carries the cloud's per-run prefix and everything it starts is stopped by
close(), which is safe to call after any failure, half-way through start-up included.
"""
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Optional

from dragonflow.lab import netns, ovs, stores
from dragonflow.lab.physical import PhysicalNetwork
from dragonflow.lab.vm import Vm

BIN = os.path.dirname(sys.executable)  # the venv's bin: df-api and df-controller live there
OPENFLOW_PORT = 6653
UNDERLAY_PREFIX = '172.31.0.'  # chassis N gets .(10+N); only inside the cloud's namespaces
# The management network (store traffic, never through OVS), a /24 of its own per cloud
# since this process joins every cloud's: the store servers listen on .1 inside the cloud's
# management namespace, this process reaches it as .254, chassis N as .(10+N).
MANAGEMENT_SUBNETS = [f'172.31.{n}.' for n in range(200, 250)]
STORES = ('sqlite', 'etcd', 'etcd-cluster', 'redis')
APIS = ('df-api', 'neutron')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = 'condition'):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f'timed out after {timeout} s waiting for {what}')
        time.sleep(interval)


class Process:
    """A daemon we started, with its log file; stopped by SIGTERM, then SIGKILL."""

    def __init__(self, args: list[str], log_path: str):
        self.args, self.log_path = args, log_path
        self.popen: Optional[subprocess.Popen] = None

    def start(self) -> None:
        with open(self.log_path, 'ab') as log:
            self.popen = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = 5.0) -> None:
        if not self.running:
            return
        self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, errors='replace') as f:
                return ''.join(f.readlines()[-lines:])
        except OSError:
            return ''


def join_underlay(chassis_ovs: ovs.Ovs, name: str, underlay_ns: str, tunnel_ip: str) -> None:
    """br-phy holds the underlay address; userspace tunnels leave through it (see shared
    notes: no kernel routing of tunnel packets in the netdev datapath). Its port ul0 is a veth
    into the underlay bridge, and the kernel must not answer ARP on it: the datapath reads ul0
    without taking packets from the kernel, whose answer with ul0's MAC would race br-phy's,
    and a peer that kept it would send its tunnel packets where nothing decapsulates them."""
    namespace = chassis_ovs.netns
    netns.veth('ul0', namespace, name, underlay_ns)
    netns.run('ip', 'link', 'set', name, 'master', 'br0', netns=underlay_ns)
    netns.run('sysctl', '-q', '-w', 'net.ipv4.conf.ul0.arp_ignore=1', netns=namespace)
    chassis_ovs.add_bridge('br-phy', fail_mode='standalone')
    chassis_ovs.vsctl('--may-exist', 'add-port', 'br-phy', 'ul0')
    netns.run('ip', 'addr', 'add', f'{tunnel_ip}/24', 'dev', 'br-phy', netns=namespace)
    netns.run('ip', 'link', 'set', 'br-phy', 'up', netns=namespace)


class Chassis:
    def __init__(self, cloud: 'Cloud', name: str, index: int):
        self.cloud, self.name, self.index = cloud, name, index
        self.netns = f'{cloud.prefix}-{name}'
        self.tunnel_ip = f'{UNDERLAY_PREFIX}{10 + index}'
        self.dir = os.path.join(cloud.workdir, name)
        self.ovs = ovs.Ovs(self.netns, os.path.join(self.dir, 'ovs'))
        self.config_path = os.path.join(self.dir, 'dragonflow.ini')
        self.gateway = name in cloud.gateways  # [controller] gateway = true
        self.controller = Process(
            ['ip', 'netns', 'exec', self.netns, os.path.join(BIN, 'df-controller'),
             '--config-file', self.config_path], os.path.join(self.dir, 'df-controller.log'))

    def start(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        netns.add(self.netns)
        self.ovs.start()
        self.ovs.add_bridge('br-int')
        self._join_underlay()
        for physical in self.cloud.physicals.values():
            physical.join(self)
        if self.cloud.management_ns:
            self.cloud.join_management(self.netns, 'mgmt0', self.name, 10 + self.index)
        controller = {
            'chassis_id': self.name, 'ovsdb_connection': self.ovs.ovsdb_connection,
            'datapath_type': 'netdev', 'openflow_listen_port': OPENFLOW_PORT,
            'heartbeat_interval': 1.0, 'tunnel_ip': self.tunnel_ip,
            'tunnel_types': self.cloud.tunnel_type}
        if self.cloud.physicals:
            controller['bridge_mappings'] = ','.join(
                p.mapping for p in self.cloud.physicals.values())
        if self.gateway:
            controller['gateway'] = 'true'
        sections = dict(self.cloud.extra_config)
        controller.update(sections.pop('controller', {}))
        with open(self.config_path, 'w') as f:
            f.write(self.cloud.config(controller=controller, **sections))
        self.start_controller()

    def _join_underlay(self) -> None:
        join_underlay(self.ovs, self.name, self.cloud.underlay_ns, self.tunnel_ip)

    def start_controller(self) -> None:
        self.controller.start()
        wait_for(self.controller_connected, 20, what=f'{self.name} controller on br-int')

    def controller_connected(self) -> bool:
        if not self.controller.running:
            raise RuntimeError(f'df-controller on {self.name} died:\n'
                               + self.controller.log_tail())
        out = self.ovs.vsctl('--columns=is_connected', 'list', 'Controller')
        return 'true' in out

    def kill_controller(self) -> None:
        self.controller.stop(signal.SIGKILL)

    def dump_flows(self) -> str:
        return self.ovs.ofctl('dump-flows')

    def restart_switch(self) -> None:
        """ovs-vswitchd killed and started again; br-phy's tap is made anew, without the
        underlay address it held (an operator's network configuration puts it back)."""
        self.ovs.restart_switch()
        self._restore_underlay_address()

    def _restore_underlay_address(self) -> None:
        wait_for(lambda: 'br-phy' in netns.run('ip', '-o', 'link', netns=self.netns), 10,
                 what=f'{self.name} br-phy back')
        netns.run('ip', 'addr', 'replace', f'{self.tunnel_ip}/24', 'dev', 'br-phy',
                  netns=self.netns)
        netns.run('ip', 'link', 'set', 'br-phy', 'up', netns=self.netns)

    def kill(self) -> None:
        """The chassis dies as a machine would for its network: ovs-vswitchd and the
        controller killed (SIGKILL); nothing forwards, no BFD leaves it. ``revive`` undoes it."""
        self.kill_controller()
        self.ovs.kill_switch()

    def revive(self) -> None:
        """ovs-vswitchd and the controller started again after ``kill``."""
        self.start_switch()
        self.start_controller()

    def start_switch(self) -> None:
        """ovs-vswitchd alone started again after ``kill``, as a machine boots before its
        controller starts; its underlay address back."""
        self.ovs.start_switch()
        self._restore_underlay_address()

    def cut_uplink(self, physnet: Optional[str] = None) -> None:
        """Its link to a physical network (the first by default) goes down, as a cable
        pulled: the switch's port to it down, so its NIC there loses carrier."""
        self._uplink(physnet, 'down')

    def restore_uplink(self, physnet: Optional[str] = None) -> None:
        self._uplink(physnet, 'up')

    def _uplink(self, physnet: Optional[str], state: str) -> None:
        physical = self.cloud.physicals[physnet] if physnet else self.cloud.physical
        netns.run('ip', 'link', 'set', physical.port_of(self.name), state,
                  netns=physical.netns)

    def close(self) -> None:
        self.controller.stop()
        self.ovs.stop()
        netns.delete(self.netns)


class Cloud:
    def __init__(self, workdir: str, prefix: Optional[str] = None, tunnel_type: str = 'vxlan',
                 store: str = 'sqlite', physical_networks: tuple = (),
                 extra_config: Optional[dict] = None, gateways: tuple = (),
                 api: str = 'df-api'):
        """``physical_networks``: physnet names, each a physical network every chassis
        joins (the first through br-ex, the others through br-<name>), the first with the
        upstream router and internet host (lab/physical.py); ``cloud.physical`` is that
        first one. ``extra_config``: more INI sections (by name) for df-api and every
        controller, e.g. {'ml2_type_vlan': {'network_vlan_ranges': 'physnet1:100:200'}} or
        {'l3': {'snat_mode': 'distributed'}} (physnets get VLAN ids 100-200 unless
        'ml2_type_vlan' is given); its 'controller' section adds to the controllers' own.
        ``gateways``: the chassis configured as gateway chassis (``[controller] gateway =
        true``), by name, e.g. ('ch1', 'ch2'). ``api``: 'df-api', or 'neutron' for a real
        Neutron in its place (``cloud.neutron``), given the ml2* sections of
        ``extra_config``."""
        if store not in STORES:
            raise ValueError(f'store must be one of {STORES}')
        if api not in APIS:
            raise ValueError(f'api must be one of {APIS}')
        self.prefix = prefix or 'df' + secrets.token_hex(3)
        self.physicals = {name: PhysicalNetwork(self.prefix, name,
                                                'br-ex' if i == 0 else f'br-{name}'[:15],
                                                with_upstream=i == 0)
                          for i, name in enumerate(physical_networks)}
        self.extra_config = dict(extra_config or {})
        if physical_networks and 'ml2_type_vlan' not in self.extra_config:
            self.extra_config['ml2_type_vlan'] = {'network_vlan_ranges': ','.join(
                f'{name}:100:200' for name in physical_networks)}
        self.gateways = tuple(gateways)
        # Tenant networks in the chassis' tunnel type: a chassis has tunnel ports of its
        # [controller] tunnel_types only.
        self.extra_config['ml2'] = {'tenant_network_types': tunnel_type,
                                    **self.extra_config.get('ml2', {})}
        self.workdir = workdir
        self.tunnel_type = tunnel_type
        self.underlay_ns = f'{self.prefix}-underlay'
        self.store = store
        self.management_ns = None if store == 'sqlite' else f'{self.prefix}-mgmt'
        self.store_servers: list[stores.Server] = []
        self.store_url = 'sqlite:///' + os.path.join(workdir, 'nb.db')
        self.api_port = free_port()
        self.api_url = f'http://127.0.0.1:{self.api_port}'
        self.api = Process([os.path.join(BIN, 'df-api'), '--config-file',
                            os.path.join(workdir, 'df-api.ini')],
                           os.path.join(workdir, 'df-api.log'))
        self.neutron = None  # the NeutronServer, when api == 'neutron'
        self.api_kind = api
        self.chassis: dict[str, Chassis] = {}
        self.vms: list[Vm] = []
        self._sdk = None

    def config(self, **sections) -> str:
        """An INI text: the cloud's store plus the given sections."""
        sections = {'store': {'url': self.store_url},
                    'api': {'bind_host': '127.0.0.1', 'bind_port': self.api_port}, **sections}
        return ''.join(f'[{name}]\n' + ''.join(f'{k} = {v}\n' for k, v in opts.items()) + '\n'
                       for name, opts in sections.items())

    def start(self, chassis: int = 1) -> 'Cloud':
        os.makedirs(self.workdir, exist_ok=True)
        try:
            if self.management_ns:
                self._start_management()
            if self.api_kind == 'neutron':
                self._start_neutron()
            else:
                with open(os.path.join(self.workdir, 'df-api.ini'), 'w') as f:
                    f.write(self.config(**self.extra_config))
                self.api.start()
            self._start_underlay()
            for physical in self.physicals.values():
                physical.start()
            if self.api_kind != 'neutron':
                wait_for(self._api_ready, 20, what='df-api')
            for index in range(1, chassis + 1):
                self.add_chassis(f'ch{index}')
        except BaseException:
            self.close()
            raise
        return self

    def _start_neutron(self) -> None:
        """Neutron on the cloud's store, with the network types df-api would have been
        given (ml2* sections of extra_config; tenant_network_types is Neutron's older name
        of project_network_types)."""
        from dragonflow.lab.neutron import NeutronServer
        config = {}
        for group, options in self.extra_config.items():
            if group.startswith('ml2'):
                options = dict(options)
                if 'tenant_network_types' in options:
                    options['project_network_types'] = options.pop('tenant_network_types')
                config[group] = options
        self.neutron = NeutronServer(store_url=self.store_url, config=config)
        self.neutron.start()
        self.api_url = self.neutron.url

    def _start_management(self) -> None:
        """The management namespace with the store servers, joined to this one."""
        ns = self.management_ns
        in_use = netns.run('ip', '-o', '-4', 'addr')
        self.management_prefix = next(p for p in MANAGEMENT_SUBNETS if f' {p}' not in in_use)
        store_ip = self.management_prefix + '1'
        netns.add(ns)
        netns.run('ip', 'link', 'add', 'br0', 'type', 'bridge', netns=ns)
        netns.run('ip', 'addr', 'add', f'{store_ip}/24', 'dev', 'br0', netns=ns)
        netns.run('ip', 'link', 'set', 'br0', 'up', netns=ns)
        self.join_management(None, f'{self.prefix}m', 'host', 254)
        if self.store == 'redis':
            self.store_servers = stores.start_all([stores.redis_server(store_ip, ns,
                                                                       durable=True)])
            self.store_url = f'redis://{self.store_servers[0].address}'
        else:
            size = 3 if self.store == 'etcd-cluster' else 1
            self.store_servers = stores.start_all(stores.etcd_members(store_ip, size, ns))
            self.store_url = 'etcd://' + ','.join(s.address for s in self.store_servers)

    def join_management(self, namespace: Optional[str], interface: str, peer: str,
                        host: int) -> None:
        """A veth from ``namespace`` (None: this process' own) to the management bridge."""
        ns = self.management_ns
        if namespace:
            netns.veth(interface, namespace, peer, ns)
        else:
            netns.run('ip', 'link', 'add', interface, 'type', 'veth', 'peer', 'name', peer,
                      'netns', ns)
            netns.run('ip', 'link', 'set', interface, 'up')
            netns.run('ip', 'link', 'set', peer, 'up', netns=ns)
        netns.run('ip', 'link', 'set', peer, 'master', 'br0', netns=ns)
        netns.run('ip', 'addr', 'add', f'{self.management_prefix}{host}/24', 'dev', interface,
                  netns=namespace)

    def _start_underlay(self) -> None:
        """The physical network between chassis: one Linux bridge in its own namespace."""
        netns.add(self.underlay_ns)
        netns.run('ip', 'link', 'add', 'br0', 'type', 'bridge', netns=self.underlay_ns)
        netns.run('ip', 'link', 'set', 'br0', 'up', netns=self.underlay_ns)

    def _api_ready(self) -> bool:
        if not self.api.running:
            raise RuntimeError('df-api died:\n' + self.api.log_tail())
        try:
            with urllib.request.urlopen(self.api_url + '/', timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def add_chassis(self, name: str) -> Chassis:
        chassis = Chassis(self, name, len(self.chassis) + 1)
        self.chassis[name] = chassis
        chassis.start()
        return chassis

    @property
    def physical(self) -> Optional[PhysicalNetwork]:
        """The first physical network (the one with the upstream router), if any."""
        return next(iter(self.physicals.values()), None)

    @property
    def sdk(self):
        """The operator's openstacksdk connection to df-api (admin: sees every project)."""
        if self._sdk is None:
            self._sdk = self.connect(admin=True)
        return self._sdk

    def connect(self, project: Optional[str] = None, admin: bool = False):
        """An openstacksdk connection as a keystone-less user makes it; with noauth df-api
        takes the project and roles from headers, as Neutron does."""
        if self.neutron is not None:
            return self.neutron.sdk(project, admin=admin)
        import openstack
        conn = openstack.connection.Connection(
            auth_type='none', auth={'endpoint': self.api_url},
            network_endpoint_override=self.api_url + '/')
        if project:
            conn.session.additional_headers['X-Project-Id'] = project
        if admin:
            conn.session.additional_headers['X-Roles'] = 'admin'
        return conn

    def vm(self, chassis: str, port, name: Optional[str] = None, gateway: bool = True,
           dhcp: bool = False, attach: bool = True) -> Vm:
        """Plug a VM for ``port`` (an openstacksdk Port) into ``chassis``: configured with the
        port's first fixed IP, or with no address at all for ``dhcp`` (the VM asks for it);
        without ``attach`` its interface waits off br-int until ``vm.attach()``."""
        name = f'{self.prefix}-{name or "vm" + str(len(self.vms) + 1)}'
        if self.neutron is not None:
            # Nova binds the port to the compute host before plugging it; the chassis id is
            # the host's name.
            port = self.sdk.network.update_port(port, binding_host_id=chassis)
        if dhcp:
            vm = Vm(name, self.chassis[chassis], port.id, port.mac_address)
        else:
            fixed = port.fixed_ips[0]
            subnet = self.sdk.network.get_subnet(fixed['subnet_id'])
            vm = Vm(name, self.chassis[chassis], port.id, port.mac_address,
                    fixed['ip_address'], int(subnet.cidr.split('/')[1]),
                    subnet.gateway_ip if gateway else None)
        self.vms.append(vm)
        vm.plug(attach)
        return vm

    def wait_port_active(self, port_id: str, timeout: float = 10.0) -> None:
        wait_for(lambda: self.sdk.network.get_port(port_id).status == 'ACTIVE', timeout,
                 what=f'port {port_id} ACTIVE')

    def wait_floating_ip_active(self, floating_ip_id: str, timeout: float = 10.0) -> None:
        """ACTIVE: the chassis of its port has its flows in."""
        wait_for(lambda: self.sdk.network.get_ip(floating_ip_id).status == 'ACTIVE', timeout,
                 what=f'floating IP {floating_ip_id} ACTIVE')

    def stop_store(self) -> None:
        """A store outage: every store server killed (connections refused), data kept."""
        if not self.store_servers:
            raise ValueError('the embedded sqlite store has no server to stop: use a cloud '
                             'with store="etcd" or "redis"')
        for server in self.store_servers:
            server.kill()

    def start_store(self) -> None:
        """The store servers back after ``stop_store`` (a cluster's members together)."""
        stopped = [s for s in self.store_servers if s.proc is None or s.proc.poll() is not None]
        for server in stopped:
            server.start(wait=False)
        for server in stopped:  # members elect a leader only once a quorum runs
            server.wait_ready()

    def close(self) -> None:
        """Stop and remove everything this cloud made; never raises for what is already gone."""
        for vm in self.vms:
            try:
                vm.destroy()
            except Exception:  # noqa: BLE001 - keep tearing down the rest
                netns.delete(vm.name)
        for chassis in self.chassis.values():
            chassis.close()
        for physical in self.physicals.values():
            physical.close()
        self.api.stop()
        if self.neutron is not None:
            self.neutron.stop()
        for server in self.store_servers:
            server.stop()
        if self.management_ns:
            netns.run('ip', 'link', 'del', f'{self.prefix}m', check=False)
        for leftover in netns.names(self.prefix + '-'):
            netns.delete(leftover)

    def remove_files(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
