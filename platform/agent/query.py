"""SQL on a runtime's own database, for the control plane's Management API (`database/query`).

Runtimes listen on their host's loopback (or where the probe host says), so the agent runs
the statement: it connects like a postgres probe (TCP, the credentials the control plane
sends, nothing stored here), under a deadline the server enforces (statement_timeout) and
caps on rows and bytes, in one transaction (read-only when asked). Postgres's own error
message comes back as a `query_failed` error; no SQL or data is ever logged.
"""

import datetime
import json

import psycopg

from agent.api import QueryReply, QueryRequest
from agent.errors import ApiError


class QueryFailed(ApiError):
    """The database refused the statement; the message is Postgres's."""

    status = 400
    code = "query_failed"


def run_query(spec: QueryRequest, default_host: str, deadline_s: float) -> QueryReply:
    """The rows of the last statement that returned any, as a list of objects."""
    timeout_ms = max(1, int(deadline_s * 1000))
    try:
        with psycopg.connect(
            host=spec.host or default_host,
            port=spec.port,
            user=spec.user,
            password=spec.password,
            dbname=spec.dbname,
            connect_timeout=max(2, int(deadline_s)),  # libpq's minimum is 2 seconds
            application_name="berth-agent-query",
            options=f"-c statement_timeout={timeout_ms} -c idle_in_transaction_session_timeout={timeout_ms}",
        ) as connection:
            connection.read_only = spec.read_only
            with connection.cursor() as cursor:
                cursor.execute(spec.sql.encode())
                rows = _last_rows(cursor, spec)
    except psycopg.Error as exc:
        # Postgres's message (the primary line and any detail), never the statement itself.
        diag = getattr(exc, "diag", None)
        message = (diag.message_primary if diag and diag.message_primary else str(exc)).strip()
        raise QueryFailed(message or type(exc).__name__) from None
    return QueryReply(rows)


def _last_rows(cursor, spec: QueryRequest) -> list[dict]:
    rows: list[dict] = []
    while True:
        if cursor.description is not None:
            rows = _capped(cursor, spec)
        if not cursor.nextset():
            return rows


def _capped(cursor, spec: QueryRequest) -> list[dict]:
    names = [column.name for column in cursor.description]
    rows, size = [], 2
    for values in cursor:
        if len(rows) == spec.max_rows:
            raise QueryFailed(f"the result has more than {spec.max_rows} rows; add a LIMIT")
        row = dict(zip(names, (_plain(value) for value in values), strict=True))
        size += len(json.dumps(row)) + 1
        if size > spec.max_bytes:
            raise QueryFailed(f"the result is larger than {spec.max_bytes} bytes; select less")
        rows.append(row)
    return rows


def _plain(value):
    """A JSON value for what psycopg returned: numbers, text and json as they are, arrays item by
    item, bytea as Postgres prints it, dates and times in ISO 8601, anything else as its text."""
    if value is None or isinstance(value, bool | int | float | str | dict):
        return value
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)
