"""The units an app builds its flows in: ``@memoized`` (memo.py) generators whose flows are
kept already stamped with their app's id, so a pass stamps only the few flows built outside
a unit (at 3,453 flows, stamping every flow again was a quarter of a pass after one change)."""
import functools
import sys

from dragonflow.controller import flows as of
from dragonflow.controller.memo import memoized


def unit(function):
    """One unit's flows (``function`` yields them), kept as a tuple of stamped flows. The app
    is the one whose module defines ``function`` (its NAME)."""
    app_bits = []  # known once the apps are all imported: at the first call

    @functools.wraps(function)
    def stamped(*args) -> tuple:
        if not app_bits:
            from dragonflow.controller.apps import APP_IDS
            app_bits.append(of.cookie(APP_IDS[sys.modules[function.__module__].NAME]))
        return tuple(flow.with_cookie(flow.cookie | app_bits[0]) for flow in function(*args))
    return memoized(stamped)
