"""The OpenFlow side of the controller: os-ken, in this process, with native threads.

br-int connects to us over TCP loopback (os-ken cannot serve a unix socket). os-ken's threads
only forward: connection changes go to a callback, replies complete the future of their
request, packet-ins go to a callback, all as they are read. Everything else (dumping flows,
sending bundles) runs in the caller's thread, and flows cross this boundary as
dragonflow.controller.flows values, converted here and only here.
"""
import concurrent.futures
import functools
import itertools
import logging
import socket
import struct
import threading
import types
from typing import Any, Callable, Mapping, NamedTuple, Optional

from os_ken import cfg as os_ken_cfg
from os_ken.base import app_manager  # before os_ken.controller: import cycle
from os_ken.controller import ofp_event, ofp_handler
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.lib.pack_utils import msg_pack_into
from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from dragonflow.controller import flows as of

LOG = logging.getLogger(__name__)
REPLY_TIMEOUT = 10.0
CT_COMMIT = 1           # NX_CT_F_COMMIT
NO_RECIRCULATION = 255  # NX_CT_RECIRC_NONE
# A zone from a register: its bits 0..15, as zone_ofs_nbits = offset << 6 | (n_bits - 1).
ZONE_BITS = 16
REGISTER_ZONE_OFS_NBITS = 0 << 6 | (ZONE_BITS - 1)
# nat() inside ct(): NX_NAT_F_SRC / NX_NAT_F_DST; no flag and no range is a plain ``nat``.
NAT_FLAGS = {'src': 1, 'dst': 2}
NAT_KINDS = {flag: kind for kind, flag in NAT_FLAGS.items()}
# Open vSwitch's NXT_CT_FLUSH_ZONE (a Nicira experimenter message os-ken has no class for):
# its body is struct nx_zone_id, six zero bytes and then the zone (ovs-ofctl ofp-print
# reads the zone from the last two).
NX_EXPERIMENTER = 0x00002320
NXT_CT_FLUSH_ZONE = 29
CT_FLUSH_ZONE_BODY = struct.Struct('!6xH')
# bundle_load as BundleLoad writes it: active_backup over OpenFlow ports (the hash fields
# and basis mean nothing to active_backup; eth_src and 0 are ovs-ofctl's usual), into the
# whole 32-bit register.
BUNDLE_LOAD_FORM = dict(algorithm=nicira_ext.NX_BD_ALG_ACTIVE_BACKUP,
                        fields=nicira_ext.NX_HASH_FIELDS_ETH_SRC, basis=0,
                        slave_type=nicira_ext.NXM_OF_IN_PORT,
                        ofs_nbits=nicira_ext.ofs_nbits(0, 31))


class PacketIn(NamedTuple):
    """A packet the switch sent us: where it came in, the table and cookie of the flow that
    sent it, and ``match``: the pipeline fields the switch gives with it (OXM names as
    os-ken's: in_port, and metadata, registers, tunnel and conntrack fields where they are
    not zero: reg5=3).
    """
    in_port: int
    table: int
    cookie: int
    data: bytes
    match: Mapping[str, Any] = types.MappingProxyType({})


class SwitchError(Exception):
    """The switch refused a request (``error``: the OpenFlow error's type and code), did not
    answer in time, or is not connected."""

    def __init__(self, message: str, error: Optional[tuple[int, int]] = None):
        super().__init__(message)
        self.error = error


class _Waiter:
    """Collects the replies to one request on one connection (several for multipart) into its
    future: their list, or the SwitchError of the first error. The caller may give up on the
    future (cancel it) at any time; a late answer then goes nowhere."""

    def __init__(self, datapath):
        self.datapath = datapath
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.replies: list = []

    def reply(self, msg, last: bool) -> None:
        self.replies.append(msg)
        if last:
            self._settle(self.future.set_result, self.replies)

    def fail(self, error: str, code: Optional[tuple[int, int]] = None) -> None:
        self._settle(self.future.set_exception, SwitchError(error, code))

    @staticmethod
    def _settle(setter, value) -> None:
        try:
            setter(value)
        except concurrent.futures.InvalidStateError:
            pass  # answered already (a second error), or given up


class _WholeWrites:
    """A connection's socket, written by the thread that sends, one message batch at a time.

    os-ken writes from a thread of its own fed by a queue: a bundle handed to it waited for
    that thread to get the interpreter, 0.2 to 3.8 ms at a VM's plug while the loop went on
    computing. The controller's threads write themselves; the lock keeps os-ken's own writes
    (echo requests) from landing inside theirs."""

    def __init__(self, sock: socket.socket):
        self._socket = sock
        self._lock = threading.Lock()

    def sendall(self, data: bytes) -> None:
        with self._lock:
            self._socket.sendall(data)

    def __getattr__(self, name: str):
        return getattr(self._socket, name)


class OpenFlowSwitch:
    """br-int as the reconciler sees it (dump_flows, apply), plus connection callbacks."""

    def __init__(self, host: str, port: int, on_connect: Callable[[], None],
                 on_packet_in: Optional[Callable[[PacketIn], None]] = None):
        self.host, self.port = host, port
        self.on_connect = on_connect
        self.on_packet_in = on_packet_in
        self.datapath = None
        self._waiters: dict[int, _Waiter] = {}
        self._lock = threading.Lock()
        self._bundle_ids = itertools.count(1)

    def start(self) -> None:
        _check_port_free(self.host, self.port)
        conf = os_ken_cfg.CONF
        conf([], project='os_ken', default_config_files=[])
        conf.set_override('ofp_listen_host', self.host)
        conf.set_override('ofp_tcp_listen_port', self.port)
        manager = app_manager.AppManager.get_instance()
        handler = manager.instantiate(ofp_handler.OFPHandler)
        app = manager.instantiate(_OsKenApp, switch=self)
        for event, handle in _inline_handlers(self):
            handler.register_handler(event, handle)
        handler.start()
        app.start()

    @property
    def connected(self) -> bool:
        return self.datapath is not None and self.datapath.is_active

    # Called from os-ken's threads: its app's (connections), its receiving one (the rest).
    def _connected(self, datapath) -> None:
        datapath.socket = _WholeWrites(datapath.socket)
        self.datapath = datapath
        LOG.info('br-int connected (datapath %016x)', datapath.id)
        self.on_connect()

    def _disconnected(self, datapath) -> None:
        if datapath is self.datapath:
            LOG.warning('br-int disconnected')
            self.datapath = None
        for waiter in list(self._waiters.values()):
            if waiter.datapath is datapath:  # not a new connection's, if it came first
                waiter.fail('switch disconnected')

    def _reply(self, msg, last: bool = True) -> None:
        waiter = self._waiters.get(msg.xid)
        if waiter is not None:
            waiter.reply(msg, last)

    def _error(self, msg) -> None:
        waiter = self._waiters.get(msg.xid)
        LOG.error('switch error type=%s code=%s xid=%s', msg.type, msg.code, msg.xid)
        if waiter is not None:
            waiter.fail(f'OpenFlow error type {msg.type} code {msg.code}', (msg.type, msg.code))

    # Called from the controller's threads.
    def dump_flows(self) -> list[of.Flow]:
        datapath = self._datapath()
        request = parser.OFPFlowStatsRequest(datapath, table_id=ofp.OFPTT_ALL,
                                             out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)
        replies = self._request([request])
        return [flow_from_stats(stats) for reply in replies for stats in reply.body]

    def apply(self, deletes: list[of.Flow], adds: list[of.Flow],
              then: Optional[Callable[[], None]] = None) -> concurrent.futures.Future:
        """One atomic bundle: deletes first, then adds (an add overwrites a changed flow).
        Returns once it is written, with the future of the switch's answer; ``then`` runs
        before that: the switch handles the messages of a connection in order, so what
        ``then`` sends comes after the bundle."""
        datapath = self._datapath()
        bundle = next(self._bundle_ids)
        flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
        messages = [parser.ONFBundleCtrlMsg(datapath, bundle, ofp.ONF_BCT_OPEN_REQUEST,
                                            flags, [])]
        messages += [parser.ONFBundleAddMsg(datapath, bundle, flags,
                                            flow_mod(f, ofp.OFPFC_DELETE_STRICT), [])
                     for f in deletes]
        messages += [parser.ONFBundleAddMsg(datapath, bundle, flags,
                                            flow_mod(f, ofp.OFPFC_ADD), [])
                     for f in adds]
        commit = parser.ONFBundleCtrlMsg(datapath, bundle, ofp.ONF_BCT_COMMIT_REQUEST, flags, [])
        future = self._submit(messages + [commit])
        if then:
            then()
        return future

    def limit_packet_ins(self, rate: int, burst: int) -> None:
        """The switch's controller meter: at most ``rate`` packet-ins a second, in bursts of
        up to ``burst``; the datapath drops the rest before they cost an upcall."""
        datapath = self._datapath()
        band = parser.OFPMeterBandDrop(rate=rate, burst_size=burst)
        self._request([
            parser.OFPMeterMod(datapath, ofp.OFPMC_DELETE, 0, ofp.OFPM_CONTROLLER, []),
            parser.OFPMeterMod(datapath, ofp.OFPMC_ADD, ofp.OFPMF_PKTPS | ofp.OFPMF_BURST,
                               ofp.OFPM_CONTROLLER, [band]),
            parser.OFPBarrierRequest(datapath)])

    def flush_conntrack_zones(self, zones: list[int]) -> None:
        """Delete every conntrack entry of each zone, in one write, and wait for the switch
        to have done it (a barrier: it answers errors first)."""
        datapath = self._datapath()
        self._request([*(parser.OFPExperimenter(datapath, NX_EXPERIMENTER, NXT_CT_FLUSH_ZONE,
                                                CT_FLUSH_ZONE_BODY.pack(zone))
                         for zone in zones),
                       parser.OFPBarrierRequest(datapath)])

    def packet_in_limit(self) -> Optional[tuple[int, int]]:
        """The controller meter's (rate, burst) as the switch holds it, or None."""
        datapath = self._datapath()
        try:
            replies = self._request([parser.OFPMeterConfigStatsRequest(
                datapath, meter_id=ofp.OFPM_CONTROLLER)])
        except SwitchError as e:
            if e.error == (ofp.OFPET_METER_MOD_FAILED, ofp.OFPMMFC_UNKNOWN_METER):
                return None
            raise
        for config in (c for reply in replies for c in reply.body):
            if config.meter_id == ofp.OFPM_CONTROLLER and config.bands:
                return config.bands[0].rate, config.bands[0].burst_size
        return None

    def send_packets(self, packets: list[tuple[list, bytes]]) -> None:
        """Packets from the controller, each through its actions (dragonflow.controller.flows
        actions; a Resubmit runs it through the pipeline from that table), in one write."""
        datapath = self._datapath()
        self._send([parser.OFPPacketOut(datapath, buffer_id=ofp.OFP_NO_BUFFER,
                                        in_port=ofp.OFPP_CONTROLLER,
                                        actions=[_action(a) for a in actions], data=data)
                    for actions, data in packets])

    def _datapath(self):
        datapath = self.datapath
        if datapath is None:
            raise SwitchError('br-int is not connected')
        return datapath

    def _send(self, messages, waiter: Optional[_Waiter] = None) -> None:
        """Number ``messages`` (their replies and errors go to ``waiter``) and write them in
        one piece on the waiter's connection, or the current one."""
        datapath = waiter.datapath if waiter else self._datapath()
        with self._lock:
            for message in messages:
                datapath.set_xid(message)
                if waiter:
                    self._waiters[message.xid] = waiter
                message.serialize()
        try:
            datapath.socket.sendall(b''.join(message.buf for message in messages))
        except OSError as e:
            # Part of it may be out: nothing more can follow on this connection.
            datapath.close()
            if waiter:
                waiter.fail(f'cannot write to br-int: {e}')
            raise SwitchError(f'cannot write to br-int: {e}') from e

    def _submit(self, messages) -> concurrent.futures.Future:
        """Send ``messages``: the future of the replies to the last one, or of an error to
        any of them."""
        waiter = _Waiter(self._datapath())
        try:
            self._send(messages, waiter)
        finally:
            xids = [message.xid for message in messages if message.xid is not None]
            waiter.future.add_done_callback(
                lambda _: [self._waiters.pop(xid, None) for xid in xids])
        return waiter.future

    def _request(self, messages) -> list:
        """Send ``messages`` and wait for the replies to the last one."""
        return wait(self._submit(messages), REPLY_TIMEOUT)


def wait(future: concurrent.futures.Future, timeout: float):
    """The result of a request to the switch; a SwitchError if it failed or is not answered
    in ``timeout`` seconds (it is then given up: a late answer goes nowhere)."""
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        if not future.cancel():  # answered meanwhile
            return future.result()
        raise SwitchError(f'no reply from br-int in {timeout} s') from None


def _check_port_free(host: str, port: int) -> None:
    """os-ken's listener fails silently in its own thread; fail loudly here instead."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise SwitchError(f'cannot listen for OpenFlow on {host}:{port}: {e}') from e


class _OsKenApp(app_manager.OSKenApp):
    """Tells the OpenFlowSwitch of connections made and lost (os-ken tells apps alone)."""
    OFP_VERSIONS = [ofp.OFP_VERSION]

    def __init__(self, *args, switch: OpenFlowSwitch, **kwargs):
        super().__init__(*args, **kwargs)
        self.switch = switch

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state(self, ev):
        """Connected once os-ken's handshake is over (its last request, the port list, is
        answered): the requests we write ourselves cannot overtake the ones it queued, and
        our replies arrive in the state their handlers are for."""
        if ev.state == MAIN_DISPATCHER:
            self.switch._connected(ev.datapath)
        else:
            self.switch._disconnected(ev.datapath)


def _inline_handlers(switch: OpenFlowSwitch):
    """Handlers os-ken's receiving thread calls as it reads each message, as it calls its own
    handshake's: replies complete their futures, packet-ins go to the controller. Given to an
    app, an event waited in its queue for the app's thread to get the interpreter, and a
    packet held for a port being plugged came out up to a millisecond later."""
    def packet_in(ev):
        if switch.on_packet_in:
            msg = ev.msg
            switch.on_packet_in(PacketIn(msg.match['in_port'], msg.table_id, msg.cookie,
                                         bytes(msg.data), dict(msg.match.items())))

    def bundle(ev):
        if ev.msg.type == ofp.ONF_BCT_COMMIT_REPLY:
            switch._reply(ev.msg)

    handlers = (
        (ofp_event.EventOFPPacketIn, MAIN_DISPATCHER, packet_in),
        (ofp_event.EventONFBundleCtrlMsg, MAIN_DISPATCHER, bundle),
        (ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER, lambda ev: switch._reply(ev.msg)),
        (ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER, lambda ev: switch._reply(
            ev.msg, last=not (ev.msg.flags & ofp.OFPMPF_REPLY_MORE))),
        (ofp_event.EventOFPMeterConfigStatsReply, MAIN_DISPATCHER, lambda ev: switch._reply(
            ev.msg, last=not (ev.msg.flags & ofp.OFPMPF_REPLY_MORE))),
        (ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER],
         lambda ev: switch._error(ev.msg)))
    return [(event, set_ev_cls(event, dispatchers)(_guarded(handle)))
            for event, dispatchers, handle in handlers]


def _guarded(handle):
    """An exception would end os-ken's receiving loop, and the connection with it."""
    def run(ev):
        try:
            handle(ev)
        except Exception:  # noqa: BLE001 - one bad message must not cut br-int off
            LOG.exception('cannot handle %s from br-int', type(ev.msg).__name__)
    return run


# Conversions between flows as values and os-ken messages.

def flow_mod(flow: of.Flow, command: int) -> '_FlowMod':
    """The flow_mod that adds (or, strictly, deletes) ``flow``, as os-ken would encode it.

    It is put together from its match fields and actions, each encoded by os-ken once and
    kept: a pass's flows share most of them with each other and with earlier passes, and
    building and serializing os-ken's objects for every flow was two thirds of the time a plug
    took to compute and send (a test checks the bytes are os-ken's)."""
    instructions = b'' if command == ofp.OFPFC_DELETE_STRICT else _instructions_bytes(
        flow.actions)
    head = struct.pack(ofp.OFP_FLOW_MOD_PACK_STR0, flow.cookie, 0, flow.table, command, 0, 0,
                       flow.priority, ofp.OFP_NO_BUFFER, ofp.OFPP_ANY, ofp.OFPG_ANY, 0)
    return _FlowMod(head + _match_bytes(flow.match) + instructions)


class _FlowMod:
    """An encoded flow_mod as os-ken's bundle message takes one: it numbers it with its own
    xid, then serializes it."""

    def __init__(self, body: bytes):
        self.body = body
        self.xid = None
        self.buf = b''

    def set_xid(self, xid: int) -> None:
        self.xid = xid

    def serialize(self) -> None:
        self.buf = struct.pack(ofp.OFP_HEADER_PACK_STR, ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD,
                               ofp.OFP_HEADER_SIZE + len(self.body), self.xid) + self.body


def _match_bytes(match: of.Match) -> bytes:
    """OXM fields in the order os-ken's keyword form puts them (by OXM type: prerequisites
    such as eth_type before what needs them), padded to 8 bytes."""
    fields = b''.join(_field_bytes(field) for field in sorted(match, key=_oxm_rank))
    length = _MATCH_HEADER.size + len(fields)
    return _MATCH_HEADER.pack(ofp.OFPMT_OXM, length) + fields + bytes(-length % 8)


_MATCH_HEADER = struct.Struct('!HH')
_OXM_RANKS: dict[str, int] = {}


def _oxm_rank(field: tuple) -> int:
    name, value = field
    rank = _OXM_RANKS.get(name)
    if rank is None:
        number = ofp.oxm_from_user(name, value)[0]
        rank = _OXM_RANKS[name] = number[0] if isinstance(number, tuple) else number
    return rank


@functools.lru_cache(maxsize=1 << 16)
def _field_bytes(field: tuple) -> bytes:
    """One match field (name, value or (value, mask) as os-ken parses them) on the wire."""
    number, value, mask = ofp.oxm_from_user(*field)
    buf = bytearray()
    ofp.oxm_serialize(number, value, mask, buf, 0)
    return bytes(buf)


@functools.lru_cache(maxsize=1 << 16)
def _action_bytes(action) -> bytes:
    buf = bytearray()
    _action(action).serialize(buf, 0)
    return bytes(buf)


def _instructions_bytes(actions: tuple) -> bytes:
    """Apply-actions with every action but a final Goto, then goto_table for that one."""
    applied = b''.join(_action_bytes(a) for a in actions if not isinstance(a, of.Goto))
    result = b''
    if applied:
        result += struct.pack(ofp.OFP_INSTRUCTION_ACTIONS_PACK_STR, ofp.OFPIT_APPLY_ACTIONS,
                              ofp.OFP_INSTRUCTION_ACTIONS_SIZE + len(applied)) + applied
    if actions and isinstance(actions[-1], of.Goto):
        result += struct.pack(ofp.OFP_INSTRUCTION_GOTO_TABLE_PACK_STR, ofp.OFPIT_GOTO_TABLE,
                              ofp.OFP_INSTRUCTION_GOTO_TABLE_SIZE, actions[-1].table)
    return result


def _action(action):
    if isinstance(action, of.Output):
        return parser.OFPActionOutput(action.port, 0)
    if isinstance(action, of.ToController):
        return parser.OFPActionOutput(ofp.OFPP_CONTROLLER, action.max_len)
    if isinstance(action, of.SetField):
        return parser.OFPActionSetField(**{action.field: action.value})
    if isinstance(action, of.Move):
        return parser.NXActionRegMove(src_field=action.src, dst_field=action.dst,
                                      n_bits=action.n_bits)
    if isinstance(action, of.DecTTL):
        return parser.OFPActionDecNwTtl()
    if isinstance(action, of.Resubmit):
        return parser.NXActionResubmitTable(table_id=action.table)
    if isinstance(action, of.Conntrack):
        from_register = isinstance(action.zone, str)
        return parser.NXActionCT(flags=CT_COMMIT if action.commit else 0,
                                 zone_src=action.zone if from_register else '',
                                 zone_ofs_nbits=REGISTER_ZONE_OFS_NBITS if from_register
                                 else action.zone,
                                 recirc_table=NO_RECIRCULATION if action.table is None
                                 else action.table, alg=0,
                                 actions=[] if action.nat is None else [_nat(action.nat)])
    if isinstance(action, of.PushVlan):
        return parser.OFPActionPushVlan(action.ethertype)
    if isinstance(action, of.PopVlan):
        return parser.OFPActionPopVlan()
    if isinstance(action, of.Conjunction):  # the wire counts clauses from 0
        return parser.NXActionConjunction(clause=action.clause - 1, n_clauses=action.n_clauses,
                                          id_=action.id)
    if isinstance(action, of.BundleLoad):
        return parser.NXActionBundleLoad(n_slaves=len(action.members), dst=action.dst,
                                         slaves=list(action.members), **BUNDLE_LOAD_FORM)
    if isinstance(action, of.CheckPktLarger):
        return NXActionCheckPktLarger(action.length, action.dst, action.bit)
    raise ValueError(f'no OpenFlow form for {action!r}')


def _nat(nat: of.Nat):
    """One address, as its range's minimum only: OVS writes back the maximum only when it
    differs from zero, and a range of one is its minimum (ovs-ofctl's nat(dst=A) alike)."""
    if nat.kind is None:
        return _PaddedNat(flags=0)
    return _PaddedNat(flags=NAT_FLAGS[nat.kind], range_ipv4_min=nat.address)


class _PaddedNat(parser.NXActionNAT):
    """os-ken's nat() padded to a multiple of 8 bytes, as its length says it is. os-ken
    leaves the padding out (its ct() then writes a nat with an address short, and OVS
    refuses the flow_mod's length)."""

    def serialize_body(self):
        data = super().serialize_body()
        header = ofp.OFP_ACTION_EXPERIMENTER_HEADER_SIZE + 2  # and the subtype
        return data + bytes(-(header + len(data)) % 8)


class NXActionCheckPktLarger(parser.NXAction):
    """Open vSwitch's check_pkt_larger(pkt_len)->dst[offset], which os-ken has no class for
    (NXAST_CHECK_PKT_LARGER, lib/ofp-actions.c, struct nx_action_check_pkt_larger): after the
    subtype, pkt_len and the bit's offset (16 bits each), the destination field's NXM/OXM
    header, zeros to 24 bytes. Registered with os-ken's Nicira actions below, so a flow dump
    parses it back into this class."""
    _subtype = 49  # NXAST_RAW_CHECK_PKT_LARGER
    _fmt_str = '!HH'
    SIZE = 24

    def __init__(self, pkt_len: int, dst: str, offset: int = 0,
                 type_=None, len_=None, experimenter=None, subtype=None):
        super().__init__()
        self.pkt_len, self.dst, self.offset = pkt_len, dst, offset
        self.len = self.SIZE

    @classmethod
    def parser(cls, buf):
        pkt_len, offset = struct.unpack_from(cls._fmt_str, buf, 0)
        number, _ = ofp.oxm_parse_header(buf, struct.calcsize(cls._fmt_str))
        return cls(pkt_len, ofp.oxm_to_user_header(number), offset)

    def serialize_body(self):
        data = bytearray()
        msg_pack_into(self._fmt_str, data, 0, self.pkt_len, self.offset)
        ofp.oxm_serialize_header(ofp.oxm_from_user_header(self.dst), data, len(data))
        header = ofp.OFP_ACTION_EXPERIMENTER_HEADER_SIZE + 2  # and the subtype
        return bytes(data) + bytes(self.SIZE - header - len(data))


# os-ken's parser looks Nicira subtypes up in a table its own classes register in; without
# this one, a dump would read our flows' check_pkt_larger as NXActionUnknown, never equal
# to the flow made, and the reconciler would rewrite them at every resync.
parser.NXAction.register(NXActionCheckPktLarger)


def flow_from_stats(stats) -> of.Flow:
    """A flow read back from the switch, in the same canonical form the apps build."""
    actions: list = []
    for instruction in stats.instructions:
        if isinstance(instruction, parser.OFPInstructionGotoTable):
            actions.append(of.Goto(instruction.table_id))
        elif isinstance(instruction, parser.OFPInstructionActions):
            actions[:0] = [_parse_action(a) for a in instruction.actions]
    return of.Flow(stats.table_id, stats.priority, of.Match.from_pairs(stats.match.items()),
                   tuple(actions), stats.cookie)


def _oxm_name(field: str) -> str:
    return field.removesuffix('_nxm')


def _parse_action(action):
    if isinstance(action, parser.OFPActionOutput):
        if action.port == ofp.OFPP_CONTROLLER:
            return of.ToController(action.max_len)
        return of.Output(action.port)
    if isinstance(action, parser.OFPActionSetField):
        return of.SetField(action.key, action.value)
    if isinstance(action, parser.NXActionRegMove):
        # OVS dumps a field that has a Nicira header by that header (os-ken: eth_src_nxm),
        # whichever header the flow was written with: the same field.
        return of.Move(_oxm_name(action.src_field), _oxm_name(action.dst_field), action.n_bits)
    if isinstance(action, parser.OFPActionDecNwTtl):
        return of.DecTTL()
    if isinstance(action, parser.NXActionResubmitTable):
        return of.Resubmit(action.table_id)
    if isinstance(action, parser.NXActionCT):
        if action.zone_src and action.zone_ofs_nbits != REGISTER_ZONE_OFS_NBITS:
            return action  # other bits of a field than we ever use
        nat = _parse_nat(action.actions)
        if nat is False:
            return action
        return of.Conntrack(action.zone_src or action.zone_ofs_nbits,
                            bool(action.flags & CT_COMMIT),
                            None if action.recirc_table == NO_RECIRCULATION
                            else action.recirc_table, nat)
    if isinstance(action, parser.OFPActionPushVlan):
        return of.PushVlan(action.ethertype)
    if isinstance(action, parser.OFPActionPopVlan):
        return of.PopVlan()
    if isinstance(action, parser.NXActionConjunction):
        return of.Conjunction(action.id, action.clause + 1, action.n_clauses)
    if isinstance(action, parser.NXActionBundleLoad):
        return _parse_bundle_load(action)
    if isinstance(action, NXActionCheckPktLarger):
        return of.CheckPktLarger(action.pkt_len, action.dst, action.offset)
    return action  # unknown to us: never equal to a desired action, so it gets replaced


def _parse_bundle_load(action):
    """A BundleLoad, or the action itself in any form we never write."""
    form = {key: getattr(action, key) for key in BUNDLE_LOAD_FORM}
    if form != BUNDLE_LOAD_FORM or not isinstance(action.dst, str):
        return action
    return of.BundleLoad(tuple(action.slaves), action.dst)


def _parse_nat(actions: list):
    """The Nat of a ct()'s nested actions (None if there are none), or False for any that
    we never write (ranges, ports, IPv6, other flags, other actions)."""
    if not actions:
        return None
    if len(actions) != 1 or not isinstance(actions[0], parser.NXActionNAT):
        return False
    nat = actions[0]
    if nat.range_ipv6_min or nat.range_ipv6_max or nat.range_proto_min is not None \
            or nat.range_proto_max is not None:
        return False
    if nat.flags == 0 and not nat.range_ipv4_min and not nat.range_ipv4_max:
        return of.Nat()
    kind = NAT_KINDS.get(nat.flags)
    if kind is None or not nat.range_ipv4_min or \
            nat.range_ipv4_max not in ('', nat.range_ipv4_min):
        return False
    return of.Nat(kind, nat.range_ipv4_min)
