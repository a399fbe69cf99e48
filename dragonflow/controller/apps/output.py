"""Tables egress_dispatch and output for ports plugged on this chassis: reg7 names the port,
the output table knows its OpenFlow port number. A port that is administratively down gets no
flow, so nothing reaches it (the classifier already keeps it from sending)."""
from dragonflow.controller import pipeline as p
from dragonflow.controller.apps.units import unit
from dragonflow.controller.flows import Match, Output

NAME = 'output'


def flows(topology):
    for port, ofport in topology.local_ports():
        if port.admin_state_up:
            yield from _deliver(port, ofport)


@unit
def _deliver(port, ofport: int):
    yield p.EGRESS_DISPATCH.flow(100, Match(reg7=port.key), [p.INGRESS_CONNTRACK.goto()],
                                 cookie=port.key)
    yield p.OUTPUT.flow(100, Match(reg7=port.key), [Output(ofport)], cookie=port.key)
