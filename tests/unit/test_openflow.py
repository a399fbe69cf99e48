"""The OpenFlow adapter: flow_mods and bundles are the bytes os-ken's own objects make; against a
fake connection, a bundle's future settles on its commit reply, a late answer to a request
given up on goes nowhere, and a connection's end fails its own requests only."""
import itertools
import threading
import types

import pytest
from os_ken.controller import ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER
from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from dragonflow.controller import openflow
from dragonflow.controller.flows import (
    BundleLoad,
    CheckPktLarger,
    Conntrack,
    Flow,
    Goto,
    Match,
    Nat,
    Output,
    PopVlan,
    PushVlan,
    SetField,
)
from dragonflow.controller.openflow import OpenFlowSwitch, SwitchError
from tests.unit.builders import every_kind_of_flow, read_back

FLOW = Flow(80, 100, Match(reg7=5), (Output(1),))


class Datapath(ofproto_protocol.ProtocolDesc):
    """What OpenFlowSwitch uses of an os-ken datapath: numbers messages, keeps what is sent."""

    is_active = True

    def __init__(self, first_xid=1):
        super().__init__(ofp.OFP_VERSION)
        self.xids = itertools.count(first_xid)  # os-ken starts each connection's at random
        self.last_xid = None
        self.sent = []
        self.socket = types.SimpleNamespace(sendall=self.sent.append)

    def set_xid(self, message):
        message.set_xid(next(self.xids))
        self.last_xid = message.xid

    def close(self):
        self.is_active = False


@pytest.fixture
def switch():
    switch = OpenFlowSwitch('127.0.0.1', 0, on_connect=lambda: None)
    switch.datapath = Datapath()
    return switch


def reply_to(xid):
    return types.SimpleNamespace(xid=xid)


def test_a_bundle_is_sent_at_once_and_confirmed_by_its_commit_reply(switch):
    confirmation = switch.apply([], [FLOW])
    assert switch.datapath.sent and not confirmation.done()
    switch._reply(reply_to(switch.datapath.last_xid))
    assert openflow.wait(confirmation, 0) == [reply_to(switch.datapath.last_xid)]
    assert not switch._waiters  # nothing kept for a request answered


def test_a_bundle_is_on_the_wire_as_os_ken_would_write_it(switch):
    stale = Flow(80, 100, Match(reg7=4), (Output(2),))
    switch.apply([stale], [FLOW])
    datapath = Datapath()  # the same xids again
    flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
    messages = [
        parser.ONFBundleCtrlMsg(datapath, 1, ofp.ONF_BCT_OPEN_REQUEST, flags, []),
        parser.ONFBundleAddMsg(datapath, 1, flags,
                               os_kens_flow_mod(datapath, stale, ofp.OFPFC_DELETE_STRICT), []),
        parser.ONFBundleAddMsg(datapath, 1, flags,
                               os_kens_flow_mod(datapath, FLOW, ofp.OFPFC_ADD), []),
        parser.ONFBundleCtrlMsg(datapath, 1, ofp.ONF_BCT_COMMIT_REQUEST, flags, [])]
    for message in messages:
        datapath.set_xid(message)
        message.serialize()
    assert switch.datapath.sent == [b''.join(message.buf for message in messages)]


def os_kens_flow_mod(datapath, flow: Flow, command: int):
    """What os-ken's own objects make of the flow, match in keyword form."""
    applied = [openflow._action(a) for a in flow.actions if not isinstance(a, Goto)]
    instructions = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, applied)] \
        if applied else []
    if flow.actions and isinstance(flow.actions[-1], Goto):
        instructions.append(parser.OFPInstructionGotoTable(flow.actions[-1].table))
    return parser.OFPFlowMod(
        datapath, cookie=flow.cookie, table_id=flow.table, command=command,
        priority=flow.priority, match=parser.OFPMatch(**dict(flow.match)),
        instructions=[] if command == ofp.OFPFC_DELETE_STRICT else instructions,
        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)


def test_flows_encode_as_os_kens_own_objects_would():
    """flow_mod puts a flow_mod together from match fields and actions encoded once; the
    bytes on the wire are the ones os-ken's objects make, for adds and deletes alike."""
    desired = every_kind_of_flow()
    for field in ('conj_id', 'tcp_dst', 'udp_dst', 'sctp_dst', 'icmpv4_type', 'ipv4_src'):
        assert any(field in f.match.fields() for f in desired), field
    datapath = ofproto_protocol.ProtocolDesc(ofp.OFP_VERSION)
    for flow in desired:
        for command in (ofp.OFPFC_ADD, ofp.OFPFC_DELETE_STRICT):
            ours = openflow.flow_mod(flow, command)
            theirs = os_kens_flow_mod(datapath, flow, command)
            for message in (ours, theirs):
                message.set_xid(7)
                message.serialize()
            assert ours.buf == theirs.buf, flow


def test_br_int_counts_as_connected_once_os_kens_handshake_is_over():
    """Our requests are written ahead of whatever os-ken still has queued: sent before its
    handshake ends, a reply could come back while no handler of ours listens."""
    connected = []
    switch = OpenFlowSwitch('127.0.0.1', 0, on_connect=lambda: connected.append(switch.datapath))
    app = openflow._OsKenApp(switch=switch)
    assert set(app._state.callers[ofp_event.EventOFPStateChange].dispatchers) == {
        MAIN_DISPATCHER, DEAD_DISPATCHER}
    datapath = Datapath()
    datapath.id = 1
    app._state(types.SimpleNamespace(state=MAIN_DISPATCHER, datapath=datapath))
    assert connected == [datapath] and switch.connected
    app._state(types.SimpleNamespace(state=DEAD_DISPATCHER, datapath=datapath))
    assert not switch.connected


def test_a_connection_that_cannot_be_written_is_closed_and_its_request_fails(switch):
    def broken(_):
        raise ConnectionResetError('reset by peer')
    switch.datapath.socket.sendall = broken
    with pytest.raises(SwitchError, match='cannot write to br-int: reset by peer'):
        switch.apply([], [FLOW])
    assert not switch.connected and not switch._waiters


def test_os_kens_writes_and_ours_share_one_lock():
    written = []

    class Socket:
        def sendall(self, data):
            assert whole._lock.locked()
            written.append(data)

        def recv(self, size):
            return b'from the switch'

    whole = openflow._WholeWrites(Socket())
    whole.sendall(b'bundle')
    assert written == [b'bundle'] and whole.recv(10) == b'from the switch'


def test_an_error_to_any_message_of_a_bundle_refuses_it(switch):
    confirmation = switch.apply([], [FLOW, FLOW])
    switch._error(types.SimpleNamespace(xid=switch.datapath.last_xid - 1, type=1, code=2))
    switch._error(types.SimpleNamespace(xid=switch.datapath.last_xid, type=17, code=0))
    with pytest.raises(SwitchError, match='type 1 code 2'):
        openflow.wait(confirmation, 0)


def test_a_late_answer_to_a_request_given_up_goes_nowhere(switch):
    confirmation = switch.apply([], [FLOW])
    xid = switch.datapath.last_xid
    with pytest.raises(SwitchError, match='no reply'):
        openflow.wait(confirmation, 0)
    assert confirmation.cancelled() and not switch._waiters
    switch._reply(reply_to(xid))  # no waiter any more, and no exception


def test_a_waiter_given_up_meanwhile_takes_no_answer():
    waiter = openflow._Waiter(datapath=None)
    waiter.future.cancel()
    waiter.reply(reply_to(1), last=True)
    waiter.fail('too late')
    assert waiter.future.cancelled()


def test_the_end_of_an_old_connection_fails_only_its_own_requests(switch):
    old = switch.datapath
    on_old = switch.apply([], [FLOW])
    switch.datapath = Datapath(first_xid=1000)  # reconnected before the old one's end is seen
    on_new = switch.apply([], [FLOW])
    switch._disconnected(old)
    with pytest.raises(SwitchError, match='disconnected'):
        openflow.wait(on_old, 0)
    assert not on_new.done() and switch.connected


# VLAN and NAT actions: the forms checked once against Open vSwitch 3.1 (ovs-ofctl dump-flows
# of flows installed through OpenFlowSwitch: pop_vlan, push_vlan:0x8100,
# set_field:4196->vlan_vid, vlan_tci=0x0000/0x1fff for vlan_vid=0, ct(...,nat),
# ct(commit,...,nat(dst=10.0.0.5)), ct(...,zone=NXM_NX_REG4[0..15],nat(src=...))), each read
# back equal.
VLAN_AND_NAT_FLOWS = [
    Flow(0, 100, Match(in_port=1, vlan_vid=0x1000 | 100),
         (PopVlan(), SetField('metadata', 7), Goto(36))),
    Flow(0, 100, Match(in_port=1, vlan_vid=0), (SetField('metadata', 8), Goto(36))),
    Flow(64, 100, Match(metadata=7, eth_src='fa:16:3e:00:00:01'),
         (SetField('eth_src', 'fa:16:3f:01:02:03'), PushVlan(),
          SetField('vlan_vid', 0x1000 | 100), Output(1))),
    Flow(50, 100, Match(metadata=8, eth_type=0x0800, ipv4_dst='172.24.4.10'),
         (SetField('reg5', 3), Conntrack(0x8003, nat=Nat(), table=51))),
    Flow(51, 100, Match(reg5=3, eth_type=0x0800, ipv4_dst='172.24.4.10'),
         (Conntrack(0x8003, commit=True, nat=Nat('dst', '10.0.0.5'), table=52),)),
    Flow(54, 100, Match(reg5=3, eth_type=0x0800, ipv4_src='10.0.0.5'),
         (Conntrack('reg4', commit=True, nat=Nat('src', '172.24.4.10'), table=55),)),
]


@pytest.mark.parametrize('flow', VLAN_AND_NAT_FLOWS, ids=lambda f: repr(f.actions[-1])[:40])
def test_vlan_and_nat_flows_encode_as_os_ken_would_and_read_back_equal(flow):
    datapath = ofproto_protocol.ProtocolDesc(ofp.OFP_VERSION)
    ours, theirs = openflow.flow_mod(flow, ofp.OFPFC_ADD), \
        os_kens_flow_mod(datapath, flow, ofp.OFPFC_ADD)
    for message in (ours, theirs):
        message.set_xid(7)
        message.serialize()
    assert ours.buf == theirs.buf
    assert read_back(flow) == flow


def test_a_nat_with_an_address_is_padded_to_its_length():
    """os-ken leaves a nat()'s padding out, and OVS refuses a flow_mod whose length is not a
    multiple of 8 ("incorrect length"): ours is whole."""
    buf = bytearray()
    openflow._action(Conntrack(1, commit=True, nat=Nat('dst', '10.0.0.5'))).serialize(buf, 0)
    length = int.from_bytes(buf[2:4], 'big')
    assert len(buf) == length and length % 8 == 0
    nested = openflow._nat(Nat('dst', '10.0.0.5'))
    inner = bytearray()
    nested.serialize(inner, 0)
    assert len(inner) == nested.len == 24


@pytest.mark.parametrize('nat', [
    parser.NXActionNAT(flags=1, range_ipv4_min='10.0.0.1', range_ipv4_max='10.0.0.9'),
    parser.NXActionNAT(flags=1, range_ipv4_min='10.0.0.1', range_proto_min=1000),
    parser.NXActionNAT(flags=5, range_ipv4_min='10.0.0.1'),  # persistent
    parser.NXActionNAT(flags=2),
])
def test_a_nat_we_never_write_reads_back_as_something_else(nat):
    """A foreign nat() never compares equal to a desired action, so the flow is rewritten."""
    ct = parser.NXActionCT(flags=1, zone_src='', zone_ofs_nbits=1, recirc_table=255, alg=0,
                           actions=[nat])
    assert openflow._parse_action(ct) is ct


def test_a_conntrack_zone_flush_is_nicira_ct_flush_zone_then_a_barrier(switch):
    """The bytes ovs-ofctl ofp-print reads as NXT_CT_FLUSH_ZONE zone_id=32769 (the zone in
    the last two bytes of struct nx_zone_id); the call returns once the barrier is
    answered, and fails with an error to the flush."""
    answer = threading.Timer(0.05, lambda: switch._reply(reply_to(switch.datapath.last_xid)))
    answer.start()
    switch.flush_conntrack_zones([0x8001])
    flush, barrier = switch.datapath.sent[0][:24], switch.datapath.sent[0][24:]
    assert flush == bytes.fromhex('0404001800000001000023200000001d0000000000008001')
    assert barrier == bytes.fromhex('0414000800000002')
    refused = threading.Timer(0.05, lambda: switch._error(types.SimpleNamespace(
        xid=switch.datapath.last_xid - 1, type=1, code=2)))
    refused.start()
    with pytest.raises(SwitchError, match='type 1 code 2'):
        switch.flush_conntrack_zones([0x8002])


# The switch primitives of SNAT: the bytes are the structs of Open vSwitch's
# lib/ofp-actions.c, and read back equal (checked against Open vSwitch 3.1 in
# tests/dataplane/test_openflow_switch.py).
SNAT_FLOWS = [
    Flow(40, 80, Match(reg5=3, eth_type=0x0800, ipv4_src=('10.0.0.0', '255.255.255.0')),
         (CheckPktLarger(1514), SetField('eth_dst', 'fa:16:3e:00:00:09'), Goto(42))),
    Flow(42, 100, Match(reg5=3), (BundleLoad((5, 7, 6)), Goto(43))),
    Flow(42, 90, Match(reg5=4), (BundleLoad((9,), dst='reg2'), CheckPktLarger(1000, 'reg1', 7),
                                 Goto(43))),
]


@pytest.mark.parametrize('flow', SNAT_FLOWS, ids=lambda f: repr(f.actions[0])[:40])
def test_bundle_load_and_check_pkt_larger_read_back_equal(flow):
    assert read_back(flow) == flow


def test_check_pkt_larger_is_nicira_subtype_49_with_its_destination_header():
    """struct nx_action_check_pkt_larger: OFPAT_VENDOR, 24 bytes, NX_VENDOR_ID, subtype 49,
    pkt_len, offset, then NXM_NX_REG0's header (class 1, field 0, 4 bytes) and zeros."""
    assert openflow._action_bytes(CheckPktLarger(1514)) == bytes.fromhex(
        'ffff0018' '00002320' '0031' '05ea' '0000' '00010004' '000000000000')
    assert openflow._action_bytes(CheckPktLarger(1514, 'reg3', 5))[12:18] == bytes.fromhex(
        '0005' '00010604')


def test_bundle_load_is_active_backup_over_ports_into_the_whole_register():
    """struct nx_action_bundle (subtype 13, NXAST_BUNDLE_LOAD): algorithm 0 (active_backup),
    fields 0 (eth_src), basis 0, member type NXM_OF_IN_PORT, n_members, ofs_nbits 0..31,
    the register's NXM header, 4 zero bytes, then the members padded to 8 bytes."""
    assert openflow._action_bytes(BundleLoad((5, 7, 6))) == bytes.fromhex(
        'ffff0028' '00002320' '000d' '0000' '0000' '0000' '00000002' '0003' '001f' '00010604'
        '00000000' '0005' '0007' '0006' '0000')


@pytest.mark.parametrize('bundle', [
    parser.NXActionBundleLoad(algorithm=1, fields=0, basis=0, slave_type=2, n_slaves=1,
                              ofs_nbits=31, dst='reg3', slaves=[5]),        # hrw
    parser.NXActionBundleLoad(algorithm=0, fields=0, basis=0, slave_type=2, n_slaves=1,
                              ofs_nbits=15, dst='reg3', slaves=[5]),        # reg3[0..15]
])
def test_a_bundle_load_we_never_write_reads_back_as_something_else(bundle):
    assert openflow._parse_action(bundle) is bundle
