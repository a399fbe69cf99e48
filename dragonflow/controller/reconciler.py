"""The only code that changes the switch's flows.

It keeps a mirror of what is installed, keyed like the switch keys flows (table, priority,
match), and turns "what the apps want now" into the minimal change: deletes of flows nobody
wants, adds of new or changed flows, sent as one atomic bundle. Level-triggered: it compares
states, so it does not matter which event caused the recomputation. After a (re)connection the
mirror is read back from the switch, so a restarted controller converges the flows in place
without flushing the table and packets keep flowing.
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


class FlowConflict(Exception):
    """Two apps want different actions for the same flow identity."""


@dataclasses.dataclass
class Diff:
    deletes: list[Flow]
    adds: list[Flow]
    # Once sent: done when the switch has it (or refused it).
    confirmation: Optional[concurrent.futures.Future] = dataclasses.field(default=None,
                                                                           compare=False)

    def __bool__(self):
        return bool(self.deletes or self.adds)


def index(flows: Iterable[Flow]) -> dict[tuple, Flow]:
    """Flows by identity; identical duplicates collapse, conflicting ones are refused."""
    result: dict[tuple, Flow] = {}
    for flow in flows:
        seen = result.setdefault(flow.key, flow)
        if seen is not flow and seen != flow:
            raise FlowConflict(f'{seen} and {flow} share table, priority and match')
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
    def __init__(self, switch: Switch):
        self.switch = switch
        self.installed: dict[tuple, Flow] = {}

    def resync(self) -> None:
        """Read back what the switch really holds (after a connection or reconnection)."""
        self.installed = index(self.switch.dump_flows())

    def reconcile(self, desired: Iterable[Flow],
                  then: Optional[Callable[[], None]] = None) -> Diff:
        """Send the difference (see Switch.apply; ``then`` runs at once if there is none). The
        mirror takes it as installed: if the switch refuses it, resync."""
        wanted = index(desired)
        change = diff(self.installed, wanted)
        if change:
            LOG.debug('reconcile: %d deletes, %d adds', len(change.deletes), len(change.adds))
            change.confirmation = self.switch.apply(change.deletes, change.adds, then)
        elif then:
            then()
        self.installed = wanted
        return change
