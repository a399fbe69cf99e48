"""SNAT for a router's traffic to outside without a floating IP (see docs/north-south.md)."""
NAME = 'snat'


def flows(topology):
    yield from ()
