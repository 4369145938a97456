"""GET /v1/projects/{ref}/advisors/security and /advisors/performance: each lint finds its problem
on a real database that has it and nothing on one that has not; a new Supabase project's
database (runtimes/postgres/supabase.sql) has no lints at all; the reply is the platform's lint
shape. The agent's own query code runs the lints on a real PostgreSQL (a process-driver cluster
with the template's SQL); only the HTTP hop to the agent is left out."""

import pytest

from agent.client import AgentError, AgentTimeout
from tests.api_helpers import api_as, join, make_org, make_user

pytestmark = pytest.mark.django_db


def advised(alice, owned_project, database_agent, kind: str, database: str) -> list[dict]:
    database_agent.dbname = database
    response = api_as(alice).get(f"/v1/projects/{owned_project.ref}/advisors/{kind}")
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
    "extension_in_public": (
        "security",
        "create extension pg_trgm with schema public;",
        "create extension pg_trgm with schema extensions;",
    ),
    "auth_rls_initplan": (
        "performance",
        TABLE + "alter table public.notes add column owner uuid; alter table public.notes enable row level security;"
        "create policy own on public.notes using (owner = auth.uid());",
        TABLE + "alter table public.notes add column owner uuid; alter table public.notes enable row level security;"
        "create policy own on public.notes using (owner = (select auth.uid()));",
    ),
    "no_primary_key": (
        "performance",
        "create table public.logbook (line text);",
        "create table public.logbook (id bigint primary key, line text);",
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
def test_each_lint_finds_its_problem_and_nothing_on_a_database_without_it(
    lint, alice, owned_project, database_agent, supabase_cluster
):
    kind, problem, fixed = CASES[lint]
    found = [
        item
        for item in advised(alice, owned_project, database_agent, kind, supabase_cluster.new_database(problem))
        if item["name"] == lint
    ]
    assert len(found) == 1, found
    assert found[0]["categories"] == [kind.upper()]
    assert found[0]["metadata"]["schema"] == "public"
    assert found[0]["cache_key"].startswith(f"{lint.replace('initplan', 'init_plan')}_")
    assert found[0]["remediation"].startswith("https://supabase.com/docs/guides/database/database-linter?lint=")
    without = advised(alice, owned_project, database_agent, kind, supabase_cluster.new_database(fixed))
    assert lint not in {item["name"] for item in without}, without


def test_a_new_projects_database_has_no_lints(alice, owned_project, database_agent, supabase_cluster):
    # The platform's own schemas (auth, storage, extensions, ...) are never the owner's to fix.
    new = supabase_cluster.new_database()
    assert advised(alice, owned_project, database_agent, "security", new) == []
    assert advised(alice, owned_project, database_agent, "performance", new) == []


def test_the_reply_is_the_platforms_lint_shape(alice, owned_project, database_agent, supabase_cluster):
    database = supabase_cluster.new_database(PARENT_CHILD)
    [lint] = [
        item
        for item in advised(alice, owned_project, database_agent, "performance", database)
        if item["name"] != "unused_index"
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
    spec = database_agent.specs[-1]
    assert spec.read_only is True and spec.user == "postgres"


def test_a_schema_postgrest_exposes_is_linted_like_public(alice, owned_project, database_agent, supabase_cluster):
    database = supabase_cluster.new_database(
        "create schema api; create table api.open (id int primary key); grant select on api.open to anon;"
    )
    assert advised(alice, owned_project, database_agent, "security", database) == []  # api is not exposed
    with supabase_cluster.connect() as conn:
        conn.execute(f"alter database {database} set pgrst.db_schemas = 'public, api'")
    [lint] = advised(alice, owned_project, database_agent, "security", database)
    assert (lint["name"], lint["metadata"]["schema"]) == ("rls_disabled_in_public", "api")


def test_an_agent_that_times_out_is_504_and_one_that_fails_502(alice, owned_project, database_agent):
    database_agent.error = AgentTimeout("POST /query: timed out", code="timeout", status=504)
    response = api_as(alice).get(f"/v1/projects/{owned_project.ref}/advisors/security")
    assert response.status_code == 504 and "did not finish" in response.json()["message"]
    database_agent.error = AgentError("POST /query: connection refused", code="unreachable", status=502)
    response = api_as(alice).get(f"/v1/projects/{owned_project.ref}/advisors/performance")
    assert response.status_code == 502 and "connection refused" in response.json()["message"]


def test_another_organizations_project_is_not_found(owned_project, database_agent):
    bob = make_user("bob")
    join(bob, make_org("Other"))
    assert api_as(bob).get(f"/v1/projects/{owned_project.ref}/advisors/security").status_code == 404
    assert database_agent.specs == []
