"""DHCP answered by the chassis to real clients, and port security against forged packets."""
import json
import os
import textwrap

from dragonflow.lab.cloud import wait_for
from tests.dataplane.conftest import Capture
from tests.dataplane.test_routing import reachable_within

# The clients' own scripts would rewrite the host's /etc/resolv.conf: ours record what the
# client was given and apply the address and route.
UDHCPC_SCRIPT = textwrap.dedent('''\
    #!/bin/sh
    env | grep -E '^(ip|subnet|router|dns|mtu|lease|serverid)=' > "LEASE_FILE.$1"
    if [ "$1" = bound ] || [ "$1" = renew ]; then
        ip addr flush dev "$interface"
        ip addr add "$ip/$mask" dev "$interface"
        ip route replace default via "$router"
    fi
''')
DHCLIENT_SCRIPT = textwrap.dedent('''\
    #!/bin/sh
    env | grep -E '^new_' > "LEASE_FILE.$reason"
    case "$reason" in BOUND|RENEW|REBIND|REBOOT)
        ip addr flush dev "$interface"
        ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface"
        ip link set "$interface" mtu "$new_interface_mtu"
        ip route replace default via "$new_routers";;
    esac
''')


def _dhcp_network(topo):
    subnet = topo.subnet('10.21.1.0/24')
    subnet = topo.sdk.network.update_subnet(subnet, dns_nameservers=['192.0.2.53'])
    other = topo.subnet('10.21.2.0/24')
    topo.router(subnet, other)
    return subnet, topo.vm(other, 'ch2')


def _dhcp_vm(topo, subnet, chassis='ch1'):
    port = topo.port(subnet)
    vm = topo.cloud.vm(chassis, port, dhcp=True)
    topo.cloud.wait_port_active(port.id)
    vm.port = port
    return vm


def _dhclient(vm, workdir) -> dict:
    """Run isc-dhclient once in the VM; what it was given, as its script saw it."""
    files = os.path.join(workdir, vm.name)
    script = os.path.join(workdir, 'dhclient.sh')
    with open(script, 'w') as f:  # dhclient gives its script no environment of ours
        f.write(DHCLIENT_SCRIPT.replace('LEASE_FILE', files))
    os.chmod(script, 0o755)
    try:
        vm.exec('dhclient', '-1', '-v', '-sf', script,
                '-lf', files + '.leases', '-pf', files + '.pid', 'eth0', timeout=40)
    finally:
        vm.exec('dhclient', '-x', '-sf', script, '-pf', files + '.pid', check=False)
    reasons = [r for r in ('BOUND', 'REBOOT', 'RENEW') if os.path.exists(f'{files}.{r}')]
    with open(f'{files}.{reasons[0]}') as f:
        given = dict(line.split('=', 1) for line in f.read().splitlines())
    for reason in reasons:
        os.unlink(f'{files}.{reason}')
    return given


def _route_default(vm):
    routes = json.loads(vm.exec('ip', '-j', 'route', 'show', 'default'))
    return routes[0]['gateway'] if routes else None


def test_dhclient_gets_the_ports_address_gateway_dns_and_mtu_then_routes(topo, tmp_path):
    subnet, far = _dhcp_network(topo)
    vm = _dhcp_vm(topo, subnet)
    given = _dhclient(vm, str(tmp_path))
    expected = f'{vm.port.fixed_ips[0]["ip_address"]}/24'
    assert vm.addresses() == [expected]
    assert _route_default(vm) == subnet.gateway_ip
    assert given['new_domain_name_servers'] == '192.0.2.53'
    assert given['new_interface_mtu'] == '1450'
    assert '1450' in vm.exec('cat', '/sys/class/net/eth0/mtu')
    vm.ip = expected.split('/')[0]
    assert reachable_within(vm, far.ip, 3)

    # A new fixed IP through the API is taken at the next renewal (the old one is refused).
    new_ip = '10.21.1.200' if vm.ip != '10.21.1.200' else '10.21.1.201'  # both free here
    topo.sdk.network.update_port(vm.port.id, fixed_ips=[{'subnet_id': subnet.id,
                                                         'ip_address': new_ip}])
    wait_for(lambda: new_ip in topo.cloud.chassis['ch1'].dump_flows(), 5, what='new IP flows')
    _dhclient(vm, str(tmp_path))
    assert vm.addresses() == [f'{new_ip}/24']


def test_busybox_udhcpc_gets_the_same_answers(topo, tmp_path):
    subnet, far = _dhcp_network(topo)
    vm = _dhcp_vm(topo, subnet, chassis='ch3')
    script, lease = tmp_path / 'udhcpc.sh', tmp_path / 'lease'
    script.write_text(UDHCPC_SCRIPT.replace('LEASE_FILE', str(lease)))
    script.chmod(0o755)
    vm.exec('busybox', 'udhcpc', '-i', 'eth0', '-n', '-q',
            '-f', '-t', '5', '-T', '2', '-s', str(script), '-O', 'mtu', timeout=40)
    bound = dict(line.split('=', 1) for line in (tmp_path / 'lease.bound').read_text().split())
    assert bound['ip'] == vm.port.fixed_ips[0]['ip_address']
    assert bound['router'] == subnet.gateway_ip and bound['subnet'] == '255.255.255.0'
    assert bound['dns'] == '192.0.2.53' and bound['mtu'] == '1450'
    vm.ip = bound['ip']
    assert reachable_within(vm, far.ip, 3)


SEND = textwrap.dedent('''\
    import sys
    from scapy.all import ARP, ICMP, IP, Ether, sendp
    kind, src_mac, src_ip, dst_mac, dst_ip = sys.argv[1:]
    if kind == 'arp':
        frame = Ether(src=src_mac, dst='ff:ff:ff:ff:ff:ff') / ARP(
            op=1, hwsrc=src_mac, psrc=src_ip, pdst=dst_ip)
    else:
        frame = Ether(src=src_mac, dst=dst_mac) / IP(src=src_ip, dst=dst_ip) / ICMP(id=4242)
    sendp(frame, iface='eth0', count=3, inter=0.05, verbose=False)
''')


def test_port_security_stops_forged_packets_and_passes_allowed_pairs(topo, tmp_path):
    import sys
    subnet = topo.subnet('10.22.1.0/24')
    sender, receiver = topo.vm(subnet, 'ch1'), topo.vm(subnet, 'ch2')
    assert reachable_within(sender, receiver.ip, 3)
    script = tmp_path / 'send.py'
    script.write_text(SEND)

    def arrives(kind, src_mac, src_ip) -> bool:
        """Whether what the sender sends reaches the receiver. ARP asks for an address
        nobody has, so it floods instead of being answered by the chassis."""
        bpf = 'icmp' if kind == 'icmp' else f'arp and ether src {src_mac}'
        target = receiver.ip if kind == 'icmp' else '10.22.1.200'
        with Capture(receiver.name, 'eth0', bpf) as capture:
            sender.exec(sys.executable, str(script), kind, src_mac, src_ip, receiver.mac,
                        target)
        return any(src_ip in line for line in capture.lines)

    assert arrives('icmp', sender.mac, sender.ip)
    assert arrives('arp', sender.mac, sender.ip)
    assert not arrives('icmp', 'fa:16:3e:66:66:66', sender.ip)    # forged source MAC
    assert not arrives('icmp', sender.mac, '10.22.1.250')          # forged source IP
    assert not arrives('arp', sender.mac, '10.22.1.251')           # forged ARP sender
    topo.sdk.network.update_port(sender.port.id,
                                 allowed_address_pairs=[{'ip_address': '10.22.1.252'}])
    wait_for(lambda: '10.22.1.252' in topo.cloud.chassis['ch1'].dump_flows(), 5,
             what='the address pair flows')
    assert arrives('icmp', sender.mac, '10.22.1.252')
    assert arrives('arp', sender.mac, '10.22.1.252')


def test_a_frame_to_an_allowed_address_pairs_mac_crosses_to_its_port(topo, tmp_path):
    """A VRRP router's virtual MAC, given as an allowed address pair: frames to it reach the
    port's VM on another chassis (its eth0 sees them: tcpdump), none before the pair."""
    import sys
    subnet = topo.subnet('10.22.2.0/24')
    sender, receiver = topo.vm(subnet, 'ch1'), topo.vm(subnet, 'ch2')
    assert reachable_within(sender, receiver.ip, 3)
    script = tmp_path / 'send.py'
    script.write_text(SEND)
    virtual_mac, virtual_ip = 'fa:16:3e:aa:02:01', '10.22.2.100'

    def arrives() -> bool:
        with Capture(receiver.name, 'eth0', f'icmp and ether dst {virtual_mac}') as capture:
            sender.exec(sys.executable, str(script), 'icmp', sender.mac, sender.ip,
                        virtual_mac, virtual_ip)
        return any(virtual_ip in line for line in capture.lines)

    assert not arrives()
    topo.sdk.network.update_port(receiver.port.id, allowed_address_pairs=[
        {'ip_address': virtual_ip, 'mac_address': virtual_mac}])
    wait_for(lambda: virtual_mac in topo.cloud.chassis['ch1'].dump_flows(), 5,
             what='the pair MAC in ch1 l2_lookup')
    wait_for(lambda: virtual_mac in topo.cloud.chassis['ch2'].dump_flows(), 5,
             what='the pair MAC in ch2 remote_ingress')
    assert arrives()
