"""The only code that changes the switch's flows.

It keeps a mirror of what is installed, keyed like the switch keys flows (table, priority,
match), and turns "what the apps want now" into the minimal change: deletes of flows nobody
wants, adds of new or changed flows, sent as one atomic bundle. Level-triggered: it compares
states, so it does not matter which event caused the recomputation. After a (re)connection the
mirror is read back from the switch, so a restarted controller converges the flows in place
without flushing the table and packets keep flowing.

Two flows with one identity and different actions (two apps, or two objects of one app, that
want the same packet) never stop it: the one that ranks first in the given precedence is
installed, whatever order the apps made them in, and the conflict is logged once, naming both
owners, until it goes away.
"""
import concurrent.futures
import dataclasses
import logging
from typing import Callable, Iterable, Optional, Protocol

from dragonflow.controller.flows import Flow

LOG = logging.getLogger(__name__)


class Switch(Protocol):
    def dump_flows(self) -> list[Flow]:
        """Every flow in the switch."""

    def apply(self, deletes: list[Flow], adds: list[Flow],
              then: Optional[Callable[[], None]] = None) -> concurrent.futures.Future:
        """Delete and add (or overwrite) flows, atomically, in that order; returns once the
        change is on its way, with the future of the switch's answer. ``then`` runs before
        that: what it sends the switch afterwards, the switch handles after the change."""


def by_cookie(flow: Flow) -> tuple:
    """The default precedence: a total order, so the choice never depends on arrival."""
    return (flow.cookie, repr(flow.actions))


def cookie_of(flow: Flow) -> str:
    return f'cookie {flow.cookie:#x}'


@dataclasses.dataclass(frozen=True)
class Conflict:
    kept: Flow
    dropped: Flow


@dataclasses.dataclass
class Diff:
    deletes: list[Flow]
    adds: list[Flow]
    # Once sent: done when the switch has it (or refused it).
    confirmation: Optional[concurrent.futures.Future] = dataclasses.field(default=None,
                                                                           compare=False)

    def __bool__(self):
        return bool(self.deletes or self.adds)


def index(flows: Iterable[Flow], rank: Callable[[Flow], tuple] = by_cookie,
          conflicts: Optional[list] = None) -> dict[tuple, Flow]:
    """Flows by identity; identical duplicates collapse; of conflicting ones the first by
    ``rank`` is kept, and each dropped one is appended to ``conflicts``."""
    result: dict[tuple, Flow] = {}
    for flow in flows:
        seen = result.setdefault(flow.key, flow)
        if seen is not flow and seen != flow:
            kept, dropped = (seen, flow) if rank(seen) <= rank(flow) else (flow, seen)
            result[flow.key] = kept
            if conflicts is not None:
                conflicts.append(Conflict(kept, dropped))
    return result


def diff(installed: dict[tuple, Flow], desired: dict[tuple, Flow]) -> Diff:
    """The same object is the same flow: the apps hand back the flows they kept as they were."""
    adds = []
    for key, flow in desired.items():
        old = installed.get(key)
        if old is not flow and old != flow:
            adds.append(flow)
    return Diff(deletes=[f for k, f in installed.items() if k not in desired], adds=adds)


class Reconciler:
    def __init__(self, switch: Switch, rank: Callable[[Flow], tuple] = by_cookie,
                 owner: Callable[[Flow], str] = cookie_of):
        """``rank`` orders conflicting flows (the first is kept); ``owner`` names who made a
        flow, for the log."""
        self.switch = switch
        self.installed: dict[tuple, Flow] = {}
        self.rank, self.owner = rank, owner
        self.conflicts: set[tuple] = set()  # those of the last pass, each logged once

    def resync(self) -> None:
        """Read back what the switch really holds (after a connection or reconnection)."""
        self.installed = index(self.switch.dump_flows())

    def reconcile(self, desired: Iterable[Flow],
                  then: Optional[Callable[[], None]] = None) -> Diff:
        """Send the difference (see Switch.apply; ``then`` runs at once if there is none). The
        mirror takes it as installed: if the switch refuses it, resync."""
        conflicts: list[Conflict] = []
        wanted = index(desired, self.rank, conflicts)
        self._log(conflicts)
        change = diff(self.installed, wanted)
        if change:
            LOG.debug('reconcile: %d deletes, %d adds', len(change.deletes), len(change.adds))
            change.confirmation = self.switch.apply(change.deletes, change.adds, then)
        elif then:
            then()
        self.installed = wanted
        return change

    def _log(self, conflicts: list[Conflict]) -> None:
        """Each conflict once, when it appears (the same one comes back every pass)."""
        now = {(c.kept.key, c.kept.cookie, c.dropped.cookie, c.dropped.actions): c
               for c in conflicts}
        for identity in now.keys() - self.conflicts:
            c = now[identity]
            LOG.error('%s and %s want table %d, priority %d, %s with different actions: %s '
                      'is kept (%s), %s is not (%s)', self.owner(c.kept), self.owner(c.dropped),
                      c.kept.table, c.kept.priority, c.kept.match, self.owner(c.kept),
                      c.kept.actions, self.owner(c.dropped), c.dropped.actions)
        self.conflicts = set(now)
