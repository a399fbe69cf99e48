"""What the many-chassis benchmarks (scale.py, port_up.py) measure with, for Dragonflow and OVN
alike:

- FlowMonitor: an `ovs-ofctl monitor` on a br-int, so the time a flow appears in a switch is
  read from the switch itself (OpenFlow flow-monitor events, timestamped as they arrive), with
  no polling load on the machine;
- Pinger: a raw-socket ICMP echo loop in a VM's namespace that sends nothing until told to
  go, then one echo request every few milliseconds until the first reply;
- Guest: a VM namespace plugged into a chassis' br-int in steps (namespace, then the OVS port,
  then its iface-id), so the benchmarks can time each step on its own;
- Vif: sets a plugged interface's iface-id over a standing OVSDB connection, as os-vif does
  (its default, ovsdbapp's native interface), rather than by starting an ovs-vsctl process;
- small helpers: percentiles and a bootstrap confidence interval for a ratio of them, a
  process' RSS and CPU time, a bridge's flow count, progress lines.
"""
import math
import os
import random
import re
import subprocess
import sys
import threading
import time
from typing import Optional

from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.schema.open_vswitch import impl_idl

from dragonflow.lab import netns
from dragonflow.lab.vm import MTU

PINGER = os.path.join(os.path.dirname(os.path.abspath(__file__)), '_pinger.py')


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 20 samples is the largest one)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def ratio_interval(numerator: list, denominator: list, q: float = 50, paired: bool = True,
                   confidence: float = 0.95, resamples: int = 4000, seed: int = 13,
                   statistic=None):
    """percentile(numerator, q) / percentile(denominator, q) with a percentile-bootstrap
    ``confidence`` interval: (ratio, low, high), or None without samples on both sides.
    ``statistic`` (a function of a list) replaces the nearest-rank percentile when given.

    ``paired``: the two lists are taken in rounds, the i-th of each measured one right after
    the other, and a resample draws whole rounds (with replacement), so load that moved both
    systems alike in a round moves neither the ratio nor its interval; a round whose sample
    is None on either side (no answer) is left out. Unpaired: each list is resampled on its
    own (Nones dropped). Seeded: the same samples give the same interval."""
    if not numerator or not denominator:
        return None
    if paired:
        rounds = [(a, b) for a, b in zip(numerator, denominator, strict=True)
                  if a is not None and b is not None]
        numerator, denominator = [a for a, _ in rounds], [b for _, b in rounds]
    else:
        numerator = [a for a in numerator if a is not None]
        denominator = [b for b in denominator if b is not None]
    if not numerator or not denominator:
        return None
    stat = statistic or (lambda values: percentile(values, q))
    rng = random.Random(seed)
    ratios = []
    for _ in range(resamples):
        if paired:
            picks = rng.choices(range(len(numerator)), k=len(numerator))
            a, b = [numerator[i] for i in picks], [denominator[i] for i in picks]
        else:
            a = rng.choices(numerator, k=len(numerator))
            b = rng.choices(denominator, k=len(denominator))
        base = stat(b)
        ratios.append(stat(a) / base if base else math.inf)
    ratios.sort()
    tail = (1 - confidence) / 2
    low = ratios[int(tail * resamples)]
    high = ratios[min(resamples - 1, int((1 - tail) * resamples))]
    return stat(numerator) / stat(denominator), low, high


def log(message: str) -> None:
    """Progress on stderr, timestamped; the results table goes to stdout."""
    print(f'[{time.strftime("%H:%M:%S")}] {message}', file=sys.stderr, flush=True)


def flow_count(chassis) -> int:
    """The number of flows in a lab chassis' br-int."""
    out = chassis.ovs.ofctl('dump-aggregate')
    return int(out.split('flow_count=')[1].split()[0])


def rss_mb(pid: int) -> float:
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


class FlowMonitor:
    """Every flow added to or modified in a bridge from now on, with its arrival time.

    ``ovs-ofctl monitor`` speaks OpenFlow 1.3 flow monitoring to the bridge's management
    socket (a unix socket: no need to enter the chassis namespace)."""

    def __init__(self, mgmt: str, rundir: str, name: str):
        self.name = name
        self._events: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._proc = subprocess.Popen(
            ['ovs-ofctl', '-O', 'OpenFlow13', f'--unixctl={rundir}/monitor-{os.getpid()}.ctl',
             'monitor', mgmt, 'watch:'],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            if 'event=ADDED' in line or 'event=MODIFIED' in line:
                with self._cond:
                    self._events.append((time.monotonic(), line))
                    self._cond.notify_all()

    def first(self, pattern: re.Pattern, since: float, timeout: float) -> Optional[float]:
        """The arrival time of the first event after ``since`` matching ``pattern``."""
        deadline = time.monotonic() + timeout
        checked = 0
        with self._cond:
            while True:
                for at, line in self._events[checked:]:
                    if at >= since and pattern.search(line):
                        return at
                checked = len(self._events)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._proc.poll() is not None:
                    return None
                self._cond.wait(remaining)

    def forget(self) -> None:
        with self._cond:
            self._events.clear()

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()


def egress_flow(port_key: int) -> re.Pattern:
    """Dragonflow's egress_dispatch flow for a port (table 60, reg7 = its key). On the port's
    own chassis it delivers locally, written once the VM is plugged, in the same bundle as the
    rest of the port's flows. Elsewhere it sends the packet to every chassis of the port's
    network until the port is bound (its own chassis delivers as soon as its flows are in),
    then straight to the port's chassis (the flow is modified). Either way, from the first
    event on, that chassis reaches the port once the port's own chassis has its flows."""
    return re.compile(rf'table=60 .*\breg7=0x{port_key:x}\b')


class Pinger:
    """A pinger process in ``namespace``, started ahead of time and silent until ``go``."""

    def __init__(self, namespace: str):
        self._proc = subprocess.Popen(['ip', 'netns', 'exec', namespace, sys.executable, PINGER],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self._proc.stdout.readline().strip() != 'ready':
            raise RuntimeError('the pinger did not start')

    def go(self, ip: str, interval: float = 0.005, timeout: float = 5.0):
        """Ping ``ip`` every ``interval`` seconds from now on; (monotonic time of the first
        reply or None, echo requests sent until then)."""
        self._proc.stdin.write(f'{ip} {interval} {timeout}\n')
        self._proc.stdin.flush()
        at, sent = self._proc.stdout.readline().split()
        return (float(at) if float(at) > 0 else None), int(sent)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()


class Vif:
    """A standing ovsdbapp connection to one chassis' OVSDB."""

    def __init__(self, ovsdb_connection: str):
        idl = connection.OvsdbIdl.from_server(ovsdb_connection, 'Open_vSwitch')
        # ovsdbapp keeps the first connection made with an API class for every later instance
        # of that class: a class of its own per server.
        api_class = type('OvsdbIdl', (impl_idl.OvsdbIdl,), {})
        self.api = api_class(connection.Connection(idl, timeout=10))

    def bind(self, tap: str, iface_id: str) -> None:
        """Name the Neutron port an attached interface is for (merged into external_ids)."""
        self.api.db_set('Interface', tap, ('external_ids', {'iface-id': iface_id})).execute(
            check_error=True)

    def close(self) -> None:
        self.api.ovsdb_connection.stop()


class Guest:
    """A VM namespace with eth0 (a veth) whose peer goes into ``chassis_ns``' br-int.

    ``vsctl`` runs ovs-vsctl against that chassis' OVS. The steps are separate so the benchmarks
    can time them: make() builds the namespace and addresses, attach() puts the tap on br-int
    (with or without its iface-id; Vif.bind sets it later)."""

    def __init__(self, name: str, chassis_ns: str, vsctl, mac: str, ip: str, prefixlen: int,
                 gateway: str):
        self.name, self.chassis_ns, self.vsctl = name, chassis_ns, vsctl
        self.mac, self.ip, self.prefixlen, self.gateway = mac, ip, prefixlen, gateway
        self.tap = 'tap' + name.rsplit('-', 1)[-1][-11:]

    def make(self) -> 'Guest':
        netns.add(self.name)
        for scope in ('all', 'default'):
            self.exec('sysctl', '-q', '-w', f'net.ipv6.conf.{scope}.disable_ipv6=1')
        netns.veth('eth0', self.name, self.tap, self.chassis_ns)
        self.exec('ip', 'link', 'set', 'eth0', 'address', self.mac)
        self.exec('ip', 'link', 'set', 'eth0', 'mtu', MTU)
        self.exec('ethtool', '-K', 'eth0', 'tx', 'off')
        self.exec('ip', 'addr', 'add', f'{self.ip}/{self.prefixlen}', 'dev', 'eth0')
        self.exec('ip', 'route', 'replace', 'default', 'via', self.gateway)
        return self

    def attach(self, iface_id: Optional[str] = None) -> None:
        ids = [f'external_ids:attached-mac={self.mac}', 'external_ids:iface-status=active']
        if iface_id:
            ids.append(f'external_ids:iface-id={iface_id}')
        self.vsctl('--may-exist', 'add-port', 'br-int', self.tap, '--', 'set', 'Interface',
                   self.tap, *ids)

    def exec(self, *args, check=True) -> str:
        return netns.run(*args, netns=self.name, check=check)

    def ping(self, ip: str, count: int = 3) -> bool:
        return subprocess.run(['ip', 'netns', 'exec', self.name, 'ping', '-n', '-q', '-c',
                               str(count), '-i', '0.2', '-W', '1', ip],
                              capture_output=True).returncode == 0

    def destroy(self) -> None:
        try:
            self.vsctl('--if-exists', 'del-port', 'br-int', self.tap)
        finally:
            netns.delete(self.name)
