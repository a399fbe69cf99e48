"""Changes sent to br-int and not confirmed yet.

The loop does not wait for the switch's answer to a bundle: the next change may already be
waiting, and the switch handles them in order. Each change is kept here, oldest first, with
the time to give up on it and the topology whose flows the switch holds once it has it; the
ports of the newest confirmed topology are then reported.
"""
import collections
import concurrent.futures
import logging
import time
from typing import Callable, Optional

from dragonflow.controller import openflow
from dragonflow.controller.openflow import REPLY_TIMEOUT, SwitchError

LOG = logging.getLogger(__name__)


class Unconfirmed:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 timeout: float = REPLY_TIMEOUT):
        self.clock, self.timeout = clock, timeout
        self._changes: collections.deque = collections.deque()

    def __bool__(self) -> bool:
        return bool(self._changes)

    def sent(self, confirmation: concurrent.futures.Future, topology) -> None:
        self._changes.append((confirmation, self.clock() + self.timeout, topology))

    def same_flows(self, topology) -> bool:
        """A pass with nothing new to send: its topology is confirmed with the last change
        sent, if one is still unconfirmed (True), else it is already (False)."""
        if not self._changes:
            return False
        confirmation, deadline, _ = self._changes[-1]
        self._changes[-1] = (confirmation, deadline, topology)
        return True

    def settle(self) -> tuple[Optional[object], bool]:
        """(The newest topology whose changes are all confirmed now, or None; whether the
        switch refused a change or left one unanswered past its time: then nothing it was
        sent since can be trusted, and every unconfirmed change is given up.)"""
        confirmed = None
        while self._changes:
            confirmation, deadline, topology = self._changes[0]
            if not confirmation.done() and self.clock() < deadline:
                break
            self._changes.popleft()
            try:
                openflow.wait(confirmation, 0)
            except SwitchError as e:
                LOG.warning('br-int did not take a change (%s): reading its flows back', e)
                self.forget()
                return confirmed, True
            confirmed = topology
        return confirmed, False

    def forget(self) -> None:
        """Give up on every change not confirmed yet: reading the switch back tells what it
        took."""
        for confirmation, _, _ in self._changes:
            confirmation.cancel()
        self._changes.clear()

    def seconds_left(self) -> Optional[float]:
        """Until the oldest change is given up, if there is one."""
        if not self._changes:
            return None
        return max(self._changes[0][1] - self.clock(), 0.0)
