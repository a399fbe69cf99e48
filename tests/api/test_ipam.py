"""Address arithmetic of dragonflow.api.ipam, and its reservations in a real store."""
import ipaddress
import random

import pytest

from dragonflow import store as nb
from dragonflow.api import errors, ipam, txn
from dragonflow.model import AllocationPool, IPAllocation, Subnet


def pools(*ranges):
    return [AllocationPool(start=a, end=b) for a, b in ranges]


def test_default_pools_leave_out_network_broadcast_and_gateway():
    assert ipam.default_gateway('10.0.0.0/24') == '10.0.0.1'
    assert ipam.default_pools('10.0.0.0/24', '10.0.0.1') == pools(('10.0.0.2', '10.0.0.254'))
    assert ipam.default_pools('10.0.0.0/24', '10.0.0.100') == pools(
        ('10.0.0.1', '10.0.0.99'), ('10.0.0.101', '10.0.0.254'))
    assert ipam.default_pools('10.0.0.0/24', None) == pools(('10.0.0.1', '10.0.0.254'))
    assert ipam.default_pools('fd00::/64', 'fd00::1') == pools(
        ('fd00::2', 'fd00::ffff:ffff:ffff:ffff'))
    assert ipam.default_pools('10.0.0.0/31', None) == pools(('10.0.0.0', '10.0.0.1'))


@pytest.mark.parametrize('requested,gateway,error', [
    ([{'start': '10.0.0.20', 'end': '10.0.0.10'}], None, errors.InvalidAllocationPool),
    ([{'start': 'fd00::1', 'end': 'fd00::2'}], None, errors.InvalidAllocationPool),
    ([{'start': '10.0.0.0', 'end': '10.0.0.10'}], None, errors.OutOfBoundsAllocationPool),
    ([{'start': '10.0.0.250', 'end': '10.0.0.255'}], None, errors.OutOfBoundsAllocationPool),
    ([{'start': '10.0.0.2', 'end': '10.0.0.10'}, {'start': '10.0.0.10', 'end': '10.0.0.20'}],
     None, errors.OverlappingAllocationPools),
    ([{'start': '10.0.0.1', 'end': '10.0.0.10'}], '10.0.0.1',
     errors.GatewayConflictWithAllocationPools),
])
def test_bad_pools_are_refused_with_neutrons_errors(requested, gateway, error):
    with pytest.raises(error):
        ipam.check_pools('10.0.0.0/24', requested, gateway)


def test_pick_free_never_picks_a_taken_address_and_reports_full_pools():
    rng = random.Random(1)
    pool = pools(('10.0.0.2', '10.0.0.9'))
    start = int(ipaddress.ip_address('10.0.0.2'))
    taken = set()
    for _ in range(8):
        ip = ipam.pick_free(pool, taken, rng)
        assert start <= ip <= start + 7 and ip not in taken
        taken.add(ip)
    assert ipam.pick_free(pool, taken, rng) is None


def test_pick_free_probes_huge_pools():
    big = pools(('fd00::2', 'fd00::ffff:ffff:ffff:ffff'))
    ip = ipam.pick_free(big, set(), random.Random(1))
    assert ipaddress.ip_address(ip) in ipaddress.ip_network('fd00::/64')


def test_macs_and_slaac_addresses():
    mac = ipam.random_mac('fa:16:3e:00:00:00', random.Random(1))
    assert mac.startswith('fa:16:3e:') and len(mac) == 17
    assert ipam.random_mac('fa:16:3e:42:00:00', random.Random(1)).startswith('fa:16:3e:42:')
    assert ipam.eui64('fd00:1::/64', 'fa:16:3e:11:22:33') == 'fd00:1::f816:3eff:fe11:2233'


@pytest.fixture
def store(tmp_path):
    store = nb.connect(f'sqlite://{tmp_path / "nb.sqlite"}')
    yield store
    store.close()


def _subnet(store) -> Subnet:
    subnet = Subnet(id='s1', network_id='n1', cidr='10.0.0.0/29', gateway_ip='10.0.0.1',
                    allocation_pools=pools(('10.0.0.2', '10.0.0.3')))
    subnet.revision = store.put(Subnet.table, subnet.id, subnet.to_doc())
    return subnet


def test_an_address_reserved_elsewhere_meanwhile_fails_the_commit(store):
    subnet = _subnet(store)
    first = txn.Txn(store)
    ipam.Ipam(first).reserve_ip(subnet, '10.0.0.2', 'port-a')
    second = txn.Txn(store)
    ipam.Ipam(second).reserve_ip(subnet, '10.0.0.2', 'port-b')  # both planned, one commits
    first.commit()
    with pytest.raises(nb.api.Conflict):
        second.commit()
    assert store.get(IPAllocation.table, 's1/10.0.0.2').value['port_id'] == 'port-a'
    with pytest.raises(errors.IpAddressAlreadyAllocated):  # the re-plan sees the reservation
        ipam.Ipam(txn.Txn(store)).reserve_ip(subnet, '10.0.0.2', 'port-b')


def test_reserve_any_fills_the_pool_then_reports_none(store):
    subnet = _subnet(store)
    plan = txn.Txn(store)
    addresses = ipam.Ipam(plan)
    got = {addresses.reserve_any(subnet, f'p{i}').ip_address for i in range(2)}
    assert got == {'10.0.0.2', '10.0.0.3'}   # the Txn sees its own pending reservations
    assert addresses.reserve_any(subnet, 'p3') is None
    plan.commit()
    assert len(store.list(IPAllocation.table)) == 2
