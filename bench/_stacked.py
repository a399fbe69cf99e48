"""A deployment a benchmark builds and tears down: everything ``_start`` makes goes on
``_stack``, so close() undoes it, and a start that fails half way undoes what it made."""
import contextlib


class Stacked:
    def __init__(self):
        """Subclasses set their own attributes first, then call this."""
        self._stack = contextlib.ExitStack()
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise

    def _start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stack.close()
