"""Table port_security: a VM sends only as itself (or as an allowed address pair)."""
from dragonflow.controller import apps
from dragonflow.controller.flows import CONTROLLER
from dragonflow.controller.reconciler import Reconciler
from tests.flowsim import FlowTableSimulator
from tests.unit.builders import BROADCAST, TopologyBuilder, arp_request, install, ip_of, ipv4

DHCP_DISCOVER = dict(ipv4_src='0.0.0.0', ip_proto=17, udp_src=68, udp_dst=67)


def _net(**attrs):
    b = TopologyBuilder()
    subnet = b.subnet(b.network('a'), '10.0.0.0/24')
    vm = b.port(subnet, '10.0.0.5', ofport=1, **attrs)
    peer = b.port(subnet, '10.0.0.6', ofport=2)
    return install(b.build()), vm, peer


def test_own_mac_and_ip_pass():
    sim, vm, peer = _net()
    assert sim.outputs(1, **ipv4(vm, peer.mac_address, ip_of(peer))) == [2]
    assert sim.outputs(1, **arp_request(vm, '10.0.0.77')) == [2]


def test_forged_source_mac_ip_or_arp_sender_is_dropped():
    sim, vm, peer = _net()
    good = ipv4(vm, peer.mac_address, ip_of(peer))
    assert sim.outputs(1, **dict(good, eth_src='fa:16:3e:66:66:66')) == []
    assert sim.outputs(1, **dict(good, ipv4_src='10.0.0.66')) == []
    assert sim.outputs(1, **arp_request(vm, '10.0.0.77', sender_ip='10.0.0.66')) == []
    assert sim.outputs(1, **dict(arp_request(vm, '10.0.0.77'),
                                 arp_sha='fa:16:3e:66:66:66')) == []


def test_dhcp_request_and_arp_probe_from_no_address_pass_with_own_mac_only():
    sim, vm, _ = _net()
    discover = dict(ipv4(vm, BROADCAST, '255.255.255.255'), **DHCP_DISCOVER)
    assert sim.outputs(1, **discover) == [CONTROLLER]
    assert sim.outputs(1, **dict(discover, eth_src='fa:16:3e:66:66:66')) == []
    assert sim.outputs(1, **dict(discover, udp_dst=53)) == []  # only DHCP from 0.0.0.0
    assert sim.outputs(1, **arp_request(vm, '10.0.0.5', sender_ip='0.0.0.0')) == [2]


def test_allowed_address_pairs_pass():
    sim, vm, peer = _net(allowed_address_pairs=[
        {'ip_address': '10.0.0.128/25'},
        {'ip_address': '10.0.0.50', 'mac_address': 'fa:16:3e:bb:00:01'}])
    to_peer = ipv4(vm, peer.mac_address, ip_of(peer))
    assert sim.outputs(1, **dict(to_peer, ipv4_src='10.0.0.200')) == [2]
    assert sim.outputs(1, **dict(to_peer, ipv4_src='10.0.0.50',
                                 eth_src='fa:16:3e:bb:00:01')) == [2]
    assert sim.outputs(1, **dict(to_peer, ipv4_src='10.0.0.50')) == []  # pair's MAC only
    assert sim.outputs(1, **dict(to_peer, ipv4_src='10.0.0.100')) == []


def test_port_security_disabled_passes_anything():
    sim, vm, peer = _net(port_security_enabled=False)
    forged = dict(ipv4(vm, peer.mac_address, ip_of(peer)), eth_src='fa:16:3e:66:66:66',
                  ipv4_src='192.0.2.1')
    assert sim.outputs(1, **forged) == [2]


def test_an_allowed_pair_of_any_address_lets_its_mac_send_from_any():
    """0.0.0.0/0, the Neutron idiom for "anything": no address field at all, as the switch
    reads it back; the port's own flows it covers are not written besides."""
    sim, vm, peer = _net(allowed_address_pairs=[{'ip_address': '0.0.0.0/0'}])
    to_peer = ipv4(vm, peer.mac_address, ip_of(peer))
    for source in ('10.0.0.5', '192.0.2.1', '0.0.0.0'):
        assert sim.outputs(1, **dict(to_peer, ipv4_src=source)) == [2]
        assert sim.outputs(1, **arp_request(vm, '10.0.0.77', sender_ip=source)) == [2]
    discover = dict(ipv4(vm, BROADCAST, '255.255.255.255'), **DHCP_DISCOVER)
    assert sim.outputs(1, **discover) == [CONTROLLER]
    assert sim.outputs(1, **dict(to_peer, eth_src='fa:16:3e:66:66:66')) == []
    assert {frozenset(f.match.fields() - {'reg6', 'eth_src', 'arp_sha'}) for f in sim.table(5)
            if f.match['reg6'] == vm.key} == {frozenset({'eth_type'})}


def test_an_allowed_pair_of_any_address_with_another_mac_is_that_macs_only():
    sim, vm, peer = _net(allowed_address_pairs=[
        {'ip_address': '0.0.0.0/0', 'mac_address': 'fa:16:3e:bb:00:01'}])
    to_peer = ipv4(vm, peer.mac_address, ip_of(peer))
    assert sim.outputs(1, **dict(to_peer, eth_src='fa:16:3e:bb:00:01',
                                 ipv4_src='192.0.2.1')) == [2]
    assert sim.outputs(1, **dict(to_peer, ipv4_src='192.0.2.1')) == []
    assert sim.outputs(1, **to_peer) == [2]


def test_a_fixed_ip_inside_an_allowed_prefix_and_host_bits_in_a_prefix():
    """10.0.0.5 is inside 10.0.0.0/24, written with host bits set: one flow covers both, so
    no two flows of the port match one packet."""
    sim, vm, peer = _net(allowed_address_pairs=[{'ip_address': '10.0.0.77/24'},
                                                {'ip_address': '10.0.1.130/25'}])
    to_peer = ipv4(vm, peer.mac_address, ip_of(peer))
    for source, outputs in (('10.0.0.5', [2]), ('10.0.0.200', [2]), ('10.0.1.200', [2]),
                            ('10.0.1.100', []), ('10.0.2.5', [])):
        assert sim.outputs(1, **dict(to_peer, ipv4_src=source)) == outputs, source
    ipv4_flows = [f for f in sim.table(5) if f.match.get('reg6') == vm.key
                  and f.match.get('eth_type') == 0x0800 and 'ip_proto' not in f.match.fields()]
    assert sorted(f.match['ipv4_src'] for f in ipv4_flows) == [
        ('10.0.0.0', '255.255.255.0'), ('10.0.1.128', '255.255.255.128')]


def test_an_any_address_pair_is_not_rewritten_at_a_resync():
    b = TopologyBuilder()
    subnet = b.subnet(b.network('a'), '10.0.0.0/24')
    b.port(subnet, '10.0.0.5', ofport=1, allowed_address_pairs=[{'ip_address': '0.0.0.0/0'}])
    desired = apps.desired_flows(b.build())
    reconciler = Reconciler(FlowTableSimulator())
    reconciler.reconcile(desired)
    reconciler.resync()
    assert not reconciler.reconcile(desired)
