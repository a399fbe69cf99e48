"""Real data plane: a Cloud (store, df-api, chassis with real Open vSwitch, VMs as network
namespaces). Resources are made through the API with openstacksdk; checks use real packets."""
import itertools
import os
import re
import subprocess
import time

import pytest

from dragonflow.lab.cloud import Cloud, wait_for
from dragonflow.lab.traffic import Pinger  # noqa: F401 - the tests' ping under faults

_names = itertools.count(1)


def pytest_collection_modifyitems(items):
    for item in items:
        if 'tests/dataplane' in str(item.fspath):
            item.add_marker(pytest.mark.dataplane)


def _cloud(tmp_path_factory, chassis: int, tunnel_type: str, **options):
    if os.geteuid() != 0:
        pytest.fail('the data-plane tests need root (network namespaces and Open vSwitch)')
    cloud = Cloud(str(tmp_path_factory.mktemp(f'cloud-{tunnel_type}')), tunnel_type=tunnel_type,
                  **options)
    cloud.start(chassis=chassis)
    return cloud


@pytest.fixture(scope='session')
def cloud(tmp_path_factory):
    """Three chassis joined by VXLAN; single-chassis tests use ch1."""
    with _cloud(tmp_path_factory, 3, 'vxlan') as c:
        yield c


@pytest.fixture(scope='session')
def geneve_cloud(tmp_path_factory):
    """Controllers given tunnel_types = geneve, df-api left at Neutron's default tenant type
    (vxlan), as an operator upgrading from before network types would: the vxlan networks
    cross in geneve (apps/tunnels.crossing)."""
    with _cloud(tmp_path_factory, 2, 'geneve',
                extra_config={'ml2': {'tenant_network_types': 'vxlan'}}) as c:
        yield c


@pytest.fixture(scope='session')
def gre_cloud(tmp_path_factory):
    with _cloud(tmp_path_factory, 2, 'gre') as c:
        yield c


class Topo:
    """Creates networks, subnets, routers and VMs through the API for one test and project."""

    def __init__(self, cloud, project=None):
        self.cloud = cloud
        self.sdk = cloud.connect(project) if project else cloud.sdk

    def subnet(self, cidr: str):
        tag = next(_names)
        network = self.sdk.network.create_network(name=f'net{tag}')
        return self.sdk.network.create_subnet(network_id=network.id, ip_version=4, cidr=cidr,
                                              name=f'subnet{tag}')

    def router(self, *subnets):
        router = self.sdk.network.create_router(name=f'router{next(_names)}')
        for subnet in subnets:
            self.sdk.network.add_interface_to_router(router, subnet=subnet.id)
        return router

    def port(self, subnet, ip=None):
        fixed = {'subnet_id': subnet.id, **({'ip_address': ip} if ip else {})}
        return self.sdk.network.create_port(network_id=subnet.network_id, fixed_ips=[fixed])

    def vm(self, subnet, chassis='ch1', ip=None):
        port = self.port(subnet, ip)
        return self.plug(port, chassis)

    def plug(self, port, chassis):
        vm = self.cloud.vm(chassis, port)
        self.cloud.wait_port_active(port.id)
        vm.port = port
        return vm


@pytest.fixture
def topo(cloud):
    return Topo(cloud)


class Capture:
    """tcpdump in a namespace for the length of a with-block; .lines afterwards."""

    def __init__(self, namespace: str, interface: str, bpf: str):
        self.args = ['ip', 'netns', 'exec', namespace, 'tcpdump', '-nn', '-l', '-i', interface,
                     bpf]
        self.lines: list[str] = []

    def __enter__(self):
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        # tcpdump says "listening on" once the capture runs.
        self.process.stderr.readline()
        return self

    def __exit__(self, *exc):
        time.sleep(0.3)
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        self.lines = [line for line in out.splitlines() if line.strip()]


RECONCILED = 'br-int read back and reconciled'


def restart_under_ping(chassis, sender, ip: str) -> None:
    """Kill and start the chassis' controller while ``sender`` pings ``ip`` every 10 ms:
    no ping is lost, and the restarted controller's reconcile of br-int changes no flow."""
    reconciles = log_count(chassis, RECONCILED)
    with Pinger(sender, ip, interval=0.01) as ping:
        wait_for(lambda: ping.replies >= 20, 5, what='the ping under way')
        chassis.kill_controller()
        chassis.start_controller()
        wait_for(lambda: log_count(chassis, RECONCILED) > reconciles, 10,
                 what='the restarted controller to read br-int back and reconcile')
        replies = ping.replies
        wait_for(lambda: ping.replies >= replies + 20, 5, what='the ping past the reconcile')
        ping.stop()
    # Sequence gaps, not transmitted vs received: the request in flight when ping is
    # stopped has no reply yet and is no loss.
    assert ping.lost() == 0 and ping.replies >= 40, ping.lines[-3:]
    with open(chassis.controller.log_path, errors='replace') as log:
        last = [line for line in log if RECONCILED in line][-1]
    assert re.search(r', 0 deleted, 0 added', last), last


def log_count(chassis, text: str) -> int:
    """How many lines of the chassis' controller log (every run of it) contain ``text``."""
    with open(chassis.controller.log_path, errors='replace') as log:
        return sum(text in line for line in log)


def caught_up(cloud, *chassis: str, timeout: float = 5.0) -> None:
    """Until each chassis' br-int has the flows of the store's revision of now: its heartbeat
    says which revision the switch last confirmed the flows of."""
    from dragonflow import store as df_store
    store = df_store.connect(cloud.store_url)
    revision = store.revision()
    wait_for(lambda: all(store.heartbeats().get(c, {}).get('revision_seen', 0) >= revision
                         for c in chassis), timeout, what=f'{chassis} at revision {revision}')
