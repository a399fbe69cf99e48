"""Table classify: a packet from a local VM port gets its network (metadata) and source port
(reg6) and goes on to port security. Only an untagged frame: a VM's port is an access port,
and a frame the VM tagged itself would leave a flat network's patch port with that tag, into
another network's VLAN (or double-tagged from a VLAN network), so it is dropped, as Neutron's
OVS agent and OVN drop them."""
from dragonflow.controller import pipeline as p
from dragonflow.controller.apps.units import unit
from dragonflow.controller.flows import Match, SetField

NAME = 'classifier'
UNTAGGED = 0  # OFPVID_NONE


def flows(topology):
    for port, ofport in topology.local_ports():
        if port.admin_state_up:  # else no flow: the table miss drops everything it sends
            yield from _classify(port, ofport, topology.network_of(port).key)


@unit
def _classify(port, ofport: int, network_key: int):
    yield p.CLASSIFY.flow(
        100, Match(in_port=ofport, vlan_vid=UNTAGGED),
        [SetField(p.NETWORK_REG, network_key), SetField(p.SOURCE_PORT_REG, port.key),
         p.PORT_SECURITY.goto()],
        cookie=port.key)
