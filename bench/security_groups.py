"""Security groups at scale, one run, one table: 100 ports and 1,000 rules naming remote
groups, through df-api, on a lab cloud of 2 chassis. It reports
  - flows per chassis, in total and by app (the cookie's top byte), and what the same groups
    would cost with one flow per (port, rule, member address) as before conjunctive matches
    (computed from the same ports and rules: ports x rules x port-range masks x members);
  - the time to install the rules: from the first and from the last rule create call to the
    last change of each br-int's flow count (polled every 0.1 s), read once every port is
    ACTIVE, every controller has applied the store's revision and no count has changed for
    2 s;
  - the time for one rule change to take effect on real packets, p50 / p99: a rule created
    ("udp port P from group client") until the first new UDP exchange on P from a client VM
    to a server VM on the other chassis is answered, and the rule deleted until new exchanges
    are no longer let in.

Topology: one project, one /24; groups tier0..tier9 hold 100 ingress rules each (tcp or udp,
single ports and small ranges, each from another tier as its remote group); 98 ports are in
the default group and one tier each, plugged as OVS internal ports (no VM namespace), half on
each chassis. Two VMs (namespaces) are the probes: the client (group client) on ch1, the server
(group server, which has only the rules the bench adds) on ch2, answering UDP on 64 ports. A
probe is one datagram from a new source port (a connection conntrack has not seen) every 5 ms;
a change's time, from the API call, is the send time of the first probe that shows the new
state.

Run as root: .venv/bin/python bench/security_groups.py [--ports 100] [--rules 1000]
[--changes 10]. The same file runs inside the VMs as the UDP echo server ("serve") and the
probe ("probe").
"""
import argparse
import ipaddress
import itertools
import os
import re
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from _probe import flow_count, log, percentile

from dragonflow import store as nb
from dragonflow.controller import apps
from dragonflow.controller.apps.security_groups import port_masks
from dragonflow.lab.cloud import Cloud

TIERS = 10
ECHO_PORTS = range(7000, 7064)
PROBE_INTERVAL = 0.005
PROBE_TIMEOUT = 10.0
ANSWER_WAIT = 0.3      # a probe not answered by then counts as dropped
CLOSED_AFTER = 1.0     # nothing answered for this long: the port is closed
STABLE_FOR = 2.0       # a flow count unchanged this long is final
POLL_INTERVAL = 0.1
INSTALL_TIMEOUT = 120.0


def main() -> int:
    if sys.argv[1:2] == ['serve']:
        return serve()
    if sys.argv[1:2] == ['probe']:
        return probe()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--ports', type=int, default=100)
    parser.add_argument('--rules', type=int, default=1000)
    parser.add_argument('--changes', type=int, default=10)
    args = parser.parse_args()
    rows: list = []
    with Cloud(tempfile.mkdtemp(prefix='df-bench-sg-')) as cloud:
        run(cloud, args, rows)
    width = max(len(name) for name, _ in rows)
    print()
    print('\n'.join(f'{name.ljust(width)}  {value}' for name, value in rows))
    return 0


def run(cloud: Cloud, args, rows: list) -> None:
    start = time.monotonic()
    cloud.start(chassis=2)
    chassis = list(cloud.chassis.values())
    sdk = cloud.connect(project='sg-bench')
    store = nb.connect(cloud.store_url)
    network = sdk.network.create_network(name='sg-bench')
    subnet = sdk.network.create_subnet(network_id=network.id, ip_version=4,
                                       cidr='10.60.0.0/24')
    default = next(iter(sdk.network.security_groups(name='default', project_id='sg-bench')))
    tiers = [sdk.network.create_security_group(name=f'tier{t}') for t in range(TIERS)]
    client, server = (sdk.network.create_security_group(name=n) for n in ('client', 'server'))
    plug_ports(sdk, network, chassis, [[default.id, tiers[i % TIERS].id]
                                       for i in range(args.ports - 2)])
    client_vm, server_vm = probe_vms(cloud, sdk, subnet, client, server)
    log(f'{args.ports} ports plugged, {time.monotonic() - start:.0f} s')

    counts = FlowCounts(chassis)
    try:
        first_call = time.monotonic()
        create_rules(sdk, tiers, args.rules)
        last_call = time.monotonic()
        log(f'{args.rules} rules created in {last_call - first_call:.1f} s')
        final = counts.settled(store, store.revision())
    finally:
        counts.close()
    names = ' / '.join(c.name for c in chassis)
    rows.append((f'{args.rules} rules created through df-api ({TIERS} bulk calls)',
                 f'{last_call - first_call:.1f} s'))
    for label, since in (('first', first_call), ('last', last_call)):
        rows.append((f'  flow count final on {names}, from the {label} call',
                     ' / '.join(f'{final[c.name] - since:.1f}' for c in chassis) + ' s'))
    flow_rows(chassis, sdk, list(sdk.network.ports(network_id=network.id)), rows)
    change_rows(sdk, client_vm, server_vm, server, client, args.changes, rows)
    rows.append(('whole run', f'{time.monotonic() - start:.0f} s'))


def plug_ports(sdk, network, chassis, groups_of_ports: list) -> None:
    """Ports, created in one bulk call and plugged as OVS internal ports, alternately on
    each chassis (one ovs-vsctl call per chassis)."""
    ports = list(sdk.network.create_ports([
        {'network_id': network.id, 'name': f'sg-bench-{i}', 'security_groups': groups}
        for i, groups in enumerate(groups_of_ports)]))
    for c, host in enumerate(chassis):
        vsctl = []
        for i, port in list(enumerate(ports))[c::len(chassis)]:
            name = f'sgb{i:04d}'
            vsctl += ['--', 'add-port', 'br-int', name, '--', 'set', 'Interface', name,
                      'type=internal', f'external_ids:iface-id={port.id}',
                      f'external_ids:attached-mac={port.mac_address}']
        host.ovs.vsctl(*vsctl)


def probe_vms(cloud, sdk, subnet, client, server):
    """The client VM on the first chassis, the server VM on the last."""
    vms = []
    for group, host in ((client, 'ch1'), (server, f'ch{len(cloud.chassis)}')):
        port = sdk.network.create_port(network_id=subnet.network_id, name=group.name,
                                       fixed_ips=[{'subnet_id': subnet.id}],
                                       security_groups=[group.id])
        vm = cloud.vm(host, port, name=group.name)
        vm.port = port
        vms.append(vm)
    return vms


def create_rules(sdk, tiers, n_rules: int) -> None:
    """n_rules ingress rules, spread over the tiers, each from another tier; one bulk call per
    tier."""
    per_tier = n_rules // len(tiers)
    for t, tier in enumerate(tiers):
        sdk.network.create_security_group_rules([
            {'security_group_id': tier.id, 'direction': 'ingress', 'ethertype': 'IPv4',
             'protocol': 'tcp' if j % 2 == 0 else 'udp',
             # mostly single ports, every fifth a range of 10 (several masks)
             'port_range_min': 1000 + 20 * j, 'port_range_max': 1000 + 20 * j + (
                 9 if j % 5 == 0 else 0),
             'remote_group_id': tiers[(t + 1 + j % (len(tiers) - 1)) % len(tiers)].id}
            for j in range(per_tier)])


class FlowCounts:
    """Each chassis' flow count, polled in a thread, and when it last changed."""

    def __init__(self, chassis):
        self.chassis = chassis
        self.counts = {c.name: flow_count(c) for c in chassis}
        self.changed = {c.name: time.monotonic() for c in chassis}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(POLL_INTERVAL):
            for c in self.chassis:
                count = flow_count(c)
                if count != self.counts[c.name]:
                    self.counts[c.name], self.changed[c.name] = count, time.monotonic()

    def settled(self, store, revision: int) -> dict:
        """When each count last changed, once every port is ACTIVE, every controller has
        applied ``revision`` and no count has changed for STABLE_FOR seconds."""
        deadline = time.monotonic() + INSTALL_TIMEOUT
        while time.monotonic() < deadline:
            beats = store.heartbeats()
            caught_up = all(beats.get(c.name, {}).get('revision_seen', 0) >= revision
                            for c in self.chassis)
            active = all(r.value['status'] == 'ACTIVE' for r in store.list('ports'))
            if caught_up and active and \
                    time.monotonic() - max(self.changed.values()) >= STABLE_FOR:
                return dict(self.changed)
            time.sleep(0.2)
        raise TimeoutError(f'flows not settled after {INSTALL_TIMEOUT:.0f} s: {self.counts}')

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def flow_rows(chassis, sdk, ports, rows: list) -> None:
    """Flows per chassis by app, and the security group flows one flow per (port, rule,
    member) would have made for the same ports."""
    rules = list(sdk.network.security_group_rules(project_id='sg-bench'))
    members = group_members(ports)
    for c in chassis:
        by_app: dict = {}
        dump = c.ovs.ofctl('dump-flows')
        for cookie in re.findall(r'cookie=(0x[0-9a-f]+)', dump):
            name = apps.app_name(int(cookie, 16))
            by_app[name] = by_app.get(name, 0) + 1
        total = sum(by_app.values())
        rows.append((f'flows on {c.name}: total', str(total)))
        rows.append(('  by app', ', '.join(f'{n} {k}' for n, k in sorted(
            by_app.items(), key=lambda item: -item[1]))))
        rule_flows = len(re.findall(r'table=(?:15|75), .*priority=(?:100|90),', dump))
        local = [p for p in ports if p.binding_host_id == c.name]
        before = sum(expanded(rule, members) for p in local for rule in rules
                     if rule.security_group_id in p.security_group_ids)
        rows.append(('  rule flows (tables 15, 75) now / one per (port, rule, member)',
                     f'{rule_flows} / {before}'))
        rows.append(('  total with one flow per (port, rule, member)',
                     str(total - rule_flows + before)))


def group_members(ports) -> dict:
    """The IPv4 addresses of each group's ports (no address pairs here)."""
    members: dict = {}
    for port in ports:
        for group in port.security_group_ids:
            members.setdefault(group, set()).update(
                f['ip_address'] for f in port.fixed_ips
                if ipaddress.ip_address(f['ip_address']).version == 4)
    return members


def expanded(rule, members: dict) -> int:
    """The flows a rule made for one port before conjunctive matches: one per port-range mask
    and per member address of its remote group."""
    if rule.ether_type != 'IPv4':
        return 0
    masks = 1
    if rule.protocol in ('tcp', 'udp', 'sctp') and rule.port_range_min is not None:
        masks = len(port_masks(rule.port_range_min, rule.port_range_max))
    peers = len(members.get(rule.remote_group_id, ())) if rule.remote_group_id else 1
    return masks * peers


def change_rows(sdk, client_vm, server_vm, server, client, changes: int, rows: list) -> None:
    """Rules created and deleted one at a time, each timed with real packets."""
    this = os.path.abspath(__file__)
    echo = server_vm.popen(sys.executable, this, 'serve')
    prober = client_vm.popen(sys.executable, this, 'probe', stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    client_vm.ping(server_vm.ip, timeout=0.5)  # not let in, but the client learns the MAC
    opened, closed = [], []
    try:
        for port in ECHO_PORTS[:changes]:
            t0 = time.monotonic()
            rule = sdk.network.create_security_group_rule(
                security_group_id=server.id, direction='ingress', ethertype='IPv4',
                protocol='udp', port_range_min=port, port_range_max=port,
                remote_group_id=client.id)
            opened.append(ask(prober, 'open', server_vm.ip, port) - t0)
            t0 = time.monotonic()
            sdk.network.delete_security_group_rule(rule)
            closed.append(ask(prober, 'closed', server_vm.ip, port) - t0)
            log(f'udp/{port}: opened after {opened[-1] * 1000:.0f} ms, closed after '
                f'{closed[-1] * 1000:.0f} ms')
    finally:
        prober.stdin.close()
        prober.wait(10)
        echo.kill()
        echo.wait(10)
    rows.append((f'rule created -> new connections let in, ms, p50 / p99 ({changes})',
                 p50_p99(opened)))
    rows.append((f'rule deleted -> new connections kept out, ms, p50 / p99 ({changes})',
                 p50_p99(closed)))


def ask(prober, state: str, ip: str, port: int) -> float:
    prober.stdin.write(f'{state} {ip} {port}\n')
    prober.stdin.flush()
    at = float(prober.stdout.readline())
    if at < 0:
        raise TimeoutError(f'udp/{port} not {state} after {PROBE_TIMEOUT:.0f} s')
    return at


def p50_p99(values: list[float]) -> str:
    return (f'{percentile(values, 50) * 1000:.0f} / {percentile(values, 99) * 1000:.0f}'
            f' (min {min(values) * 1000:.0f}, mean {statistics.mean(values) * 1000:.0f})')


# Inside the VMs.

def serve() -> int:
    """Answer every UDP datagram on ECHO_PORTS with the same datagram."""
    sockets = []
    for port in ECHO_PORTS:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(('0.0.0.0', port))
        sockets.append(sock)
    while True:
        for sock in select.select(sockets, [], [])[0]:
            data, peer = sock.recvfrom(2048)
            sock.sendto(data, peer)


def probe() -> int:
    """For each line "open|closed <ip> <port>", the monotonic send time of the first probe
    that shows that state (-1 after PROBE_TIMEOUT)."""
    for line in sys.stdin:
        state, ip, port = line.split()
        until = _first_answered if state == 'open' else _first_kept_out
        print(until((ip, int(port))), flush=True)
    return 0


def _first_answered(target) -> float:
    """Probes until one is answered: its send time."""
    sent: dict = {}  # socket -> send time
    deadline = time.monotonic() + PROBE_TIMEOUT
    try:
        while time.monotonic() < deadline:
            sent[_send(target)] = time.monotonic()
            for sock in select.select(list(sent), [], [], PROBE_INTERVAL)[0]:
                return sent[sock]
            for sock in [s for s, at in sent.items() if time.monotonic() - at > ANSWER_WAIT]:
                sock.close()
                del sent[sock]
        return -1.0
    finally:
        for sock in sent:
            sock.close()


def _first_kept_out(target) -> float:
    """Probes until none sent in the last CLOSED_AFTER is answered: the send time of the first
    probe after the last answered one."""
    pending: dict = {}  # socket -> send time
    last_answered, dropped = 0.0, []
    deadline = time.monotonic() + PROBE_TIMEOUT
    try:
        while time.monotonic() < deadline:
            pending[_send(target)] = time.monotonic()
            for sock in select.select(list(pending), [], [], PROBE_INTERVAL)[0]:
                last_answered = max(last_answered, pending.pop(sock))
                sock.close()
            now = time.monotonic()
            for sock in [s for s, at in pending.items() if now - at > ANSWER_WAIT]:
                dropped.append(pending.pop(sock))
                sock.close()
            since = [at for at in dropped if at > last_answered]
            if since and now - since[0] > CLOSED_AFTER:
                return since[0]
        return -1.0
    finally:
        for sock in pending:
            sock.close()


def _send(target) -> socket.socket:
    """One datagram from the next source port: a connection conntrack has never seen (a
    random ephemeral port could be one an earlier probe committed, and be let in)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(('0.0.0.0', next(_SOURCE_PORTS)))
    sock.sendto(b'df-bench-sg', target)
    return sock


_SOURCE_PORTS = itertools.cycle(range(20000, 60000))


if __name__ == '__main__':
    sys.exit(main())
