"""A deployment a benchmark builds and tears down: everything ``_start`` makes goes on
``_stack``, so close() undoes it, and a start that fails half way undoes what it made."""
import contextlib


class Stacked:
    def __init__(self):
        """Subclasses set their own attributes first, then call this."""
        self._stack = contextlib.ExitStack()
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise

    def _start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stack.close()


class DragonflowTenants:
    """For a Dragonflow deployment with ``sdk`` (df-api), ``cloud`` (lab.cloud.Cloud) and
    ``port_options``: a tenant network and subnet, and a VM on ch1 once its port is ACTIVE."""

    def _tenant(self, name: str, cidr: str):
        network = self.sdk.create_network(name=name)
        return self.sdk.create_subnet(network_id=network.id, ip_version=4, cidr=cidr)

    def _vm(self, subnet, name: str, gateway: bool = True):
        port = self.sdk.create_port(network_id=subnet.network_id, **self.port_options)
        vm = self.cloud.vm('ch1', port, name=name, gateway=gateway)
        self.cloud.wait_port_active(port.id)
        return vm
