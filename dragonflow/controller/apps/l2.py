"""Table l2_lookup: a frame to a port's MAC gets that port's key in reg7; a broadcast or
multicast frame is copied to every local VM port of its network (never back to its sender:
OpenFlow does not output a packet to its input port) and handed to remote_flood, where the
tunnels app sends one copy to each other chassis with ports on the network.

A port's MACs are its own and those its allowed address pairs name (Neutron lets a pair
give another MAC: a VRRP router's virtual one, say, which the port answers ARP with). Nothing
is learned from traffic, so a MAC that several ports' pairs name goes to each of them."""
from dragonflow.controller import pipeline as p
from dragonflow.controller.apps.units import unit
from dragonflow.controller.flows import Match, SetField

NAME = 'l2'
MULTICAST = ('01:00:00:00:00:00', '01:00:00:00:00:00')


def flows(topology):
    yield p.SERVICES.flow(0, Match(), [p.L2_LOOKUP.goto()])
    for network in topology.networks.values():
        ports = tuple(topology.vm_ports_on(network.id))
        yield from _network_flows(network.key, ports, local_vm_ports(topology, network.id))


@unit
def _network_flows(network_key: int, ports: tuple, local_ports: tuple):
    for mac, holders in by_mac(ports):
        yield p.L2_LOOKUP.flow(100, Match(metadata=network_key, eth_dst=mac),
                               to_ports(holders), cookie=holders[0].key)
    if ports:
        yield p.L2_LOOKUP.flow(
            50, Match(metadata=network_key, eth_dst=MULTICAST),
            local_copies(local_ports) + [p.REMOTE_FLOOD.resubmit()], cookie=network_key)


def local_vm_ports(topology, network_id) -> tuple:
    """The network's VM ports plugged on this chassis, in port key order."""
    local = topology.local_port_ids()
    return tuple(port for port in topology.vm_ports_on(network_id) if port.id in local)


def by_mac(ports: tuple) -> list[tuple[str, tuple]]:
    """(MAC, the ports frames to it are for) of these ports' own MACs and their allowed
    address pairs' MACs, in MAC order; the ports in the order given."""
    holders: dict[str, list] = {}
    for port in ports:
        macs = {port.mac_address.lower()} | {pair.mac_address.lower()
                                             for pair in port.allowed_address_pairs
                                             if pair.mac_address}
        for mac in sorted(macs):
            holders.setdefault(mac, []).append(port)
    return [(mac, tuple(ports)) for mac, ports in sorted(holders.items())]


def to_ports(holders: tuple) -> list:
    """Actions that deliver a frame to its port, or a copy to each of several."""
    if len(holders) == 1:
        return [SetField(p.DESTINATION_PORT_REG, holders[0].key), p.EGRESS_DISPATCH.goto()]
    return local_copies(holders)


def local_copies(local_ports: tuple) -> list:
    """Actions that deliver one copy to each of these ports."""
    actions = []
    for port in local_ports:
        actions += [SetField(p.DESTINATION_PORT_REG, port.key), p.EGRESS_DISPATCH.resubmit()]
    return actions
