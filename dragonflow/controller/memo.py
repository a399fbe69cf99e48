"""Flows kept from one pass to the next.

An app's flows for one unit of the topology (a local port, a network, a router, a security
group rule) are a pure function of a few objects, and the cache never edits an object: it
replaces it when the store changes it. So while the same objects come back, the same flows
do, and a pass builds only those of the units that changed (at a plug, building every flow
again was three quarters of the apps' time).

A function marked ``@memoized`` keeps its results by the identity of its object arguments
(kept alive with the result, so an identity is never reused while it is a key) and by the
value of its plain ones (numbers, strings, tuples of either). A result not asked for during
one whole pass is forgotten: the memory follows the topology. The apps run in the
controller's loop alone, so there is no lock.
"""
import functools
import inspect

_PLAIN = frozenset({int, str, float, bool, type(None)})


class _Memo:
    def __init__(self):
        self._last: dict = {}  # the results asked for in the last pass
        self._this: dict = {}  # and in this one

    def next_pass(self) -> None:
        self._last, self._this = self._this, {}

    def clear(self) -> None:
        self._last, self._this = {}, {}

    def result(self, function, args: tuple, make):
        key = (function, _identity(args))
        entry = self._this.get(key)
        if entry is None:
            entry = self._last.get(key) or (args, make())
            self._this[key] = entry
        return entry[1]


_MEMO = _Memo()


def memoized(function):
    """``function``'s results, kept as described above; a generator's as a tuple."""
    collect = tuple if inspect.isgeneratorfunction(function) else (lambda result: result)

    @functools.wraps(function)
    def kept(*args):
        return _MEMO.result(function, args, lambda: collect(function(*args)))
    return kept


def forget() -> None:
    """Keep nothing from earlier passes (the controller starting again from scratch)."""
    _MEMO.clear()


def next_pass() -> None:
    """A new pass starts: forget what the one before the last did not ask for again."""
    _MEMO.next_pass()


def _identity(value):
    kind = type(value)
    if kind in _PLAIN:
        return value
    if issubclass(kind, tuple):
        return tuple(map(_identity, value))
    return id(value)
