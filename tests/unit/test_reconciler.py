"""The reconciler sends the switch exactly the difference between what it holds and what the
apps want, and converges a switch that holds anything at all."""
import pytest

from dragonflow.controller import apps
from dragonflow.controller.flows import (
    COOKIE_OBJECT_MASK,
    Conjunction,
    Conntrack,
    Flow,
    Goto,
    Match,
    Output,
    SetField,
    cookie,
)
from dragonflow.controller.reconciler import Reconciler, index
from tests.flowsim import FlowTableSimulator
from tests.unit.builders import every_kind_of_flow, read_back, rich_topology

PORT_REGS = ('reg6', 'reg7')


def _reconciled(topology):
    reconciler = Reconciler(FlowTableSimulator())
    reconciler.reconcile(apps.desired_flows(topology))
    return reconciler


def test_reconciling_twice_changes_nothing():
    topology = rich_topology().build()
    reconciler = _reconciled(topology)
    sim = reconciler.switch
    before = dict(sim.flows)
    assert sim.bundles == 1
    change = reconciler.reconcile(apps.desired_flows(topology))
    assert not change and change.deletes == [] and change.adds == []
    assert sim.bundles == 1 and sim.flows == before


def _mentions(flow, port, ofport) -> bool:
    """Whether a flow is about the port: its key (in reg6, reg7 or the cookie), its ofport
    (in_port, output) or its MAC, anywhere in the match or the actions. Not its IPs: the
    other project in the topology reuses them."""
    values = [(field, value) for field, value in flow.match]
    values += [(a.field, a.value) for a in flow.actions if isinstance(a, SetField)]
    values += [('in_port', a.port) for a in flow.actions if isinstance(a, Output)]
    return (flow.cookie & COOKIE_OBJECT_MASK) == port.key or any(
        (field in PORT_REGS and value == port.key) or (field == 'in_port' and value == ofport)
        or value == port.mac_address for field, value in values)


def test_removing_a_port_removes_its_flows_and_nothing_else():
    builder = rich_topology()
    port = builder.ports['port-net-p1-b-10.0.2.9']  # a VM, and the nexthop of extra routes
    ofport = builder.ofports[port.id]
    reconciler = _reconciled(builder.build())
    sim = reconciler.switch
    before = set(sim.flows.values())
    assert any(_mentions(f, port, ofport) for f in before)

    builder.remove_port(port)
    change = reconciler.reconcile(apps.desired_flows(builder.build()))
    after = set(sim.flows.values())
    assert not any(_mentions(f, port, ofport) for f in after)
    # Flows not about the port are untouched; flows about it are gone or rewritten
    # (the network's flood list, routes that used it as nexthop) to no longer mention it.
    assert {f for f in before if not _mentions(f, port, ofport)} <= after
    rewritten = {f.key for f in before if _mentions(f, port, ofport)}
    assert after - before and {f.key for f in after - before} <= rewritten
    assert set(change.deletes) == {f for f in before if f.key not in sim.flows}
    assert all(_mentions(f, port, ofport) for f in change.deletes)
    assert sim.bundles == 2


def test_changing_actions_is_one_add_and_no_delete():
    sim = FlowTableSimulator()
    reconciler = Reconciler(sim)
    old = Flow(80, 100, Match(reg7=5), (Output(1),), 1)
    other = Flow(80, 100, Match(reg7=6), (Output(2),), 1)
    reconciler.reconcile([old, other])
    new = Flow(80, 100, Match(reg7=5), (Output(3),), 1)
    change = reconciler.reconcile([new, other])
    assert change.adds == [new] and change.deletes == []
    assert set(sim.flows.values()) == {new, other}


def test_changing_only_the_cookie_is_an_add():
    reconciler = Reconciler(FlowTableSimulator())
    flow = Flow(80, 100, Match(reg7=5), (Output(1),), 1)
    reconciler.reconcile([flow])
    change = reconciler.reconcile([Flow(80, 100, Match(reg7=5), (Output(1),), 2)])
    assert len(change.adds) == 1 and change.deletes == []


def test_of_conflicting_flows_the_first_by_precedence_is_installed_in_any_order(caplog):
    flow = Flow(30, 100, Match(metadata=1, eth_dst='fa:16:3e:00:00:01'),
                (SetField('reg7', 5), Goto(60)), cookie=of_cookie('l2', 5))
    conflicting = Flow(30, 100, Match(eth_dst='FA:16:3E:00:00:01', metadata=1),
                       (SetField('reg7', 6), Goto(60)), cookie=of_cookie('dhcp', 7))
    for flows in ([flow, conflicting], [conflicting, flow]):
        sim = FlowTableSimulator()
        reconciler = Reconciler(sim, rank=apps.precedence, owner=apps.owner)
        caplog.clear()
        assert reconciler.reconcile(flows).adds == [flow]
        assert list(sim.flows.values()) == [flow]
        logged = [r.getMessage() for r in caplog.records if r.levelname == 'ERROR']
        assert len(logged) == 1 and 'l2 (object 5)' in logged[0] \
            and 'dhcp (object 7)' in logged[0]
        caplog.clear()
        assert not reconciler.reconcile(flows)  # the same conflict again: not logged again
        assert not [r for r in caplog.records if r.levelname == 'ERROR']
    assert reconciler.reconcile([flow, flow]).deletes == []  # identical ones just collapse


def of_cookie(app: str, key: int) -> int:
    return cookie(apps.APP_IDS[app], key)


def test_resync_converges_a_stale_switch_in_one_bundle():
    desired = apps.desired_flows(rich_topology().build())
    kept, changed = desired[:len(desired) // 2], desired[len(desired) // 2]
    stale = [Flow(30, 100, Match(metadata=99, eth_dst='fa:16:3e:99:99:99'),
                  (SetField('reg7', 99), Goto(60)), 99),
             Flow(80, 100, Match(reg7=99), (Output(99),), 99),
             Flow(7, 0, Match(), ())]
    sim = FlowTableSimulator()
    sim.apply([], kept + stale + [Flow(changed.table, changed.priority, changed.match,
                                       (Output(1),), changed.cookie)])
    reconciler = Reconciler(sim)
    reconciler.resync()
    change = reconciler.reconcile(desired)
    assert set(sim.flows.values()) == set(desired)
    assert sim.bundles == 2
    assert set(change.deletes) == set(stale)
    assert set(change.adds) == set(desired) - set(kept)
    assert not reconciler.reconcile(desired)


def test_refused_bundle_is_sent_again_in_full():
    """If the switch refuses a bundle, nothing is believed installed, so the next reconcile
    retries everything rather than assuming half of it went in."""
    sim = FlowTableSimulator()
    reconciler = Reconciler(sim)
    good = Flow(80, 100, Match(reg7=5), (Output(1),))
    bad = Flow(60, 100, Match(reg7=5), (Goto(20),))  # goto_table backwards: OVS refuses it
    with pytest.raises(ValueError):
        reconciler.reconcile([good, bad])
    assert sim.flows == {} and reconciler.installed == {}
    assert reconciler.reconcile([good]).adds == [good]


def test_every_flow_reads_back_as_it_was_made():
    """A resync must find the flows the apps want equal to the ones installed, or a restarted
    controller would rewrite them all: conjunctions, conj_id and zones from a register
    included, read back as OVS keeps them (builders.read_back)."""
    desired = every_kind_of_flow()
    assert any(isinstance(a, Conjunction) for f in desired for a in f.actions)
    assert any('conj_id' in f.match.fields() for f in desired)
    assert any(isinstance(a, Conntrack) and isinstance(a.zone, str)
               for f in desired for a in f.actions)
    for flow in desired:
        assert read_back(flow) == flow


def test_conjunctions_compare_in_any_order_and_never_with_other_actions():
    match = Match(eth_type=0x0800, ipv4_src='10.0.0.5')
    one, two = Conjunction(7, 2, 2), Conjunction(3, 2, 2)
    assert Flow(75, 90, match, (one, two)) == Flow(75, 90, match, (two, one))
    with pytest.raises(ValueError):
        Flow(75, 90, match, (one, Goto(80)))
    with pytest.raises(ValueError):
        Conjunction(1, 3, 2)  # clause 3 of 2


def test_then_runs_after_the_change_is_sent_and_also_when_there_is_none():
    """The controller sends held packets there: they must come after the flows they need."""
    sim = FlowTableSimulator()
    reconciler = Reconciler(sim)
    flow = Flow(80, 100, Match(reg7=5), (Output(1),), 2)
    seen = []
    reconciler.reconcile([flow], then=lambda: seen.append(set(sim.flows.values())))
    reconciler.reconcile([flow], then=lambda: seen.append('no change'))
    assert seen == [{flow}, 'no change']
    assert sim.bundles == 1


def test_a_vm_port_given_the_gateway_address_of_a_dhcp_subnet_without_router():
    """Neutron allows it; the DHCP server's ARP answer for that address and the port's own
    wanted one flow identity, and the conflict stopped the controller's loop."""
    from tests.unit.builders import TopologyBuilder, arp_request, install
    b = TopologyBuilder()
    subnet = b.subnet(b.network('a'), '10.0.0.0/24')
    squatter = b.port(subnet, subnet.gateway_ip, ofport=1)
    asker = b.port(subnet, '10.0.0.5', ofport=2)
    conflicts = []
    index(apps.desired_flows(b.build()), apps.precedence, conflicts)
    assert conflicts == []
    sim = install(b.build())
    [reply] = sim.run(2, **arp_request(asker, subnet.gateway_ip))
    assert reply.port == 2 and reply.packet['arp_sha'] == squatter.mac_address


def test_an_app_that_raises_keeps_its_last_good_flows_and_the_others_go_on(monkeypatch):
    topology = rich_topology().build()
    app_flows = apps.AppFlows()
    good = app_flows(topology)
    l3_flows = [f for f in good if apps.app_name(f.cookie) == 'l3']

    def broken(_):
        raise KeyError('a bug')
        yield
    monkeypatch.setattr(apps.l3, 'flows', broken)
    again = app_flows(topology)
    assert app_flows.failing == ('l3',)
    assert [f for f in again if apps.app_name(f.cookie) == 'l3'] == l3_flows
    assert set(again) == set(good)


def test_a_unit_that_raises_has_no_flows_and_the_other_units_keep_theirs():
    from dragonflow.controller.apps import units
    builder = rich_topology()
    victim = builder.ports['port-net-p1-b-10.0.2.9']
    good = apps.desired_flows(builder.build())
    units.inject_fault('port_security', victim.id)
    try:
        degraded = apps.desired_flows(builder.build())
    finally:
        units._fault = None
    lost = set(good) - set(degraded)
    assert lost and set(degraded) <= set(good)
    assert all(apps.app_name(f.cookie) == 'port_security' and f.match.get('reg6') == victim.key
               for f in lost)


def test_an_app_failing_from_the_start_keeps_what_br_int_has_of_it(monkeypatch):
    """A restarted controller whose app fails on every pass must not delete that app's
    flows from the switch: it has no last good pass of its own."""
    topology = rich_topology().build()
    installed = {f.key: f for f in apps.desired_flows(topology)}
    l3_flows = {f for f in installed.values() if apps.app_name(f.cookie) == 'l3'}

    def broken(_):
        raise KeyError('a bug')
        yield
    monkeypatch.setattr(apps.l3, 'flows', broken)
    restarted = apps.AppFlows(installed=lambda: installed)
    assert {f for f in restarted(topology) if apps.app_name(f.cookie) == 'l3'} == l3_flows
