"""The units an app builds its flows in: ``@memoized`` (memo.py) generators whose flows are
kept already stamped with their app's id, so a pass stamps only the few flows built outside
a unit (stamping every flow again was a quarter of a pass after one change).

A unit that raises has no flows: its error is logged with the unit and its objects, and the
empty result is kept like any other, so the same objects neither raise nor log again, and
every other unit's flows go in. Dropping a failed unit's flows (rather than keeping older
ones) is the safe side: a port security or security group unit never allows what its
objects no longer allow.
"""
import functools
import logging
import sys
from typing import Optional

from dragonflow.controller import flows as of
from dragonflow.controller.memo import memoized

LOG = logging.getLogger(__name__)
# A test hook (df-controller reads it from DRAGONFLOW_INJECT_FAULT=<app>:<object id>): the
# units of that app that take that object raise.
_fault: Optional[tuple[str, str]] = None


def inject_fault(app: str, object_id: str) -> None:
    global _fault
    _fault = (app, object_id)


def unit(function):
    """One unit's flows (``function`` yields them), kept as a tuple of stamped flows. The app
    is the one whose module defines ``function`` (its NAME)."""
    app = []  # (NAME, cookie bits) known once the apps are all imported: at the first call

    @functools.wraps(function)
    def stamped(*args) -> tuple:
        if not app:
            from dragonflow.controller.apps import APP_IDS
            name = sys.modules[function.__module__].NAME
            app.append((name, of.cookie(APP_IDS[name])))
        name, bits = app[0]
        try:
            if _fault and _fault[0] == name and _fault[1] in _object_ids(args):
                raise RuntimeError(f'fault injected in {name} for {_fault[1]}')
            return tuple(flow.with_cookie(flow.cookie | bits) for flow in function(*args))
        except Exception:  # noqa: BLE001 - contained: see the module docstring
            LOG.exception('%s.%s failed for %s: its flows are left out', name,
                          function.__name__, _describe(args))
            return ()
    return memoized(stamped)


def _object_ids(args) -> set:
    ids = set()
    for arg in args:
        for obj in arg if isinstance(arg, tuple) else (arg,):
            if isinstance(getattr(obj, 'id', None), str):
                ids.add(obj.id)
    return ids


def _describe(args) -> str:
    """The unit's objects by table and id, its plain arguments as they are."""
    parts = []
    for arg in args:
        for obj in arg if isinstance(arg, tuple) else (arg,):
            table = getattr(obj, 'table', None)
            parts.append(f'{table} {obj.id}' if table else repr(obj)[:80])
    return ', '.join(parts) or 'no arguments'
