"""The OpenFlow adapter against a real Open vSwitch (one ovs-vswitchd, userspace datapath, in a
namespace of its own, as the lab starts it): flows installed through OpenFlowSwitch read back
from br-int equal to the flows made (else the reconciler would rewrite them at every resync),
check_pkt_larger measures what the SNAT flows assume it measures, and a packet-in's match
carries the registers.

OpenFlowSwitch runs in a small agent process inside the namespace (br-int reaches its
controller over the namespace's loopback); the agent takes its work and gives back what it
read as pickles.
"""
import os
import pickle
import secrets
import subprocess
import sys
import threading

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from dragonflow.controller.flows import (
    CheckPktLarger,
    Flow,
    Goto,
    Match,
    PushVlan,
    Resubmit,
    SetField,
    ToController,
)
from dragonflow.lab import netns, ovs
from tests.unit.test_openflow import SNAT_FLOWS, VLAN_AND_NAT_FLOWS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPENFLOW_PORT = 6653
# check_pkt_larger(LIMIT) in table MEASURE, then LARGER or NOT_LARGER sends the packet to
# the controller (the packet-in's table says which); TAGGED pushes a VLAN header first.
LIMIT, TAGGED, MEASURE, SPLIT, LARGER, NOT_LARGER = 200, 5, 10, 11, 12, 13
ROUTER_KEY = 7  # in reg5, which a packet-in's match carries (frag_needed.py reads it)
MEASURING_FLOWS = [
    Flow(TAGGED, 100, Match(), (PushVlan(), SetField('vlan_vid', 0x1000 | 5), Goto(MEASURE))),
    Flow(MEASURE, 100, Match(), (SetField('reg5', ROUTER_KEY), CheckPktLarger(LIMIT),
                                 Goto(SPLIT))),
    Flow(SPLIT, 100, Match(reg0=(1, 1)), (Goto(LARGER),)),
    Flow(SPLIT, 100, Match(reg0=(0, 1)), (Goto(NOT_LARGER),)),
    Flow(LARGER, 100, Match(), (ToController(),)),
    Flow(NOT_LARGER, 100, Match(), (ToController(),)),
]


@pytest.fixture(scope='module')
def br_int(tmp_path_factory):
    """A namespace with one Open vSwitch and br-int, its controller on the loopback."""
    if os.geteuid() != 0:
        pytest.fail('this test needs root (a network namespace and Open vSwitch)')
    namespace = 'dfof' + secrets.token_hex(3)
    netns.add(namespace)
    switch = ovs.Ovs(namespace, str(tmp_path_factory.mktemp('ovs')))
    try:
        switch.start()
        switch.add_bridge('br-int')
        switch.vsctl('set', 'Bridge', 'br-int', 'protocols=OpenFlow13', '--',
                     'set-controller', 'br-int', f'tcp:127.0.0.1:{OPENFLOW_PORT}')
        yield namespace
    finally:
        switch.stop()
        netns.delete(namespace)


def through_br_int(namespace: str, flows: list, packets: list = ()) -> tuple:
    """Install ``flows`` through OpenFlowSwitch, dump br-int's flows back, then send each of
    ``packets`` ((actions, frame)) and collect the packet-ins they make (one each)."""
    agent = subprocess.run(
        ['ip', 'netns', 'exec', namespace, sys.executable, '-c',
         'from tests.dataplane.test_openflow_switch import agent; agent()'],
        input=pickle.dumps(([_plain(f) for f in flows], list(packets))), capture_output=True,
        cwd=ROOT, timeout=60)
    assert agent.returncode == 0, agent.stderr.decode(errors='replace')[-3000:]
    dumped, packet_ins = pickle.loads(agent.stdout)
    return [_flow(f) for f in dumped], packet_ins


def _plain(flow: Flow) -> tuple:
    """A flow as a pickle takes it (a Match does not pickle)."""
    return flow.table, flow.priority, tuple(flow.match), flow.actions, flow.cookie


def _flow(plain: tuple) -> Flow:
    table, priority, match, actions, cookie = plain
    return Flow(table, priority, Match.from_pairs(match), actions, cookie)


def agent() -> None:
    """In the namespace: the work from stdin, (flows dumped, packet-ins) to stdout."""
    from dragonflow.controller import openflow
    flows, packets = pickle.loads(sys.stdin.buffer.read())
    flows = [_flow(f) for f in flows]
    connected, packet_ins, all_in = threading.Event(), [], threading.Event()

    def packet_in(packet):
        packet_ins.append(packet)
        if len(packet_ins) == len(packets):
            all_in.set()

    switch = openflow.OpenFlowSwitch('127.0.0.1', OPENFLOW_PORT, connected.set, packet_in)
    switch.start()
    if not connected.wait(20):
        sys.exit('br-int did not connect')
    openflow.wait(switch.apply(switch.dump_flows(), []), 10)  # what an earlier run left
    openflow.wait(switch.apply([], flows), 10)
    dumped = switch.dump_flows()
    for actions, frame in packets:
        switch.send_packets([(actions, frame)])
    if packets and not all_in.wait(10):
        sys.exit(f'{len(packet_ins)} packet-ins of {len(packets)}')
    sys.stdout.buffer.write(pickle.dumps(([_plain(f) for f in dumped], packet_ins)))
    sys.stdout.flush()
    os._exit(0)  # os-ken's threads do not end


def test_flows_read_back_from_br_int_equal_to_the_flows_made(br_int):
    made = SNAT_FLOWS + VLAN_AND_NAT_FLOWS
    dumped, _ = through_br_int(br_int, made)
    assert sorted(dumped, key=repr) == sorted(made, key=repr)


def _frame(length: int, padding: int = 0) -> bytes:
    """A UDP frame of ``length`` bytes: its IP packet fills all but ``padding`` of them (the
    rest is Ethernet padding, after the IP packet's total length)."""
    headers = Ether(src='fa:16:3e:00:00:01', dst='fa:16:3e:00:00:02') / \
        IP(src='10.0.0.5', dst='203.0.113.10') / UDP(sport=4000, dport=53)
    frame = bytes(headers / bytes(length - padding - len(headers)))
    return frame + bytes(padding)


def test_check_pkt_larger_counts_the_frame_and_its_vlan_header_not_its_padding(br_int):
    """A frame is larger when its length from the Ethernet header on, 802.1Q header
    included, exceeds pkt_len: 200 bytes is not larger than 200, 201 is; 197 bytes tagged
    on the way (201) is too. Ethernet padding after the IP packet does not count (OVS
    subtracts dp_packet_l2_pad_size): 201 bytes of which one is padding is not larger."""
    sent = {(False, LIMIT, 0): False, (False, LIMIT + 1, 0): True,
            (True, LIMIT - 4, 0): False, (True, LIMIT - 3, 0): True,
            (False, LIMIT + 1, 1): False}
    packets = [([Resubmit(TAGGED if tagged else MEASURE)], _frame(length, padding))
               for tagged, length, padding in sent]
    _, packet_ins = through_br_int(br_int, MEASURING_FLOWS, packets)
    assert [p.table == LARGER for p in packet_ins] == list(sent.values())
    assert [(p.match.get('reg0', 0), p.match['reg5']) for p in packet_ins] == [
        (int(larger), ROUTER_KEY) for larger in sent.values()]
    assert [len(p.data) for p in packet_ins] == [
        length + 4 * tagged for tagged, length, _ in sent]
