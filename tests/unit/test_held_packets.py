"""Packets held for a port about to be plugged here: handed back once its flows are in, in
order, with how to send them on; dropped when stale or over the limits."""
from dragonflow.controller.held_packets import HeldPackets
from tests.unit.clock import Clock


def test_held_packets_are_handed_back_in_order_when_their_port_is_plugged():
    held = HeldPackets()
    assert held.hold(7, b'first') is None and held.hold(7, b'second') is None
    held.hold(8, b'for another port')
    assert held.plugged({7: 'to 7', 9: 'to 9'}) == [('to 7', b'first'), ('to 7', b'second')]
    assert held.plugged({7: 'to 7', 9: 'to 9'}) == []  # handed back once
    assert len(held) == 1


def test_a_packet_for_a_plugged_port_is_not_held_but_sent_on_at_once():
    held = HeldPackets()
    held.plugged({7: 'to 7'})
    assert held.hold(7, b'now') == 'to 7'
    assert len(held) == 0
    held.plugged({})  # unplugged: held again
    assert held.hold(7, b'later') is None
    assert len(held) == 1


def test_stale_packets_are_dropped():
    clock = Clock()
    held = HeldPackets(seconds=1.0, clock=clock)
    held.hold(7, b'old')
    clock.now += 0.6
    held.hold(7, b'newer')
    clock.now += 0.6
    assert held.plugged({7: 'to 7'}) == [('to 7', b'newer')]
    held.hold(8, b'never plugged here')
    clock.now += 1.1
    held.hold(9, b'expires the others')
    assert len(held) == 1


def test_limits_per_port_and_on_ports_drop_what_is_over():
    held = HeldPackets(per_port=2, ports=2)
    for data in (b'1', b'2', b'3'):
        held.hold(7, data)
    held.hold(8, b'a')
    held.hold(9, b'no room for a third port')
    released = held.plugged({7: 'to 7', 8: 'to 8', 9: 'to 9'})
    assert sorted(released) == [('to 7', b'1'), ('to 7', b'2'), ('to 8', b'a')]
