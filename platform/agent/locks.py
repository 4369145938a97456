"""One command at a time per runtime; a second caller is told `busy` at once, never queued.

Waiting would let calls pile up behind a wedged command, which is the hang the control
plane's deadlines exist to prevent.

A command may carry the control plane's operation id. Cancelling that operation cancels
the deadline of its command if one holds the runtime (which kills the command's process
group, and nothing else), and refuses any later command of that operation: a worker that
had not yet noticed the cancel cannot start work after it.
"""

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from agent.commands import Deadline
from agent.errors import Busy, Cancelled

# Cancelled operation ids remembered; older ones are forgotten first (their workers are long gone).
REMEMBERED_CANCELS = 1024


@dataclass(frozen=True)
class Holder:
    operation: str | None
    deadline: Deadline


class RuntimeLocks:
    def __init__(self):
        self._changed = threading.Condition()
        self._held: dict[str, Holder] = {}
        self._cancelled: OrderedDict[str, None] = OrderedDict()

    @contextmanager
    def hold(self, ref: str, deadline: Deadline, operation: str | None = None) -> Iterator[None]:
        with self._changed:
            if operation is not None and operation in self._cancelled:
                raise Cancelled(f"operation {operation} was cancelled; runtime {ref} is left as it is")
            if ref in self._held:
                raise Busy(f"another command is running on runtime {ref}")
            self._held[ref] = Holder(operation, deadline)
        try:
            yield
        finally:
            with self._changed:
                del self._held[ref]
                self._changed.notify_all()

    def cancel(self, ref: str, operation: str, wait_s: float) -> dict:
        """Cancel `operation`'s command on `ref`, if one runs, and wait up to wait_s for it to end.

        Returns whether a command was cancelled and whether one of that operation still runs.
        """
        with self._changed:
            self._cancelled[operation] = None
            self._cancelled.move_to_end(operation)
            while len(self._cancelled) > REMEMBERED_CANCELS:
                self._cancelled.popitem(last=False)
            holder = self._held.get(ref)
            found = holder is not None and holder.operation == operation
            if found:
                holder.deadline.cancel()
            until = time.monotonic() + wait_s
            while self._runs(ref, operation) and (left := until - time.monotonic()) > 0:
                self._changed.wait(left)
            return {"cancelled": found, "running": self._runs(ref, operation)}

    def _runs(self, ref: str, operation: str) -> bool:
        holder = self._held.get(ref)
        return holder is not None and holder.operation == operation
