"""Counting Berth's own events for /metrics: agent calls, finished operations, reaper actions.

Events are added up in this process (thread-safe) and written by `flush`, one upsert that
adds to the stored counters, when a web request or a django-q task ends. So counting never
adds a statement to the work it counts (a lease's transaction, a page's queries) and never
writes inside a transaction that may roll back; the stored sums are the same whichever
process answers /metrics. What a process counted since its last flush is lost if it dies
first: a scrape's worth at most.
"""

import json
import logging
import math
import threading
from collections import defaultdict

from django.apps import apps
from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)

# Buckets (seconds) of the two histograms: agent calls last milliseconds to a minute,
# operations seconds to the operation deadline.
AGENT_CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
OPERATION_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200)

_lock = threading.Lock()
_pending: dict[tuple[str, str], float] = defaultdict(float)


def _key(labels: dict) -> str:
    return json.dumps({k: str(v) for k, v in labels.items()}, sort_keys=True, separators=(",", ":"))


def count(name: str, amount: float = 1.0, **labels) -> None:
    """Add `amount` to counter `name` with `labels`."""
    with _lock:
        _pending[(name, _key(labels))] += amount


def observe(name: str, value: float, buckets: tuple[float, ...], **labels) -> None:
    """Record one observation of histogram `name`: its buckets (cumulative, as Prometheus
    reads them), sum and count."""
    with _lock:
        for bound in (*buckets, math.inf):
            if value <= bound:
                _pending[(f"{name}_bucket", _key({**labels, "le": _le(bound)}))] += 1
        _pending[(f"{name}_sum", _key(labels))] += value
        _pending[(f"{name}_count", _key(labels))] += 1


def _le(bound: float) -> str:
    return "+Inf" if bound == math.inf else f"{bound:g}"


def agent_call(host: str, endpoint: str, seconds: float, error: str | None) -> None:
    """One call to a host's agent: its latency, and its error kind when it failed."""
    observe("berth_agent_call_duration_seconds", seconds, AGENT_CALL_BUCKETS, host=host, endpoint=endpoint)
    if error is not None:
        count("berth_agent_call_errors_total", host=host, endpoint=endpoint, error=error)


def flush() -> int:
    """Write what this process counted; returns how many counters it wrote. Outside a
    transaction only (inside one it waits for the next flush). A database error keeps the
    counts for the next flush and is logged, never raised: counting never fails the work."""
    if connection.in_atomic_block:
        return 0
    with _lock:
        taken = dict(_pending)
        _pending.clear()
    if not taken:
        return 0
    # Sorted, so concurrent flushes lock their rows in one order.
    rows = sorted(taken.items())
    # Through the registry: this module is imported with the app configs (telemetry.apps).
    table = apps.get_model("telemetry", "Counter")._meta.db_table
    values = ", ".join(["(%s, %s, %s)"] * len(rows))
    params = [item for (name, labels), value in rows for item in (name, labels, value)]
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (name, labels, value) VALUES {values}"
                f" ON CONFLICT (name, labels) DO UPDATE SET value = {table}.value + excluded.value",
                params,
            )
    except DatabaseError:
        logger.exception("could not write %d counters of Berth's metrics; kept for the next flush", len(rows))
        with _lock:
            for key, value in taken.items():
                _pending[key] += value
        return 0
    return len(rows)


def flush_after(**kwargs) -> None:
    """Signal receiver: a request or a task ended."""
    flush()
