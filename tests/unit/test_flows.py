"""Flows as values: a prefix is matched in the one form br-int reads it back in, so a resync
finds the apps' flows installed and rewrites none of them."""
import ipaddress

import pytest

from dragonflow.controller import apps
from dragonflow.controller.flows import Flow, Match, Output, prefix_match
from dragonflow.controller.reconciler import Reconciler
from tests.flowsim import FlowTableSimulator
from tests.unit.builders import TopologyBuilder, every_kind_of_flow, read_back

IP = 0x0800
LENGTHS = range(33)


def _flow(**match) -> Flow:
    return Flow(5, 100, Match(eth_type=IP, reg6=1, **match), (Output(1),))


@pytest.mark.parametrize('length', LENGTHS)
def test_a_prefix_of_any_length_matches_as_it_reads_back(length):
    """10.1.2.3 has host bits set below every length but /32."""
    flow = _flow(**prefix_match('ipv4_src', f'10.1.2.3/{length}'))
    assert read_back(flow) == flow


def test_the_three_forms_of_a_prefix():
    assert prefix_match('ipv4_src', '0.0.0.0/0') == {}
    assert prefix_match('arp_spa', '10.1.2.3/0') == {}
    assert prefix_match('ipv4_dst', '10.1.2.3') == {'ipv4_dst': '10.1.2.3'}
    assert prefix_match('ipv4_dst', '10.1.2.3/32') == {'ipv4_dst': '10.1.2.3'}
    assert prefix_match('ipv4_dst', '10.1.2.3/24') == {'ipv4_dst': ('10.1.2.0', '255.255.255.0')}
    assert prefix_match('ipv4_dst', ipaddress.ip_network('10.1.0.0/16')) == \
        {'ipv4_dst': ('10.1.0.0', '255.255.0.0')}
    assert prefix_match('ipv4_dst', ipaddress.ip_address('10.1.2.3')) == {'ipv4_dst': '10.1.2.3'}


@pytest.mark.parametrize('address, mask', [
    ('0.0.0.0', '0.0.0.0'),              # a /0 written out: OVS drops the field
    ('10.1.2.3', '255.255.255.255'),     # a /32 masked: OVS reads it back plain
    ('10.1.2.3', '255.255.255.0'),       # host bits: OVS keeps the network only
])
def test_any_other_form_reads_back_different(address, mask):
    """What the helper is for: these would be rewritten at every resync."""
    flow = _flow(ipv4_src=(address, mask))
    assert read_back(flow) != flow


def test_every_kind_of_flow_reads_back_as_it_was_made():
    """As the reconciler's own test, but through OVS's normalisation too: any address
    (an allowed address pair, a rule's remote prefix) included."""
    for flow in every_kind_of_flow():
        assert read_back(flow) == flow


@pytest.mark.parametrize('length', LENGTHS)
def test_the_apps_prefixes_of_any_length_read_back_as_built(length):
    """An allowed address pair, an extra route and a rule's remote prefix of each length,
    with host bits set: after a resync the reconciler finds nothing to change."""
    b = TopologyBuilder()
    s1, s2 = (b.subnet(b.network(f'n{i}'), f'10.0.{i}.0/24') for i in (1, 2))
    group = b.security_group('web', ('egress', {}), ('ingress', dict(
        protocol='tcp', port_range_min=22, port_range_max=22,
        remote_ip_prefix=f'10.7.0.3/{length}')))
    b.port(s1, '10.0.1.5', ofport=1, security_groups=[group.id],
           allowed_address_pairs=[{'ip_address': f'10.0.1.77/{length}'},
                                  {'ip_address': f'10.9.0.77/{length}',
                                   'mac_address': 'fa:16:3e:cc:00:01'}])
    nexthop = b.port(s2, '10.0.2.9', ofport=2)
    b.router('r', s1, s2, routes=[{'destination': f'10.5.0.9/{length}',
                                   'nexthop': nexthop.fixed_ips[0].ip_address}])
    desired = apps.desired_flows(b.build())
    reconciler = Reconciler(FlowTableSimulator())
    reconciler.reconcile(desired)
    reconciler.resync()
    assert set(reconciler.switch.dump_flows()) == set(desired)
    assert not reconciler.reconcile(desired)
