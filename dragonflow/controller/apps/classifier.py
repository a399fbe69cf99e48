"""Table classify: a packet from a local VM port gets its network (metadata) and source port
(reg6) and goes on to port security."""
from dragonflow.controller import pipeline as p
from dragonflow.controller.flows import Match, SetField

NAME = 'classifier'


def flows(topology):
    for port, ofport in topology.local_ports():
        if not port.admin_state_up:
            continue  # no flow: the table miss drops everything it sends
        network = topology.network_of(port)
        yield p.CLASSIFY.flow(
            100, Match(in_port=ofport),
            [SetField(p.NETWORK_REG, network.key), SetField(p.SOURCE_PORT_REG, port.key),
             p.PORT_SECURITY.goto()],
            cookie=port.key)
