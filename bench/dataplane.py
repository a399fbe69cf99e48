"""Across chassis, one run: iperf3 throughput and ping RTT for L2 and routed traffic between
two chassis (VXLAN), against the same-chassis L2 ceiling and the namespace-router baseline,
in rounds (see dataplane_local), medians, ratios with bootstrap intervals.

Run as root: .venv/bin/python bench/dataplane.py [--rounds 8] [--seconds 4]
"""
import argparse
import sys

from dataplane_local import ROUNDS, SECONDS, report, run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=ROUNDS)
    parser.add_argument('--seconds', type=int, default=SECONDS,
                        help='iperf3 duration per path and round')
    args = parser.parse_args()
    results = run(chassis=2, rounds=args.rounds, seconds=args.seconds, paths=lambda vm: {
        'L2 same chassis (ceiling)': (vm('a', 'ch1'), vm('a', 'ch1')),
        'L2 across chassis': (vm('a', 'ch1'), vm('a', 'ch2')),
        'routed across chassis': (vm('a', 'ch1'), vm('b', 'ch2')),
        'routed by namespace router': (vm('a', 'ch1', legacy=True),
                                       vm('b', 'ch1', legacy=True))})
    report(results, [('routed across chassis', 'L2 across chassis', 0.95),
                     ('routed across chassis', 'L2 same chassis (ceiling)', None),
                     ('routed across chassis', 'routed by namespace router', None)])
    return 0


if __name__ == '__main__':
    sys.exit(main())
