"""Table l2_lookup: a frame to a port's MAC gets that port's key in reg7; a broadcast or
multicast frame is copied to every local VM port of its network (never back to its sender:
OpenFlow does not output a packet to its input port) and handed to remote_flood, where the
tunnels app sends one copy to each other chassis with ports on the network."""
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
            yield p.L2_LOOKUP.flow(
                50, Match(metadata=network.key, eth_dst=MULTICAST),
                local_copies(topology, network.id) + [p.REMOTE_FLOOD.resubmit()],
                cookie=network.key)


def local_copies(topology, network_id) -> list:
    """Actions that deliver one copy to each VM port of the network plugged on this chassis."""
    local = {port.id for port, _ in topology.local_ports()}
    actions = []
    for port in topology.vm_ports_on(network_id):
        if port.id in local:
            actions += [SetField(p.DESTINATION_PORT_REG, port.key), p.EGRESS_DISPATCH.resubmit()]
    return actions
