"""GET /v1/projects/{ref}/advisors/security and /advisors/performance: each lint finds its problem
on a real database that has it and nothing on one that has not; a new Supabase project's
database (runtimes/postgres/supabase.sql) has no lints at all; the reply is the platform's lint
shape. The agent's own query code runs the lints on a real PostgreSQL (a process-driver cluster
with the template's SQL); only the HTTP hop to the agent is left out."""

import itertools
from pathlib import Path

import msgspec
import psycopg
import pytest

from agent.api import FileSpec
from agent.client import AgentError, AgentTimeout
from agent.query import QueryFailed, run_query
from ports.models import BlockState, PortBlock
from projects.models import Status
from tests.agent_fixtures import AgentPool
from tests.api_helpers import api_as, join, make_org, make_user
from tests.factories import make_host, make_project
from tests.stack import PORT_BASE, free_port_range

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct-horse-battery"
TEMPLATE_DB = "supabase_new_project"
_names = itertools.count()


class Cluster:
    def __init__(self, port: int):
        self.port = port

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", password=PASSWORD, dbname=dbname, autocommit=True
        )

    def new_database(self, sql: str = "") -> str:
        """A database as a new project's, then `sql` run in it as its owner's migration would."""
        name = f"advised_{next(_names)}"
        with self.connect() as conn:
            conn.execute(f"create database {name} template {TEMPLATE_DB}")
        if sql:
            with self.connect(name) as conn:
                conn.execute(sql)
        return name


@pytest.fixture(scope="module")
def cluster():
    """A process-driver cluster whose `postgres` database ran the template's SQL, and a
    template database made the same way that each test copies."""
    pool = AgentPool()
    try:
        agent = pool.start()
        client, port = agent.client(deadline=90), free_port_range(1, PORT_BASE + 660)
        runtime = (
            f'driver = "process"\n[postgres]\nmajor = 15\nport = {port}\npassword = "{PASSWORD}"\n'
            'init_sql = "supabase.sql"\n'
        )
        init_sql = (ROOT / "runtimes" / "postgres" / "supabase.sql").read_bytes()
        client.put_files("advised", [FileSpec("runtime.toml", runtime.encode()), FileSpec("supabase.sql", init_sql)])
        client.up("advised")
        found = Cluster(port)
        with found.connect() as conn:
            conn.execute(f"create database {TEMPLATE_DB}")
        with found.connect(TEMPLATE_DB) as conn:
            conn.execute(init_sql.decode())
        yield found
    finally:
        pool.close()


class LocalAgent:
    """The agent's query call, run here on the test cluster's database named by `dbname`."""

    def __init__(self, cluster: Cluster):
        self.cluster, self.dbname, self.specs, self.error = cluster, "postgres", [], None

    def __call__(self, host, *, deadline):
        return self

    def query(self, ref, spec, deadline_s=None):
        self.specs.append(spec)
        if self.error:
            raise self.error
        here = msgspec.structs.replace(spec, port=self.cluster.port, dbname=self.dbname, password=PASSWORD)
        try:
            return run_query(here, "127.0.0.1", deadline_s).rows
        except QueryFailed as failed:
            raise AgentError(f"POST /query: {failed.message}", code="query_failed", status=400) from None


@pytest.fixture
def agent(monkeypatch, cluster):
    import hosts.agents

    local = LocalAgent(cluster)
    monkeypatch.setattr(hosts.agents, "client_for", local)
    return local


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def project(alice, postgres):
    from templating.secrets import generate_project_secrets

    org = make_org("Acme")
    join(alice, org)
    host = make_host()
    found = make_project(
        organization=org,
        template_version=postgres,
        host=host,
        status=Status.ACTIVE_HEALTHY,
        secrets=generate_project_secrets(),
    )
    PortBlock.objects.create(host=host, first_port=20010, last_port=20019, state=BlockState.LEASED, project=found)
    return found


def advised(alice, project, agent, kind: str, database: str) -> list[dict]:
    agent.dbname = database
    response = api_as(alice).get(f"/v1/projects/{project.ref}/advisors/{kind}")
    assert response.status_code == 200, response.content
    return response.json()["lints"]


TABLE = "create table public.notes (id bigint primary key, body text);"
POLICY = "alter table public.notes enable row level security; create policy readable on public.notes using (true);"
PARENT_CHILD = (
    "create table public.parent (id bigint primary key);"
    "create table public.child (id bigint primary key, parent_id bigint references public.parent (id));"
)
# lint -> (advisor, SQL that has the problem, SQL that has not)
CASES = {
    "rls_disabled_in_public": ("security", TABLE, TABLE + POLICY),
    "rls_enabled_no_policy": (
        "security",
        TABLE + "alter table public.notes enable row level security;",
        TABLE + POLICY,
    ),
    "security_definer_view": (
        "security",
        TABLE + POLICY + "create view public.recent as select * from public.notes;",
        TABLE + POLICY + "create view public.recent with (security_invoker = on) as select * from public.notes;",
    ),
    "function_search_path_mutable": (
        "security",
        "create function public.answer() returns int language sql as 'select 42';",
        "create function public.answer() returns int language sql set search_path = '' as 'select 42';",
    ),
    "unindexed_foreign_keys": (
        "performance",
        PARENT_CHILD,
        PARENT_CHILD + "create index child_parent_id on public.child (parent_id);",
    ),
    "duplicate_index": (
        "performance",
        TABLE + "create index notes_body on public.notes (body); create index notes_body_again on public.notes (body);",
        TABLE + "create index notes_body on public.notes (body); create index notes_pair on public.notes (body, id);",
    ),
    "unused_index": (
        "performance",
        TABLE + "create index notes_body on public.notes (body);",
        # Scanned once (the session's statistics are written when it ends, before the advisor reads).
        TABLE + "create index notes_body on public.notes (body); set enable_seqscan = off;"
        "select count(*) from public.notes where body = 'x';",
    ),
}


@pytest.mark.parametrize("lint", CASES)
def test_each_lint_finds_its_problem_and_nothing_on_a_database_without_it(lint, alice, project, agent, cluster):
    kind, problem, fixed = CASES[lint]
    found = [
        item for item in advised(alice, project, agent, kind, cluster.new_database(problem)) if item["name"] == lint
    ]
    assert len(found) == 1, found
    assert found[0]["categories"] == [kind.upper()]
    assert found[0]["metadata"]["schema"] == "public"
    assert found[0]["cache_key"].startswith(f"{lint}_public_")
    assert found[0]["remediation"].startswith("https://supabase.com/docs/guides/database/database-linter?lint=")
    without = advised(alice, project, agent, kind, cluster.new_database(fixed))
    assert lint not in {item["name"] for item in without}, without


def test_a_new_projects_database_has_no_lints(alice, project, agent, cluster):
    # The platform's own schemas (auth, storage, extensions, ...) are never the owner's to fix.
    new = cluster.new_database()
    assert advised(alice, project, agent, "security", new) == []
    assert advised(alice, project, agent, "performance", new) == []


def test_the_reply_is_the_platforms_lint_shape(alice, project, agent, cluster):
    database = cluster.new_database(PARENT_CHILD)
    [lint] = [
        item for item in advised(alice, project, agent, "performance", database) if item["name"] != "unused_index"
    ]
    assert lint == {
        "name": "unindexed_foreign_keys",
        "title": "Unindexed foreign keys",
        "level": "INFO",
        "facing": "EXTERNAL",
        "categories": ["PERFORMANCE"],
        "description": lint["description"],
        "detail": "Table `public.child` has a foreign key `child_parent_id_fkey` without a covering index. "
        "This can lead to suboptimal query performance.",
        "remediation": "https://supabase.com/docs/guides/database/database-linter?lint=0001_unindexed_foreign_keys",
        "metadata": {
            "schema": "public",
            "name": "child",
            "type": "table",
            "fkey_name": "child_parent_id_fkey",
            "fkey_columns": [2],
        },
        "cache_key": "unindexed_foreign_keys_public_child_child_parent_id_fkey",
    }
    # Read-only, on the project's own database as its superuser, within the query deadline.
    spec = agent.specs[-1]
    assert spec.read_only is True and spec.user == "postgres"


def test_a_schema_postgrest_exposes_is_linted_like_public(alice, project, agent, cluster):
    database = cluster.new_database(
        "create schema api; create table api.open (id int primary key); grant select on api.open to anon;"
    )
    assert advised(alice, project, agent, "security", database) == []  # api is not exposed
    with cluster.connect() as conn:
        conn.execute(f"alter database {database} set pgrst.db_schemas = 'public, api'")
    [lint] = advised(alice, project, agent, "security", database)
    assert (lint["name"], lint["metadata"]["schema"]) == ("rls_disabled_in_public", "api")


def test_an_agent_that_times_out_is_504_and_one_that_fails_502(alice, project, agent):
    agent.error = AgentTimeout("POST /query: timed out", code="timeout", status=504)
    response = api_as(alice).get(f"/v1/projects/{project.ref}/advisors/security")
    assert response.status_code == 504 and "did not finish" in response.json()["message"]
    agent.error = AgentError("POST /query: connection refused", code="unreachable", status=502)
    response = api_as(alice).get(f"/v1/projects/{project.ref}/advisors/performance")
    assert response.status_code == 502 and "connection refused" in response.json()["message"]


def test_another_organizations_project_is_not_found(project, agent):
    bob = make_user("bob")
    join(bob, make_org("Other"))
    assert api_as(bob).get(f"/v1/projects/{project.ref}/advisors/security").status_code == 404
    assert agent.specs == []
