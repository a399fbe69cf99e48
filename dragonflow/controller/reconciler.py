"""The only code that changes the switch's flows.

It keeps a mirror of what is installed, keyed like the switch keys flows (table, priority,
match), and turns "what the apps want now" into the minimal change: deletes of flows nobody
wants, adds of new or changed flows, sent as one atomic bundle. Level-triggered: it compares
states, so it does not matter which event caused the recomputation. After a (re)connection the
mirror is read back from the switch, so a restarted controller converges the flows in place
without flushing the table and packets keep flowing.
"""
import dataclasses
import logging
from typing import Callable, Iterable, Optional, Protocol

from dragonflow.controller.flows import Flow

LOG = logging.getLogger(__name__)


class Switch(Protocol):
    def dump_flows(self) -> list[Flow]:
        """Every flow in the switch."""

    def apply(self, deletes: list[Flow], adds: list[Flow],
              then: Optional[Callable[[], None]] = None) -> None:
        """Delete and add (or overwrite) flows, atomically, in that order. ``then`` runs once
        the change is on its way, before the switch confirms it: what it sends the switch
        afterwards, the switch handles after the change."""


class FlowConflict(Exception):
    """Two apps want different actions for the same flow identity."""


@dataclasses.dataclass
class Diff:
    deletes: list[Flow]
    adds: list[Flow]

    def __bool__(self):
        return bool(self.deletes or self.adds)


def index(flows: Iterable[Flow]) -> dict[tuple, Flow]:
    """Flows by identity; identical duplicates collapse, conflicting ones are refused."""
    result: dict[tuple, Flow] = {}
    for flow in flows:
        seen = result.setdefault(flow.key, flow)
        if seen != flow:
            raise FlowConflict(f'{seen} and {flow} share table, priority and match')
    return result


def diff(installed: dict[tuple, Flow], desired: dict[tuple, Flow]) -> Diff:
    return Diff(deletes=[f for k, f in installed.items() if k not in desired],
                adds=[f for k, f in desired.items() if installed.get(k) != f])


class Reconciler:
    def __init__(self, switch: Switch):
        self.switch = switch
        self.installed: dict[tuple, Flow] = {}

    def resync(self) -> None:
        """Read back what the switch really holds (after a connection or reconnection)."""
        self.installed = index(self.switch.dump_flows())

    def reconcile(self, desired: Iterable[Flow],
                  then: Optional[Callable[[], None]] = None) -> Diff:
        """Install the difference; ``then`` as in Switch.apply (at once if there is none)."""
        wanted = index(desired)
        change = diff(self.installed, wanted)
        if change:
            LOG.debug('reconcile: %d deletes, %d adds', len(change.deletes), len(change.adds))
            self.switch.apply(change.deletes, change.adds, then)
        elif then:
            then()
        self.installed = wanted
        return change
