"""The per-port DHCP rate limit: a burst of `rate`, then `rate` per second, per port."""
from dragonflow.controller.packet_ins import RateLimiter
from tests.unit.clock import Clock


def test_a_burst_then_the_rate_per_port():
    clock = Clock()
    limiter = RateLimiter(5, clock)
    assert [limiter.allow('p1') for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow('p2'), 'ports are limited separately'
    clock.now += 0.2
    assert limiter.allow('p1') and not limiter.allow('p1')
    clock.now += 10
    assert sum(limiter.allow('p1') for _ in range(20)) == 5
