"""The local Open vSwitch database, through ovsdbapp: br-int's set-up, and the VM interfaces
plugged into it the way Nova/os-vif plugs them (external_ids:iface-id = the Neutron port id)."""
import logging
from typing import Callable

from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.schema.open_vswitch import impl_idl

LOG = logging.getLogger(__name__)
TABLES = ('Open_vSwitch', 'Bridge', 'Port', 'Interface', 'Controller')


class _NotifyingIdl(connection.OvsdbIdl):
    """An IDL that calls back on every row change (from ovsdbapp's connection thread)."""

    def __init__(self, remote, helper, on_change: Callable[[], None]):
        super().__init__(remote, helper)
        self._on_change = on_change

    def notify(self, event, row, updates=None):
        self._on_change()


class LocalOvs:
    def __init__(self, remote: str, bridge: str, on_change: Callable[[], None],
                 timeout: float = 10.0):
        helper = connection.idlutils.get_schema_helper(remote, 'Open_vSwitch')
        for table in TABLES:
            helper.register_table(table)
        idl = _NotifyingIdl(remote, helper, on_change)
        self.api = impl_idl.OvsdbIdl(connection.Connection(idl, timeout=timeout))
        self.bridge = bridge

    def ensure_bridge(self, datapath_type: str, controller: str) -> None:
        """br-int exists, is fail-mode secure, speaks OpenFlow 1.3 and connects to us."""
        with self.api.transaction(check_error=True) as txn:
            txn.add(self.api.add_br(self.bridge, may_exist=True, datapath_type=datapath_type))
            txn.add(self.api.set_fail_mode(self.bridge, 'secure'))
            txn.add(self.api.db_set('Bridge', self.bridge, ('protocols', ['OpenFlow13'])))
            txn.add(self.api.set_controller(self.bridge, [controller]))

    def vm_interfaces(self) -> dict[str, int]:
        """Neutron port id -> OpenFlow port number, for every plugged VM interface."""
        rows = self.api.db_find('Interface', columns=['external_ids', 'ofport']).execute(
            check_error=True)
        result = {}
        for row in rows:
            port_id = row['external_ids'].get('iface-id')
            ofport = row['ofport'][0] if isinstance(row['ofport'], list) and row['ofport'] \
                else row['ofport']
            if port_id and isinstance(ofport, int) and ofport > 0:
                result[port_id] = ofport
        return result

    def stop(self) -> None:
        self.api.ovsdb_connection.stop()
