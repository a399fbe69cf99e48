"""The local Open vSwitch database, through ovsdbapp: br-int's set-up (its tunnel ports, one
per encapsulation, its patch ports to the provider bridges of bridge_mappings, and its BFD
ports, one per liveness peer), the VM interfaces plugged into it the way Nova/os-vif plugs
them (external_ids:iface-id = the Neutron port id), what each BFD session says of its peer,
and whether the provider bridges' uplinks have carrier.

Liveness (see docs/north-south.md): a BFD port is a VXLAN port to one peer
(options:remote_ip=<its tunnel IP>, dst_port=[controller] bfd_udp_port, key=0), so the
flow-based tunnel ports carry the data and no data ever arrives on a BFD port. A peer is
alive while its session says forwarding. Checked on OVS 3.1 (netdev datapath): holding
bfd:cpath_down=true on our side sets our diagnostic to "Concatenated Path Down" and the
PEER's forwarding to false, while OUR forwarding stays true (it depends on the session's
state and the remote's diagnostic only): a gateway that withdraws itself still sees which
peers are alive. Two chassis that both hold it see each other down.

A restart of ovs-vswitchd (other_config:flow-restore-wait on the Open_vSwitch row, checked on
OVS 3.1 netdev): started with it true, ovs-vswitchd takes no packet from the datapath (no
upcall, so no BFD packet is received and no peer's session comes up: a peer's stayed down
for 8 s and more) and connects to no controller; cleared, it connects at once (10-30 ms)
and its sessions come up 0.7-1.5 s later. Set true on a running ovs-vswitchd it changes
nothing until its next start. While it waits, it writes our Controller row's status empty
(0.13 s after its start), where a running one always has a connection state there (as of
its last refresh, every stats-update-interval, 5 s by default): so an empty status with the
flag set says the switch waits for us (switch_start)."""
import hashlib
import logging
from types import MappingProxyType
from typing import Callable, Mapping, NamedTuple, Optional

from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.schema.open_vswitch import impl_idl

LOG = logging.getLogger(__name__)
TABLES = ('Open_vSwitch', 'Bridge', 'Port', 'Controller')
# Only what we read or write of Interface: its statistics change every few seconds and would
# wake the controller for nothing.
# bfd_status changes only when a session changes state, link_state when a NIC gains or loses
# carrier: both are what a failover waits for, and wake the flow loop.
INTERFACE_COLUMNS = ('name', 'type', 'options', 'external_ids', 'ofport', 'bfd', 'bfd_status',
                     'link_state')
# On br-int's side of a patch port we made: the physnet it leads to.
PHYSNET_ID = 'dragonflow-physical-network'
# On a BFD port we made: the chassis id of the peer it runs a session with.
LIVENESS_PEER = 'dragonflow-liveness-peer'
BFD_PORT_TYPE = 'vxlan'
# Interfaces of a provider bridge that are not uplinks: its own internal port, our patches.
NOT_UPLINKS = ('internal', 'patch')
_EMPTY: Mapping = MappingProxyType({})
RESTORE_WAIT = 'flow-restore-wait'  # Open_vSwitch other_config: the next start waits
STATS_SECONDS = 5.0  # ovs-vswitchd's default (and least) stats-update-interval


class LivenessPort(NamedTuple):
    """This chassis' BFD port to one peer, as the switch has it."""
    ofport: int
    alive: bool  # its session says the peer forwards (bfd_status:forwarding)
    held: bool   # we hold bfd:cpath_down on it: the peer sees us not forwarding


class Interfaces(NamedTuple):
    """br-int's OpenFlow ports that the flows need, by what they stand for, and the state of
    the links that liveness is made of."""
    vms: dict  # Neutron port id -> ofport of its plugged interface
    tunnels: dict  # tunnel type -> ofport of our tunnel port of that type
    patches: dict  # physnet -> ofport of br-int's side of the patch port to its bridge
    liveness: Mapping = _EMPTY  # peer chassis id -> LivenessPort
    # bridge name -> whether each of its uplinks (interfaces not NOT_UPLINKS) has carrier
    uplinks: Mapping = _EMPTY


NO_INTERFACES = Interfaces({}, {}, {})


class SwitchStart(NamedTuple):
    """What the local OVSDB says of ovs-vswitchd's start (see the module docstring)."""
    restore_wait: bool  # other_config:flow-restore-wait is true: a start waits for us
    # status:state of our Controller row: '' when ovs-vswitchd has not taken the controller
    # (it waits for flow restoration, or has not refreshed a new row yet); None: no row
    controller_state: Optional[str]
    refresh_seconds: float  # how often ovs-vswitchd refreshes that status


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
        self.interfaces: Interfaces = NO_INTERFACES

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
            interfaces = _plugged(self.tables['Interface'].rows.values(),
                                  self.tables['Bridge'].rows.values())
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

    def bridge_drift(self, controller: str, tunnel_types: list[str], local_ip: str,
                     bridge_mappings: dict[str, str]) -> list[str]:
        """How br-int, its tunnel ports and its patch ports to the provider bridges that exist
        differ from what ensure_bridge, ensure_tunnel_port and ensure_patch_port make (read
        from the local copy of the database). A missing provider bridge is not drift: the
        operator makes it (missing_bridges)."""
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
        ports = set(api.list_ports(self.bridge).execute(check_error=True))
        for tunnel_type in tunnel_types:
            drift += self._port_drift(self.bridge, ports, tunnel_port_name(tunnel_type),
                                      tunnel_type, _tunnel_options(local_ip))
        missing = set(self.missing_bridges(bridge_mappings))
        for physnet, provider in bridge_mappings.items():
            if provider in missing:
                continue
            inside, outside = patch_port_names(physnet)
            drift += self._port_drift(self.bridge, ports, inside, 'patch', {'peer': outside},
                                      {PHYSNET_ID: physnet})
            drift += self._port_drift(
                provider, set(api.list_ports(provider).execute(check_error=True)), outside,
                'patch', {'peer': inside})
        drift += [f'patch port {name} of unmapped {physnet}'
                  for name, physnet in self._patch_ports().items()
                  if physnet not in bridge_mappings]
        return drift

    def _port_drift(self, bridge: str, ports: set, name: str, kind: str, options: dict,
                    external_ids: Optional[dict] = None) -> list[str]:
        rows = self.api.db_list('Interface', [name], columns=['type', 'options', 'external_ids'],
                                if_exists=True).execute(check_error=True)
        if not rows or name not in ports:
            return [f'port {name} of {bridge} is missing']
        row = rows[0]
        if row['type'] != kind or row['options'] != options or \
                any(row['external_ids'].get(k) != v for k, v in (external_ids or {}).items()):
            return [f'port {name} of {bridge} is not {kind} {options}']
        return []

    def missing_bridges(self, bridge_mappings: dict[str, str]) -> list[str]:
        """The provider bridges of bridge_mappings that do not exist (yet)."""
        return [bridge for bridge in bridge_mappings.values()
                if not self.api.br_exists(bridge).execute(check_error=True)]

    def _patch_ports(self) -> dict[str, str]:
        """br-int's sides of the patch ports we made: name -> its physnet."""
        rows = self.api.db_find_rows('Interface', ('type', '=', 'patch')).execute(
            check_error=True)
        return {row.name: row.external_ids[PHYSNET_ID] for row in rows
                if PHYSNET_ID in row.external_ids}

    def ensure_bridge(self, datapath_type: str, controller: str) -> bool:
        """br-int exists, is fail-mode secure, speaks OpenFlow 1.3 and connects to us;
        whether its controller was (re)set. A Controller row that is right is kept: a new
        one has no status until ovs-vswitchd refreshes it, and its status is what says a
        switch waits for us (switch_start)."""
        api = self.api
        new_controller = not api.br_exists(self.bridge).execute(check_error=True) or \
            api.get_controller(self.bridge).execute(check_error=True) != [controller]
        with api.transaction(check_error=True) as txn:
            txn.add(api.add_br(self.bridge, may_exist=True, datapath_type=datapath_type))
            txn.add(api.set_fail_mode(self.bridge, 'secure'))
            txn.add(api.db_set('Bridge', self.bridge, ('protocols', ['OpenFlow13'])))
            if new_controller:
                txn.add(api.set_controller(self.bridge, [controller]))
        return new_controller

    def switch_start(self, controller: str) -> SwitchStart:
        """Whether the next start of ovs-vswitchd waits for us, and whether this one does
        (read from the local copy of the database)."""
        rows = self.api.db_list('Open_vSwitch', columns=['other_config']).execute(
            check_error=True)
        other_config = rows[0]['other_config'] if rows else {}
        controllers = self.api.db_find('Controller', ('target', '=', controller),
                                       columns=['status']).execute(check_error=True)
        try:
            refresh = max(int(other_config.get('stats-update-interval', 0)) / 1000,
                          STATS_SECONDS)
        except ValueError:
            refresh = STATS_SECONDS
        return SwitchStart(other_config.get(RESTORE_WAIT) == 'true',
                           controllers[0]['status'].get('state', '') if controllers else None,
                           refresh)

    def set_restore_wait(self) -> None:
        """The next start of ovs-vswitchd waits for us (this one goes on as it is)."""
        self.api.db_set('Open_vSwitch', '.', ('other_config', {RESTORE_WAIT: 'true'})).execute(
            check_error=True)

    def end_restore_wait(self, cpath_down: dict[str, bool]) -> None:
        """In one transaction: the BFD ports (by name) hold cpath_down as given, and
        ovs-vswitchd, waiting, starts: its sessions come up with what they hold."""
        api = self.api
        with api.transaction(check_error=True) as txn:
            for name, held in sorted(cpath_down.items()):
                txn.add(api.db_set('Interface', name,
                                   ('bfd', {'cpath_down': 'true' if held else 'false'})))
            txn.add(api.db_remove('Open_vSwitch', '.', 'other_config', RESTORE_WAIT,
                                  if_exists=True))

    def ensure_tunnel_port(self, tunnel_type: str, local_ip: str) -> None:
        """One flow-based tunnel port per encapsulation: the flows choose VNI (GRE key) and
        peer."""
        name = tunnel_port_name(tunnel_type)
        options = _tunnel_options(local_ip)
        with self.api.transaction(check_error=True) as txn:
            txn.add(self.api.add_port(self.bridge, name, may_exist=True))
            txn.add(self.api.db_set('Interface', name, ('type', tunnel_type),
                                    ('options', options)))

    def ensure_patch_port(self, physnet: str, provider_bridge: str) -> None:
        """The patch port pair between br-int and the physnet's provider bridge (which must
        exist: the operator makes it, with its NIC)."""
        inside, outside = patch_port_names(physnet)
        api = self.api
        held_by = self._bridge_holding(outside)
        if held_by and held_by != provider_bridge:
            # The physnet was mapped to another bridge: add_port with may_exist would keep
            # the port there, wherever it is, and the drift would never be restored.
            api.del_port(outside, bridge=held_by, if_exists=True).execute(check_error=True)
        with api.transaction(check_error=True) as txn:
            txn.add(api.add_port(self.bridge, inside, may_exist=True))
            txn.add(api.db_set('Interface', inside, ('type', 'patch'),
                               ('options', {'peer': outside}),
                               ('external_ids', {PHYSNET_ID: physnet})))
            txn.add(api.add_port(provider_bridge, outside, may_exist=True))
            txn.add(api.db_set('Interface', outside, ('type', 'patch'),
                               ('options', {'peer': inside})))

    def _bridge_holding(self, port_name: str) -> Optional[str]:
        """The bridge a port of that name is on, if any."""
        api = self.api
        ports = api.db_find('Port', ('name', '=', port_name),
                            columns=['_uuid']).execute(check_error=True)
        if not ports:
            return None
        uuid = ports[0]['_uuid']
        for bridge in api.db_list('Bridge', columns=['name', 'ports']).execute(check_error=True):
            if uuid in bridge['ports']:
                return bridge['name']
        return None

    def remove_stale_patch_ports(self, bridge_mappings: dict[str, str]) -> None:
        """The patch ports of physnets no longer mapped, both sides."""
        stale = [name for name, physnet in self._patch_ports().items()
                 if physnet not in bridge_mappings]
        if not stale:
            return
        with self.api.transaction(check_error=True) as txn:
            for name in stale:
                txn.add(self.api.del_port(name, if_exists=True))
                txn.add(self.api.del_port(name.removesuffix(_INSIDE) + _OUTSIDE,
                                          if_exists=True))

    def interfaces(self) -> Interfaces:
        """br-int's VM, tunnel, patch and BFD ports and the bridges' uplinks, as of the last
        change seen."""
        return self._idl.interfaces

    def liveness_ports(self) -> dict[str, dict]:
        """The BFD ports we made, on br-int or not: peer id -> {'name', 'options', 'bfd',
        'on_bridge'} (read from the local copy of the database)."""
        rows = self.api.db_find_rows('Interface', ('type', '=', BFD_PORT_TYPE)).execute(
            check_error=True)
        ports = set(self.api.list_ports(self.bridge).execute(check_error=True)) \
            if self.api.br_exists(self.bridge).execute(check_error=True) else set()
        return {row.external_ids[LIVENESS_PEER]: {
                    'name': row.name, 'options': dict(row.options), 'bfd': dict(row.bfd),
                    'on_bridge': row.name in ports}
                for row in rows if LIVENESS_PEER in row.external_ids}

    def set_liveness_ports(self, ports: dict[str, tuple[dict, dict]],
                           stale: list[str]) -> None:
        """In one transaction: for each peer, its BFD port on br-int with these
        (options, bfd) settings, made if missing; the BFD ports of the ``stale`` peers
        removed."""
        api = self.api
        with api.transaction(check_error=True) as txn:
            for peer, (options, bfd) in sorted(ports.items()):
                name = liveness_port_name(peer)
                txn.add(api.add_port(self.bridge, name, may_exist=True))
                txn.add(api.db_set('Interface', name, ('type', BFD_PORT_TYPE),
                                   ('options', options), ('bfd', bfd),
                                   ('external_ids', {LIVENESS_PEER: peer})))
            for peer in stale:
                txn.add(api.del_port(liveness_port_name(peer), if_exists=True))

    def stop(self) -> None:
        self.api.ovsdb_connection.stop()


def _plugged(rows, bridges=()) -> Interfaces:
    found = Interfaces({}, {}, {}, {}, _uplinks(bridges))
    for row in rows:
        if not row.ofport or row.ofport[0] <= 0:
            continue  # not in the datapath (yet, or any more)
        port_id = row.external_ids.get('iface-id')
        if port_id:
            found.vms[port_id] = row.ofport[0]
        elif row.type == 'patch' and PHYSNET_ID in row.external_ids:
            found.patches[row.external_ids[PHYSNET_ID]] = row.ofport[0]
        elif LIVENESS_PEER in row.external_ids:
            found.liveness[row.external_ids[LIVENESS_PEER]] = LivenessPort(
                row.ofport[0], peer_alive(row.bfd_status), row.bfd.get('cpath_down') == 'true')
        elif row.name == tunnel_port_name(row.type):
            found.tunnels[row.type] = row.ofport[0]
    return found


def peer_alive(bfd_status: Mapping[str, str]) -> bool:
    """Whether a BFD session says its peer forwards. OVS's own verdict: the session is up and
    the peer's diagnostic is no path-down one; our own diagnostic (our cpath_down) does not
    enter it (see the module docstring)."""
    return bfd_status.get('forwarding') == 'true'


def _uplinks(bridges) -> dict[str, tuple[bool, ...]]:
    """bridge name -> carrier of each of its uplinks, in name order."""
    found = {}
    for bridge in bridges:
        interfaces = sorted((i for port in bridge.ports for i in port.interfaces
                             if i.type not in NOT_UPLINKS), key=lambda i: i.name)
        found[bridge.name] = tuple(list(i.link_state) == ['up'] for i in interfaces)
    return found


def uplinks_down(uplinks: Mapping[str, tuple[bool, ...]],
                 bridge_mappings: Mapping[str, str]) -> frozenset:
    """The physnets whose provider bridge has uplinks and none with carrier. A bridge with no
    uplink at all (a lab's, or one being made) is not down: nothing says it lost anything."""
    return frozenset(physnet for physnet, bridge in bridge_mappings.items()
                     if uplinks.get(bridge) and not any(uplinks[bridge]))


def _tunnel_options(local_ip: str) -> dict:
    return {'remote_ip': 'flow', 'key': 'flow', 'local_ip': local_ip}


def tunnel_port_name(tunnel_type: str) -> str:
    return 'tun-' + tunnel_type


def liveness_port_name(peer: str) -> str:
    """The BFD port to a peer: short enough for an interface name (15 characters), stable
    across restarts, and distinct for distinct peers (a hash: chassis ids are host names,
    longer than that and alike at the start)."""
    return 'bfd-' + hashlib.sha256(peer.encode()).hexdigest()[:10]


_INSIDE, _OUTSIDE = '-int', '-ex'


def patch_port_names(physnet: str) -> tuple[str, str]:
    """(br-int's side, the provider bridge's side) of the physnet's patch port pair."""
    return f'patch-{physnet}{_INSIDE}', f'patch-{physnet}{_OUTSIDE}'
