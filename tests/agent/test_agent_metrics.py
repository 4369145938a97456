"""POST /v1/metrics: one agent call reads many runtimes' database statistics; a runtime it
cannot read is reported with why, and never fails the others."""

import httpx
import psycopg
import pytest
from django.conf import settings

from agent.api import MetricsTarget
from tests.stack import free_port_range

pytestmark = pytest.mark.postgres


def server():
    database = settings.DATABASES["default"]
    return database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)


def test_one_call_reads_every_runtime_and_reports_the_one_it_cannot_reach(shared_agent):
    host, port = server()
    unused_port = free_port_range(1)
    # A transaction left open on the server: the longest transaction is at least its age.
    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres") as held:
        held.execute("SELECT pg_sleep(0.2)")
        targets = [
            MetricsTarget("alphaone", port, "unused", host=host),
            MetricsTarget("deadone", unused_port, "unused", host="127.0.0.1"),
            MetricsTarget("alphatwo", port, "unused", host=host),
        ]
        results = shared_agent.client().metrics(targets, deadline_s=10)

    assert [r.ref for r in results] == ["alphaone", "deadone", "alphatwo"]
    alive, dead = results[0], results[1]
    assert "refused" in dead.error.lower() or "connect" in dead.error.lower(), dead.error
    assert dead.database_bytes is None
    assert alive.error is None
    assert alive.database_bytes > 1_000_000
    assert alive.xact_total > 0 and alive.rows_read_total > 0
    assert alive.connections.get("idle in transaction", 0) >= 1
    assert alive.longest_transaction_s >= 0.2
    assert alive.wal_archived_total is not None and alive.wal_archive_failed_total is not None
    assert results[2].error is None


def test_a_malformed_request_is_refused_naming_the_field(shared_agent):
    reply = httpx.post(
        f"{shared_agent.base_url}/v1/metrics",
        json={"targets": [{"ref": "Bad Ref", "port": 5432, "password": ""}]},
        headers={"Authorization": f"Bearer {shared_agent.token}"},
    )
    assert reply.status_code == 422
    assert "$.targets[0].ref" in reply.json()["error"]["message"]
