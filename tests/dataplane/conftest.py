"""Real data plane: a Cloud (store, df-api, chassis with real Open vSwitch, VMs as network
namespaces). Resources are made through the API with openstacksdk; checks use real packets."""
import itertools
import os

import pytest

from dragonflow.lab.cloud import Cloud

_names = itertools.count(1)


def pytest_collection_modifyitems(items):
    for item in items:
        if 'tests/dataplane' in str(item.fspath):
            item.add_marker(pytest.mark.dataplane)


@pytest.fixture(scope='session')
def cloud(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail('the data-plane tests need root (network namespaces and Open vSwitch)')
    with Cloud(str(tmp_path_factory.mktemp('cloud'))) as c:
        c.start(chassis=1)
        yield c


class Topo:
    """Creates networks, subnets, routers and VMs through the API for one test."""

    def __init__(self, cloud):
        self.cloud, self.sdk = cloud, cloud.sdk

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

    def port(self, subnet):
        return self.sdk.network.create_port(network_id=subnet.network_id,
                                            fixed_ips=[{'subnet_id': subnet.id}])

    def vm(self, subnet, chassis='ch1'):
        port = self.port(subnet)
        vm = self.cloud.vm(chassis, port)
        self.cloud.wait_port_active(port.id)
        vm.port = port
        return vm


@pytest.fixture
def topo(cloud):
    return Topo(cloud)
