"""Database statistics of many runtimes in one call, for the control plane's metrics pass.

Each runtime is read over one short connection (TCP, the credentials the control plane
sends, nothing stored here) by one statement of PostgreSQL's statistics views, under the
call's deadline (statement_timeout, and a runtime still unread at the deadline is reported
as such). At most THREADS runtimes are read at once, so a call for 256 runtimes holds a
bounded number of connections and threads; a runtime that fails is reported with its
error and never fails the others.
"""

import time
from concurrent.futures import ThreadPoolExecutor, wait

import psycopg

from agent.api import MetricsTarget, RuntimeMetrics

THREADS = 8

# The whole cluster is the runtime: sums over its databases, its client backends (not ours).
STATISTICS = """
SELECT
  (SELECT coalesce(json_object_agg(state, n), '{}'::json) FROM (
      SELECT coalesce(state, 'unknown') AS state, count(*) AS n FROM pg_stat_activity
      WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1) AS s) AS connections,
  (SELECT sum(pg_database_size(oid))::bigint FROM pg_database WHERE datallowconn) AS database_bytes,
  (SELECT sum(xact_commit + xact_rollback)::bigint FROM pg_stat_database) AS xact_total,
  (SELECT sum(tup_fetched)::bigint FROM pg_stat_database) AS rows_read_total,
  (SELECT sum(tup_inserted + tup_updated + tup_deleted)::bigint FROM pg_stat_database) AS rows_written_total,
  (SELECT sum(blks_hit)::bigint FROM pg_stat_database) AS blocks_hit_total,
  (SELECT sum(blks_read)::bigint FROM pg_stat_database) AS blocks_read_total,
  (SELECT extract(epoch FROM max(clock_timestamp() - xact_start))::float8 FROM pg_stat_activity
      WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()) AS longest_transaction_s,
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE
      (SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn))::bigint FROM pg_stat_replication)
  END AS replication_lag_bytes,
  archiver.archived_count AS wal_archived_total,
  archiver.failed_count AS wal_archive_failed_total,
  extract(epoch FROM clock_timestamp() - archiver.last_archived_time)::float8 AS last_archived_age_s
FROM pg_stat_archiver AS archiver
"""


def collect(targets: list[MetricsTarget], default_host: str, deadline_s: float) -> list[RuntimeMetrics]:
    """Every target's statistics (or error), in the order asked, within deadline_s."""
    ends = time.monotonic() + deadline_s
    executor = ThreadPoolExecutor(max_workers=min(THREADS, len(targets)), thread_name_prefix="metrics")
    futures = [executor.submit(_read, target, default_host, ends) for target in targets]
    wait(futures, timeout=max(0.0, ends - time.monotonic()))
    # A runtime still being read at the deadline is reported as such; its thread ends within
    # its own statement_timeout and connect timeout, both inside the deadline.
    executor.shutdown(wait=False, cancel_futures=True)
    results = []
    for target, future in zip(targets, futures, strict=True):
        if future.done() and not future.cancelled():
            results.append(future.result())
        else:
            results.append(RuntimeMetrics(target.ref, error=f"not read within the {deadline_s:g}s deadline"))
    return results


def _read(target: MetricsTarget, default_host: str, ends: float) -> RuntimeMetrics:
    left = ends - time.monotonic()
    if left <= 0:
        return RuntimeMetrics(target.ref, error="not read: the deadline passed first")
    try:
        with psycopg.connect(
            host=target.host or default_host,
            port=target.port,
            user=target.user,
            password=target.password,
            dbname=target.dbname,
            connect_timeout=max(2, int(left)),  # libpq's minimum is 2 seconds
            application_name="berth-agent-metrics",
            options=f"-c statement_timeout={max(1, int(left * 1000))}",
            autocommit=True,
        ) as connection:
            cursor = connection.execute(STATISTICS)
            row = cursor.fetchone()
            names = [column.name for column in cursor.description]
    except psycopg.Error as exc:
        diag = getattr(exc, "diag", None)
        message = (diag.message_primary if diag and diag.message_primary else str(exc)).strip()
        return RuntimeMetrics(target.ref, error=message.splitlines()[0] if message else type(exc).__name__)
    values = dict(zip(names, row, strict=True))
    values["connections"] = {str(state): int(n) for state, n in (values["connections"] or {}).items()}
    return RuntimeMetrics(target.ref, **values)
