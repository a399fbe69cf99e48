"""Table l2_lookup: a frame to a port's MAC gets that port's key in reg7; a broadcast or
multicast frame is copied to every VM port of its network (never back to its sender: OpenFlow
does not output a packet to its input port)."""
from dragonflow.controller import pipeline as p
from dragonflow.controller.flows import Match, SetField

NAME = 'l2'
MULTICAST = ('01:00:00:00:00:00', '01:00:00:00:00:00')


def flows(topology):
    yield p.SERVICES.flow(0, Match(), [p.L2_LOOKUP.goto()])
    for network in topology.networks.values():
        ports = topology.vm_ports_on(network.id)
        for port in ports:
            yield p.L2_LOOKUP.flow(
                100, Match(metadata=network.key, eth_dst=port.mac_address),
                [SetField(p.DESTINATION_PORT_REG, port.key), p.EGRESS_DISPATCH.goto()],
                cookie=port.key)
        if ports:
            flood = []
            for port in ports:
                flood += [SetField(p.DESTINATION_PORT_REG, port.key), p.EGRESS_DISPATCH.resubmit()]
            yield p.L2_LOOKUP.flow(50, Match(metadata=network.key, eth_dst=MULTICAST), flood,
                                   cookie=network.key)
