"""Distributed DHCP: the flows that bring requests to the controller, and the answers, checked
by parsing them with scapy (an implementation independent of the one that built them)."""
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from dragonflow.controller.apps import dhcp
from dragonflow.controller.flows import CONTROLLER
from dragonflow.model import HostRoute
from tests.unit.builders import BROADCAST, TopologyBuilder, arp_request, install, ip_of, ipv4

SETTINGS = dhcp.Settings(lease_time=600, metadata_ip='169.254.169.254')


def _topology(enable_dhcp=True, router=True):
    b = TopologyBuilder()
    net = b.network('a')
    subnet = b.subnet(net, '10.0.0.0/24')
    subnet.enable_dhcp = enable_dhcp
    subnet.dns_nameservers = ['192.0.2.53', '192.0.2.54']
    subnet.host_routes = [HostRoute(destination='172.16.0.0/16', nexthop='10.0.0.254')]
    vm = b.port(subnet, '10.0.0.5', ofport=1)
    if router:
        b.router('r', subnet)
    return b, vm


def _request(port, kind, requested=None, ciaddr='0.0.0.0', xid=0x1234):
    options = [('message-type', kind)]
    if requested:
        options.append(('requested_addr', requested))
    frame = (Ether(src=port.mac_address, dst=BROADCAST) /
             IP(src=ciaddr, dst='255.255.255.255') / UDP(sport=68, dport=67) /
             BOOTP(chaddr=bytes.fromhex(port.mac_address.replace(':', '')), xid=xid,
                   ciaddr=ciaddr) /
             DHCP(options=options + ['end']))
    return bytes(frame)


def _answer(b, vm, frame):
    reply = dhcp.answer(b.build(), vm, frame, SETTINGS)
    return Ether(reply) if reply else None


def _options(reply) -> dict:
    return {o[0]: o[1:] for o in reply[DHCP].options if isinstance(o, tuple)}


def test_discover_gets_an_offer_with_the_ports_address_and_the_subnets_settings():
    b, vm = _topology()
    reply = _answer(b, vm, _request(vm, 'discover'))
    opts = _options(reply)
    assert reply[BOOTP].yiaddr == ip_of(vm) and reply[BOOTP].xid == 0x1234
    assert reply[Ether].dst == vm.mac_address and reply[IP].src == '10.0.0.1'
    assert reply[UDP].sport == 67 and reply[UDP].dport == 68
    assert opts['message-type'] == (2,)  # offer
    assert opts['subnet_mask'] == ('255.255.255.0',)
    assert opts['router'] == ('10.0.0.1',)
    assert opts['name_server'] == ('192.0.2.53', '192.0.2.54')
    assert opts['interface-mtu'] == (1450,)
    assert opts['lease_time'] == (600,) and opts['renewal_time'] == (300,)
    assert opts['server_id'] == ('10.0.0.1',)
    routes = opts['classless_static_routes'][0]
    assert set(routes) == {'172.16.0.0/16:10.0.0.254', '169.254.169.254/32:10.0.0.1',
                           '0.0.0.0/0:10.0.0.1'}
    assert IP(bytes(reply[IP])).chksum == reply[IP].chksum  # checksums are right


def test_request_for_the_ports_address_is_acked_any_other_is_naked():
    b, vm = _topology()
    ack = _answer(b, vm, _request(vm, 'request', requested=ip_of(vm)))
    assert _options(ack)['message-type'] == (5,) and ack[BOOTP].yiaddr == ip_of(vm)
    renew = _answer(b, vm, _request(vm, 'request', ciaddr=ip_of(vm)))
    assert _options(renew)['message-type'] == (5,) and renew[IP].dst == ip_of(vm)
    nak = _answer(b, vm, _request(vm, 'request', requested='10.0.0.99'))
    assert _options(nak)['message-type'] == (6,) and nak[Ether].dst == BROADCAST


def test_release_and_decline_get_no_answer():
    b, vm = _topology()
    assert _answer(b, vm, _request(vm, 'release', ciaddr=ip_of(vm))) is None
    assert _answer(b, vm, _request(vm, 'decline')) is None


def test_requests_reach_the_controller_only_where_the_subnet_has_dhcp():
    for enabled, outputs in ((True, [CONTROLLER]), (False, [2])):
        b, vm = _topology(enable_dhcp=enabled)
        peer = b.port(b.subnets['subnet-a-10.0.0.0/24'], '10.0.0.6', ofport=2)
        discover = dict(ipv4(vm, BROADCAST, '255.255.255.255'), ipv4_src='0.0.0.0',
                        ip_proto=17, udp_src=68, udp_dst=67)
        assert install(b.build()).outputs(1, **discover) == outputs, enabled
        assert peer
        if not enabled:
            assert _answer(b, vm, _request(vm, 'discover')) is None


def test_without_a_router_the_server_address_is_answered_by_the_dhcp_mac():
    b, vm = _topology(router=False)
    server_ip, server_mac = dhcp.server(b.build(), b.subnets['subnet-a-10.0.0.0/24'])
    reply = _answer(b, vm, _request(vm, 'discover'))
    assert reply[Ether].src == server_mac and reply[IP].src == server_ip
    [answer] = install(b.build()).run(1, **arp_request(vm, server_ip))
    assert answer.packet['arp_sha'] == server_mac
