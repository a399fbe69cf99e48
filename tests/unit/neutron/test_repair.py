"""The repair pass brings the NB store back to what Neutron holds."""
import pytest

from dragonflow import store as df_store
from dragonflow.model import Network, Port, SecurityGroup, Subnet
from dragonflow.neutron import mirror, repair


@pytest.fixture
def store(tmp_path):
    s = df_store.connect(f'sqlite:///{tmp_path}/nb.db')
    yield s
    s.close()


class FakeCore:
    """The ML2 plugin's listing calls, over dicts shaped as Neutron's."""

    def __init__(self):
        self.networks = [{'id': 'n1', 'name': 'net', 'revision_number': 2, 'mtu': 1450,
                          'provider:network_type': 'vxlan',
                          'provider:segmentation_id': 5}]
        self.subnets = [{'id': 's1', 'network_id': 'n1', 'cidr': '10.0.0.0/24',
                         'ip_version': 4, 'revision_number': 1}]
        self.ports = [{'id': 'p1', 'network_id': 'n1', 'mac_address': 'fa:16:3e:00:00:01',
                       'revision_number': 4, 'security_groups': ['g1']}]
        self.groups = [{'id': 'g1', 'name': 'default', 'revision_number': 1,
                        'security_group_rules': [{'id': 'r1'}]}]

    def get_networks(self, context):
        return self.networks

    def get_subnets(self, context):
        return self.subnets

    def get_ports(self, context):
        return self.ports

    def get_security_groups(self, context):
        return self.groups

    def get_security_group_rules(self, context):
        return []


def stored(store, model, id):
    record = store.get(model.table, id)
    return None if record is None else model.from_doc(record.value, record.revision)


def test_repair_rewrites_what_a_failed_postcommit_left_behind(store):
    nb = mirror.NbMirror(store)
    core = FakeCore()
    nb.upsert(Network, {**core.networks[0], 'revision_number': 1, 'name': 'old'})
    key = stored(store, Network, 'n1').key
    nb.upsert(Subnet, {'id': 'gone', 'network_id': 'n1', 'cidr': '10.9.0.0/24',
                       'revision_number': 1})
    counts = repair.RepairPass(nb, core).run(context=None)
    assert stored(store, Network, 'n1').name == 'net'
    assert stored(store, Network, 'n1').key == key
    assert stored(store, Subnet, 's1') is not None and stored(store, Port, 'p1') is not None
    assert stored(store, SecurityGroup, 'g1').name == 'default'
    assert stored(store, Subnet, 'gone') is None  # Neutron has no such subnet
    assert counts['removed'][Subnet.table] == 1
    revision = store.revision()
    repair.RepairPass(nb, core).run(context=None)
    assert store.revision() == revision  # nothing differs: nothing written


def test_one_bad_object_does_not_stop_the_pass(store):
    core = FakeCore()
    core.subnets.insert(0, {'id': 'bad', 'network_id': 'n1', 'cidr': 'not a cidr?',
                            'ip_version': 4, 'ip_version_oops': None})
    core.subnets[0].pop('cidr')
    repair.RepairPass(mirror.NbMirror(store), core).run(context=None)
    assert stored(store, Subnet, 's1') is not None
