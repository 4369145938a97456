"""The agent's POST /v1/runtimes/{ref}/query, run by a real agent against the test PostgreSQL."""

import httpx
import pytest
from django.conf import settings

from agent.api import QueryRequest
from agent.client import AgentError

pytestmark = pytest.mark.postgres

REF = "queryref1"


def target() -> dict:
    database = settings.DATABASES["default"]
    return {
        "port": int(database["PORT"] or 5432),
        "user": database["USER"] or "postgres",
        "password": database["PASSWORD"] or "",
        "dbname": "postgres",
        "host": database["HOST"] or "127.0.0.1",
    }


def query(agent, sql: str, **extra):
    return agent.client().query(REF, QueryRequest(sql=sql, **{**target(), **extra}), deadline_s=10)


def test_it_returns_rows_as_objects(shared_agent):
    rows = query(shared_agent, "select 1 as one, 'x' as text, null as nothing, now()::date as day, '\\x01ff'::bytea b")
    assert len(rows) == 1
    assert rows[0]["one"] == 1
    assert rows[0]["text"] == "x"
    assert rows[0]["nothing"] is None
    assert len(rows[0]["day"]) == 10
    assert rows[0]["b"] == "\\x01ff"


def test_it_returns_the_last_statements_rows(shared_agent):
    assert query(shared_agent, "select 1 as a; select 2 as b") == [{"b": 2}]


def test_postgres_errors_come_back_with_postgres_message(shared_agent):
    with pytest.raises(AgentError) as error:
        query(shared_agent, "select * from no_such_table")
    assert error.value.code == "query_failed"
    assert error.value.status == 400
    assert 'relation "no_such_table" does not exist' in error.value.message


def test_read_only_runs_in_a_read_only_transaction(shared_agent):
    with pytest.raises(AgentError) as error:
        query(shared_agent, "create table berth_query_probe (id int)", read_only=True)
    assert "read-only transaction" in error.value.message


def test_it_caps_rows_and_bytes(shared_agent):
    assert len(query(shared_agent, "select generate_series(1, 5)", max_rows=5)) == 5
    with pytest.raises(AgentError, match="more than 4 rows"):
        query(shared_agent, "select generate_series(1, 5)", max_rows=4)
    with pytest.raises(AgentError, match="larger than 1000 bytes"):
        query(shared_agent, "select repeat('x', 2000)", max_bytes=1000)


def test_the_statement_is_cut_off_at_the_deadline(shared_agent):
    with pytest.raises(AgentError, match="statement timeout"):
        shared_agent.client().query(REF, QueryRequest(sql="select pg_sleep(30)", **target()), deadline_s=1)


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"port": None}, "`port`"),  # None: left out
        ({"sql": "  "}, "$.sql"),
        ({"max_rows": 0}, "$.max_rows"),
        ({"max_bytes": 4 << 20}, "$.max_bytes"),
        ({"timeout": 5}, "`timeout`"),
    ],
)
def test_it_refuses_malformed_requests_naming_the_field(shared_agent, fields, named):
    body = {key: value for key, value in {**target(), "sql": "select 1", **fields}.items() if value is not None}
    reply = httpx.post(
        f"{shared_agent.base_url}/v1/runtimes/{REF}/query",
        headers={"Authorization": f"Bearer {shared_agent.token}"},
        json=body,
    )
    assert reply.status_code == 422
    assert reply.json()["error"]["code"] == "invalid" and named in reply.json()["error"]["message"]


def test_it_refuses_a_malformed_ref(shared_agent):
    with pytest.raises(AgentError) as error:
        shared_agent.client().query("Bad_Ref", QueryRequest(sql="select 1", **target()), deadline_s=5)
    assert error.value.status == 422
