"""Table classify: a packet from a local VM port gets its network (metadata) and source port
(reg6) and goes on to port security."""
from dragonflow.controller import pipeline as p
from dragonflow.controller.apps.units import unit
from dragonflow.controller.flows import Match, SetField

NAME = 'classifier'


def flows(topology):
    for port, ofport in topology.local_ports():
        if port.admin_state_up:  # else no flow: the table miss drops everything it sends
            yield from _classify(port, ofport, topology.network_of(port).key)


@unit
def _classify(port, ofport: int, network_key: int):
    yield p.CLASSIFY.flow(
        100, Match(in_port=ofport),
        [SetField(p.NETWORK_REG, network_key), SetField(p.SOURCE_PORT_REG, port.key),
         p.PORT_SECURITY.goto()],
        cookie=port.key)
