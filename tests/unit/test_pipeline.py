"""The declared pipeline: tables refuse flows they were not declared for, and every flow the
apps make fits its table and carries its app's cookie."""
import pytest

from dragonflow.controller import apps
from dragonflow.controller import pipeline as p
from dragonflow.controller.flows import (
    COOKIE_OBJECT_MASK,
    Flow,
    Goto,
    Match,
    Output,
    Resubmit,
    SetField,
)
from dragonflow.controller.reconciler import index
from tests.flowsim import FlowTableSimulator
from tests.unit.builders import rich_topology


def test_table_refuses_undeclared_match_fields():
    with pytest.raises(ValueError, match='does not match on'):
        p.OUTPUT.flow(100, Match(reg7=5, eth_dst='fa:16:3e:00:00:01'), [Output(1)])
    with pytest.raises(ValueError, match='does not match on'):
        p.L2_LOOKUP.flow(100, Match(metadata=1, ipv4_dst='10.0.0.5'), [p.L3.goto()])


@pytest.mark.parametrize('table, action', [
    (p.OUTPUT, p.CLASSIFY.goto()),
    (p.CLASSIFY, p.L3.goto()),
    (p.L3, Resubmit(p.L2_LOOKUP.number)),
    (p.SERVICES, Goto(99)),       # not a table at all
    (p.L2_LOOKUP, Resubmit(99)),
])
def test_table_refuses_to_continue_in_undeclared_tables(table, action):
    with pytest.raises(ValueError, match='may not continue'):
        table.flow(0, Match(), [action])


def test_table_builds_a_declared_flow():
    flow = p.L2_LOOKUP.flow(100, Match(metadata=1, eth_dst='FA:16:3E:00:00:01'),
                            [SetField(p.DESTINATION_PORT_REG, 5), p.EGRESS_DISPATCH.goto()], 7)
    assert flow == Flow(30, 100, Match(metadata=1, eth_dst='fa:16:3e:00:00:01'),
                        (SetField('reg7', 5), Goto(60)), 7)


def test_goto_only_as_the_last_action():
    with pytest.raises(ValueError, match='last action'):
        Flow(30, 100, Match(), (Goto(60), Output(1)))


def test_declarations_are_consistent():
    assert len(p.BY_NUMBER) == len(p.BY_NAME) == len(p.TABLES)
    for table in p.TABLES:
        for name in table.next_tables:
            # goto_table may only go forward in OpenFlow; resubmit may go back, to what a
            # table declares as back_tables.
            assert p.BY_NAME[name].number > table.number, (table.name, name)
        for name in table.back_tables:
            assert p.BY_NAME[name].number < table.number, (table.name, name)


def test_every_app_flow_fits_its_table():
    flows = apps.desired_flows(rich_topology().build())
    for flow in flows:
        table = p.BY_NUMBER[flow.table]
        assert flow.match.fields() <= table.match_fields, flow
        assert [a for a in flow.actions if isinstance(a, (Goto, Resubmit))] == \
            [a for a in flow.actions if isinstance(a, (Goto, Resubmit))
             and p.BY_NUMBER[a.table].name in table.next_tables + (
                 table.back_tables if isinstance(a, Resubmit) else ())], flow
    index(flows)  # no two flows share an identity with different actions
    FlowTableSimulator().apply([], flows)  # and the switch's own checks accept them


def test_every_table_in_use_is_declared_and_used():
    tables = {f.table for f in apps.desired_flows(rich_topology().build())}
    assert tables == set(p.BY_NUMBER)


def test_each_flows_cookie_names_its_app():
    topology = rich_topology().build()
    stamped = apps.desired_flows(topology)
    assert {apps.app_name(f.cookie) for f in stamped} == {app.NAME for app in apps.APPS}
    for app in apps.APPS:
        own = {f.key: f for f in app.flows(topology)}
        named = {f.key: f for f in stamped if apps.app_name(f.cookie) == app.NAME}
        assert named.keys() == own.keys(), app.NAME
        for key, flow in own.items():  # the object's key survives under the app's id
            assert named[key].cookie & COOKIE_OBJECT_MASK == flow.cookie & COOKIE_OBJECT_MASK
            assert named[key].app_id == apps.APP_IDS[app.NAME]


def test_unknown_app_id():
    assert apps.app_name(0) == 'unknown'
    assert apps.app_name(0x7f << 56) == 'unknown'


def test_each_table_a_way_out_starts_in_sends_too_big_frames_to_the_controller():
    """frag_needed.py answers what these tables send up: nothing else may punt there on
    reg0, and each of them does (the rich topology has every way out)."""
    punts = {f.table for f in apps.desired_flows(rich_topology().build())
             if f.match.get(p.TOO_BIG_REG) == p.TOO_BIG}
    assert punts == {t.number for t in p.TOO_BIG_TABLES}
