"""The pinger of bench/_probe.Pinger, run inside a VM namespace (stdlib only).

Prints "ready", then for each line "<ip> <interval> <timeout>" on stdin sends ICMP echo
requests to <ip> every <interval> seconds from a raw socket, starting at once and not before,
until the first echo reply from <ip> or <timeout>; prints "<monotonic time of that reply or -1>
<requests sent>". CLOCK_MONOTONIC is the same in every namespace of the machine.
"""
import os
import select
import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b'\0'
    total = sum(struct.unpack(f'!{len(data) // 2}H', data))
    total = (total >> 16) + (total & 0xffff)
    total += total >> 16
    return ~total & 0xffff


def echo(ident: int, seq: int) -> bytes:
    payload = b'df-bench-port-up'
    header = struct.pack('!BBHHH', 8, 0, 0, ident, seq)
    return struct.pack('!BBHHH', 8, 0, checksum(header + payload), ident, seq) + payload


def drain(sock) -> None:
    """Discard what is queued. A raw ICMP socket gets every ICMP packet of its namespace: the
    replies to another ping run here earlier (iputils' ping uses its pid as its ident, ours
    are this process' pid and up) would otherwise pass for the first reply."""
    sock.setblocking(False)
    try:
        while True:
            sock.recv(2048)
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)


def ping_until_reply(sock, ip: str, ident: int, interval: float, timeout: float):
    drain(sock)
    start = time.monotonic()
    deadline, next_send, seq = start + timeout, start, 0
    while True:
        now = time.monotonic()
        if now >= deadline:
            return -1.0, seq
        if now >= next_send:
            seq += 1
            sock.sendto(echo(ident, seq & 0xffff), (ip, 0))
            next_send += interval
            continue
        ready, _, _ = select.select([sock], [], [], min(next_send, deadline) - now)
        if not ready:
            continue
        packet, (source, _) = sock.recvfrom(2048)
        at = time.monotonic()
        offset = (packet[0] & 0x0f) * 4
        kind, _, _, their_ident, _ = struct.unpack('!BBHHH', packet[offset:offset + 8])
        if source == ip and kind == 0 and their_ident == ident:
            return at, seq


def main() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xffff
    print('ready', flush=True)
    for line in sys.stdin:
        ip, interval, timeout = line.split()
        ident = (ident + 1) & 0xffff
        at, sent = ping_until_reply(sock, ip, ident, float(interval), float(timeout))
        print(f'{at:.6f} {sent}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
