"""The controller's threads, each with one job, and what happens when one dies.

A thread that meets an error it does not handle ends the whole process with a non-zero status,
so systemd (or any supervisor) restarts it, and the restart is hitless: never a process that
is up, connected to br-int and programming nothing.
"""
import logging
import threading

LOG = logging.getLogger(__name__)


class Supervisor:
    def __init__(self):
        self.stop = threading.Event()
        self.exit_code = 0

    def start(self, name: str, job) -> threading.Thread:
        """Run ``job()`` in a daemon thread of that name, until it returns or ``stop``."""
        def guarded():
            try:
                job()
            except BaseException as e:  # noqa: BLE001 - see the module docstring
                self.fail(f'thread {name} died', e)
        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        return thread

    def fail(self, why: str, error: BaseException = None) -> None:
        """Stop everything and exit non-zero."""
        LOG.critical('%s: df-controller exits to be restarted', why, exc_info=error)
        self.exit_code = 1
        self.stop.set()
