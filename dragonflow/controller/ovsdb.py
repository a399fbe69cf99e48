"""The local Open vSwitch database, through ovsdbapp: br-int's set-up, and the VM interfaces
plugged into it the way Nova/os-vif plugs them (external_ids:iface-id = the Neutron port id)."""
import logging
from typing import Callable

from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.schema.open_vswitch import impl_idl

LOG = logging.getLogger(__name__)
TABLES = ('Open_vSwitch', 'Bridge', 'Port', 'Controller')
# Only what we read or write of Interface: its statistics change every few seconds and would
# wake the controller for nothing.
INTERFACE_COLUMNS = ('name', 'type', 'options', 'external_ids', 'ofport')


class _NotifyingIdl(connection.OvsdbIdl):
    """An IDL that, after a batch of updates that touched an Interface, reads the plugged
    interfaces and calls back (in ovsdbapp's connection thread, the one that may read the
    IDL's rows), so the controller reads them without a round trip. The other tables are ours
    to write, and their status columns (the controller connection's, refreshed every few
    seconds) would wake the controller for nothing."""

    def __init__(self, remote, helper, on_change: Callable[[], None]):
        super().__init__(remote, helper)
        self._on_change = on_change
        self._interfaces_touched = False
        self.interfaces: tuple[dict[str, int], dict[str, int]] = ({}, {})

    def notify(self, event, row, updates=None):
        # Once per row: a plug of many interfaces in one transaction is read once, in run().
        self._interfaces_touched |= row._table.name == 'Interface'

    def cooperative_yield(self):
        """Do not yield while reading an update. ovsdbapp's IDL sleeps(0) for every row to let
        other green threads run; with native threads that hands the GIL to any busy thread for
        up to the 5 ms switch interval, in the middle of reading a VM's plug."""

    def run(self):
        changed = super().run()
        if self._interfaces_touched:
            self._interfaces_touched = False
            interfaces = _plugged(self.tables['Interface'].rows.values())
            # An interface is plugged once it has its OpenFlow port: its row appears earlier,
            # and a pass for nothing then would hold the GIL while the port number arrives.
            if interfaces != self.interfaces:
                self.interfaces = interfaces
                self._on_change()
        return changed


class LocalOvs:
    def __init__(self, remote: str, bridge: str, on_change: Callable[[], None],
                 timeout: float = 10.0):
        helper = connection.idlutils.get_schema_helper(remote, 'Open_vSwitch')
        for table in TABLES:
            helper.register_table(table)
        helper.register_columns('Interface', list(INTERFACE_COLUMNS))
        self._idl = idl = _NotifyingIdl(remote, helper, on_change)
        self.api = impl_idl.OvsdbIdl(connection.Connection(idl, timeout=timeout))
        self.bridge = bridge

    def bridge_drift(self, controller: str, tunnel_type: str, local_ip: str) -> list[str]:
        """How br-int and its tunnel port differ from what ensure_bridge and
        ensure_tunnel_port make (read from the local copy of the database)."""
        api, drift = self.api, []
        if not api.br_exists(self.bridge).execute(check_error=True):
            return [f'{self.bridge} is missing']
        [bridge] = api.db_list('Bridge', [self.bridge], columns=['fail_mode', 'protocols'],
                               if_exists=True).execute(check_error=True) or [{}]
        if bridge.get('fail_mode') not in ('secure', ['secure']):
            drift.append(f'fail mode is {bridge.get("fail_mode") or "unset"}')
        if list(bridge.get('protocols', [])) != ['OpenFlow13']:
            drift.append(f'protocols are {list(bridge.get("protocols", []))}')
        if api.get_controller(self.bridge).execute(check_error=True) != [controller]:
            drift.append(f'the controller is not {controller}')
        name = tunnel_port_name(tunnel_type)
        rows = api.db_list('Interface', [name], columns=['type', 'options'],
                           if_exists=True).execute(check_error=True)
        if not rows or name not in api.list_ports(self.bridge).execute(check_error=True):
            drift.append(f'tunnel port {name} is missing')
        elif rows[0]['type'] != tunnel_type or \
                rows[0]['options'] != _tunnel_options(local_ip):
            drift.append(f'tunnel port {name} is not {tunnel_type} {_tunnel_options(local_ip)}')
        return drift

    def ensure_bridge(self, datapath_type: str, controller: str) -> None:
        """br-int exists, is fail-mode secure, speaks OpenFlow 1.3 and connects to us."""
        with self.api.transaction(check_error=True) as txn:
            txn.add(self.api.add_br(self.bridge, may_exist=True, datapath_type=datapath_type))
            txn.add(self.api.set_fail_mode(self.bridge, 'secure'))
            txn.add(self.api.db_set('Bridge', self.bridge, ('protocols', ['OpenFlow13'])))
            txn.add(self.api.set_controller(self.bridge, [controller]))

    def ensure_tunnel_port(self, tunnel_type: str, local_ip: str) -> None:
        """One flow-based tunnel port per encapsulation: the flows choose VNI and peer."""
        name = tunnel_port_name(tunnel_type)
        options = _tunnel_options(local_ip)
        with self.api.transaction(check_error=True) as txn:
            txn.add(self.api.add_port(self.bridge, name, may_exist=True))
            txn.add(self.api.db_set('Interface', name, ('type', tunnel_type),
                                    ('options', options)))

    def interfaces(self) -> tuple[dict[str, int], dict[str, int]]:
        """(Neutron port id -> OpenFlow port of every plugged VM interface,
        tunnel type -> OpenFlow port of our tunnel ports), as of the last change seen."""
        return self._idl.interfaces

    def stop(self) -> None:
        self.api.ovsdb_connection.stop()


def _plugged(rows) -> tuple[dict[str, int], dict[str, int]]:
    vms, tunnels = {}, {}
    for row in rows:
        if not row.ofport or row.ofport[0] <= 0:
            continue  # not in the datapath (yet, or any more)
        port_id = row.external_ids.get('iface-id')
        if port_id:
            vms[port_id] = row.ofport[0]
        elif row.name == tunnel_port_name(row.type):
            tunnels[row.type] = row.ofport[0]
    return vms, tunnels


def _tunnel_options(local_ip: str) -> dict:
    return {'remote_ip': 'flow', 'key': 'flow', 'local_ip': local_ip}


def tunnel_port_name(tunnel_type: str) -> str:
    return 'tun-' + tunnel_type
