"""The base of Dragonflow's workers in neutron-periodic-workers (a mechanism driver's
get_workers() run there, never in the API processes): each is one thread of that process
(worker_process_count 0), started after Neutron forks, so connections to the NB store are
made in the thread, never inherited."""
import threading

from neutron_lib import worker


class ThreadWorker(worker.BaseWorker):
    """Runs ``_run`` in a daemon thread until ``stop``; ``_stop`` is the event it waits on."""
    thread_name = 'df-worker'

    def __init__(self, desc: str):
        super().__init__(worker_process_count=0, desc=desc)
        self._stop = threading.Event()
        self._thread = None

    def start(self, name='neutron-server', desc=None):
        super().start(name, desc)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def stop(self):
        self._stop.set()

    def wait(self):
        if self._thread is not None:
            self._thread.join(timeout=30)

    def reset(self):
        pass
