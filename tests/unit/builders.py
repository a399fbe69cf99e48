"""Build small topologies for app tests without a store or an API."""
import ipaddress
import itertools

from dragonflow.controller.topology import Topology
from dragonflow.model import FixedIP, Network, Port, Router, RouterInterface, Subnet
from dragonflow.model.objects import DEVICE_OWNER_ROUTER_INTERFACE


class TopologyBuilder:
    """Networks, subnets, ports and routers with predictable keys, MACs and ids."""

    def __init__(self, chassis_id='chassis-1'):
        self.chassis_id = chassis_id
        self.networks, self.subnets, self.ports, self.routers = {}, {}, {}, {}
        self.ofports: dict[str, int] = {}
        self._keys = itertools.count(1)

    def network(self, name, project='p1'):
        net = Network(id=f'net-{name}', name=name, key=next(self._keys), project_id=project)
        self.networks[net.id] = net
        return net

    def subnet(self, network, cidr, name=None):
        gateway = str(next(ipaddress.ip_network(cidr).hosts()))
        subnet = Subnet(id=f'subnet-{name or cidr}', network_id=network.id, cidr=cidr,
                        gateway_ip=gateway, project_id=network.project_id)
        self.subnets[subnet.id] = subnet
        return subnet

    def port(self, subnet, ip, ofport=None, name=None, **attrs):
        key = next(self._keys)
        port = Port(id=f'port-{name or ip}', key=key, network_id=subnet.network_id,
                    mac_address=f'fa:16:3e:00:00:{key:02x}',
                    fixed_ips=[FixedIP(subnet_id=subnet.id, ip_address=ip)], **attrs)
        self.ports[port.id] = port
        if ofport is not None:
            self.ofports[port.id] = ofport
        return port

    def router(self, name, *subnets, routes=()):
        router = Router(id=f'router-{name}', name=name, key=next(self._keys), routes=list(routes))
        self.routers[router.id] = router
        for subnet in subnets:
            self.add_interface(router, subnet)
        return router

    def add_interface(self, router, subnet):
        port = self.port(subnet, subnet.gateway_ip, name=f'{router.name}-{subnet.id}',
                         device_owner=DEVICE_OWNER_ROUTER_INTERFACE, device_id=router.id)
        router.interfaces.append(RouterInterface(port_id=port.id, subnet_id=subnet.id))
        return port

    def remove_interface(self, router, subnet):
        interface = next(i for i in router.interfaces if i.subnet_id == subnet.id)
        router.interfaces.remove(interface)
        del self.ports[interface.port_id]

    def build(self) -> Topology:
        return Topology(self.chassis_id, dict(self.networks), dict(self.subnets),
                        dict(self.ports), dict(self.routers), {}, dict(self.ofports))
