"""One command at a time per runtime; a second caller is told `busy` at once, never queued.

Waiting would let calls pile up behind a wedged command, which is the hang the control
plane's deadlines exist to prevent.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from agent.errors import Busy


class RuntimeLocks:
    def __init__(self):
        self._guard = threading.Lock()
        self._held: set[str] = set()

    @contextmanager
    def hold(self, ref: str) -> Iterator[None]:
        with self._guard:
            if ref in self._held:
                raise Busy(f"another command is running on runtime {ref}")
            self._held.add(ref)
        try:
            yield
        finally:
            with self._guard:
                self._held.discard(ref)
