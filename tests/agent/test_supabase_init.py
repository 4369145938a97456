"""The `postgres` template's init SQL (runtimes/postgres/supabase.sql) run by the process driver:
each project's database is a Supabase project's (roles, schemas, extensions, grants, the auth
helpers), on every major served here; a changed revision runs at the next start on an existing
project and keeps its data; a failure fails the start; and the pooler's `pgbouncer` role and
`get_auth` still log clients in, whichever of the two ran first."""

import json
import shutil
from pathlib import Path

import psycopg
import pytest

from agent.api import FileSpec, RouteSpec, RoutesRequest
from agent.client import AgentError
from agent.drivers.process import INIT_APPLIED
from tests.agent_fixtures import AgentPool
from tests.stack import PORT_BASE, ROOT, free_port_range, wait_for

INIT_SQL = (ROOT / "runtimes" / "postgres" / "supabase.sql").read_bytes()
PASSWORD = "correct-horse-battery"
API_ROLES = ("anon", "authenticated", "service_role")


def runtime_toml(port: int, major: int, init: bool = True) -> FileSpec:
    text = f'driver = "process"\n\n[postgres]\nmajor = {major}\nport = {port}\npassword = "{PASSWORD}"\n'
    if init:
        text += 'init_sql = "supabase.sql"\n'
    return FileSpec("runtime.toml", text.encode())


def connect(port: int, **kwargs) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", password=PASSWORD, dbname="postgres", autocommit=True, **kwargs
    )


def installed_majors(agent) -> list[int]:
    return agent.client().info().postgres_versions


@pytest.mark.parametrize("major", [15, 16, 17])
def test_a_new_cluster_is_a_supabase_projects_database(agent, major):
    if major not in installed_majors(agent):
        pytest.skip(f"SUPABASE INIT TEST SKIPPED: PostgreSQL {major} is not installed here (scripts/postgres)")
    client, ref, port = agent.client(deadline=90), f"supa{major}db", free_port_range(1, PORT_BASE + 600)
    client.put_files(ref, [runtime_toml(port, major), FileSpec("supabase.sql", INIT_SQL)])
    assert client.up(ref).state == "running"

    with connect(port) as conn:
        roles = {
            name: attributes
            for name, *attributes in conn.execute(
                "select rolname, rolbypassrls, rolinherit, rolcanlogin, rolsuper from pg_roles where rolname = any(%s)",
                [
                    [
                        *API_ROLES,
                        "authenticator",
                        "supabase_admin",
                        "supabase_auth_admin",
                        "supabase_storage_admin",
                        "dashboard_user",
                        "pgbouncer",
                    ]
                ],
            )
        }
        assert len(roles) == 9, roles
        assert roles["service_role"][0] is True and roles["anon"][0] is False
        assert roles["authenticator"][1:3] == [False, True]  # noinherit, login
        assert roles["supabase_admin"][3] is True
        members = conn.execute(
            "select array_agg(r.rolname order by r.rolname) from pg_auth_members m "
            "join pg_roles r on r.oid = m.roleid where m.member = 'authenticator'::regrole"
        ).fetchone()[0]
        assert members == sorted(API_ROLES)
        extensions = dict(conn.execute("select extname, extnamespace::regnamespace::text from pg_extension").fetchall())
        assert {name: extensions.get(name) for name in ("pgcrypto", "uuid-ossp", "pg_stat_statements")} == {
            "pgcrypto": "extensions",
            "uuid-ossp": "extensions",
            "pg_stat_statements": "extensions",
        }
        schemas = {row[0] for row in conn.execute("select nspname from pg_namespace")}
        assert {"auth", "storage", "extensions", "graphql_public", "pgbouncer"} <= schemas
        # The search path of a Supabase project: extensions' functions unqualified.
        assert conn.execute("select uuid_generate_v4() is not null").fetchone() == (True,)
        assert conn.execute("select count(*) from extensions.pg_stat_statements").fetchone()[0] >= 0

        # A migration written for supabase.com: auth.users, RLS with auth.uid(), default grants.
        conn.execute(
            "create table public.notes (id bigint primary key, owner uuid references auth.users(id), body text);"
            "alter table public.notes enable row level security;"
            "create policy own on public.notes for select to authenticated using (owner = auth.uid());"
            "insert into auth.users (id, email) values ('00000000-0000-0000-0000-00000000000a', 'a@example.com'),"
            "  ('00000000-0000-0000-0000-00000000000b', 'b@example.com');"
            "insert into public.notes values (1, '00000000-0000-0000-0000-00000000000a', 'of a'),"
            "  (2, '00000000-0000-0000-0000-00000000000b', 'of b');"
            "insert into storage.buckets (id, name, public) values ('avatars', 'avatars', true)"
        )
        granted = conn.execute(
            "select has_table_privilege('anon', 'public.notes', 'select'), "
            "has_table_privilege('authenticated', 'public.notes', 'insert')"
        ).fetchone()
        assert granted == (True, True)
        with conn.transaction():
            # As PostgREST 9+ sets it: the claims as one JSON setting.
            conn.execute("set local role authenticated")
            claims = {"sub": "00000000-0000-0000-0000-00000000000b", "role": "authenticated", "email": "b@example.com"}
            conn.execute("select set_config('request.jwt.claims', %s, true)", [json.dumps(claims)])
            assert conn.execute("select body from public.notes").fetchall() == [("of b",)]
            assert conn.execute("select auth.role(), auth.email(), auth.jwt() ->> 'sub'").fetchone() == (
                "authenticated",
                "b@example.com",
                "00000000-0000-0000-0000-00000000000b",
            )
        with conn.transaction():
            # As earlier PostgREST versions (and projects' own tests) set it: one setting per claim.
            conn.execute("set local role authenticated")
            conn.execute("set local request.jwt.claim.sub = '00000000-0000-0000-0000-00000000000a'")
            assert conn.execute("select body from public.notes").fetchall() == [("of a",)]
        with conn.transaction():
            conn.execute("set local role anon")
            assert conn.execute("select count(*) from public.notes").fetchone() == (0,)
        with conn.transaction():
            conn.execute("set local role service_role")  # bypasses row-level security
            assert conn.execute("select count(*) from public.notes").fetchone() == (2,)
    assert (agent.root / ref / ".berth-pg" / "data" / INIT_APPLIED).is_file()


def test_a_new_revision_runs_at_the_next_start_of_an_existing_project_and_keeps_its_data(agent):
    client, ref, port = agent.client(deadline=90), "supaexisting", free_port_range(1, PORT_BASE + 610)
    client.put_files(ref, [runtime_toml(port, 15, init=False)])
    client.up(ref)
    with connect(port) as conn:
        # What a project made before the template ran the SQL may hold: its own data, and
        # uuid-ossp in public, which must stay where the project's code calls it.
        conn.execute('create extension "uuid-ossp"; create table kept (id uuid default public.uuid_generate_v4())')
        conn.execute("insert into kept default values")
        assert conn.execute("select count(*) from pg_roles where rolname = 'anon'").fetchone() == (0,)

    # The rollout's re-sync pushes the new runtime.toml and the SQL, then restarts the project.
    client.put_files(ref, [runtime_toml(port, 15), FileSpec("supabase.sql", INIT_SQL)])
    assert "ran supabase.sql" in client.restart(ref).output_tail
    with connect(port) as conn:
        assert conn.execute("select count(*) from kept").fetchone() == (1,)
        assert conn.execute(
            "select extnamespace::regnamespace::text from pg_extension where extname = 'uuid-ossp'"
        ).fetchone() == ("public",)
        assert conn.execute("select to_regclass('auth.users') is not null").fetchone() == (True,)
        conn.execute("drop schema graphql_public")

    # The same revision does not run again at a restart; a changed one does (idempotently).
    assert "ran supabase.sql" not in client.restart(ref).output_tail
    with connect(port) as conn:
        assert conn.execute("select to_regnamespace('graphql_public')").fetchone() == (None,)
    client.put_files(ref, [FileSpec("supabase.sql", INIT_SQL + b"\n-- the next revision\n")])
    assert "ran supabase.sql" in client.restart(ref).output_tail
    with connect(port) as conn:
        assert conn.execute("select to_regnamespace('graphql_public') is not null").fetchone() == (True,)
        assert conn.execute("select count(*) from kept").fetchone() == (1,)


def test_sql_that_fails_fails_the_start_with_postgres_message_and_runs_again_once_fixed(agent):
    client, ref, port = agent.client(deadline=90), "supabroken", free_port_range(1, PORT_BASE + 620)
    broken = INIT_SQL + b"\ncreate table auth.users_extra (id uuid references auth.nowhere(id));\n"
    client.put_files(ref, [runtime_toml(port, 15), FileSpec("supabase.sql", broken)])
    with pytest.raises(AgentError, match='relation "auth.nowhere" does not exist'):
        client.up(ref)
    assert not (agent.root / ref / ".berth-pg" / "data" / INIT_APPLIED).exists()
    with connect(port) as conn:  # one transaction: nothing of it stayed
        assert conn.execute("select to_regnamespace('auth')").fetchone() == (None,)

    client.put_files(ref, [FileSpec("supabase.sql", INIT_SQL)])
    assert client.up(ref).state == "running"
    with connect(port) as conn:
        assert conn.execute("select to_regnamespace('auth') is not null").fetchone() == (True,)


def test_an_init_sql_path_outside_the_runtime_is_refused(agent):
    client, ref, port = agent.client(), "supaescape", free_port_range(1, PORT_BASE + 630)
    text = (
        f'driver = "process"\n[postgres]\nmajor = 15\nport = {port}\npassword = "{PASSWORD}"\ninit_sql = "../x.sql"\n'
    )
    client.put_files(ref, [FileSpec("runtime.toml", text.encode())])
    with pytest.raises(AgentError, match=r"must not contain empty, '\.' or '\.\.' parts"):
        client.up(ref)


@pytest.mark.skipif(
    shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists(),
    reason="POOLER LOGIN AFTER INIT SQL SKIPPED: PgBouncer is not installed (scripts/db-packages)",
)
def test_the_pooler_logs_in_whichever_of_it_and_the_init_sql_ran_first():
    base = free_port_range(6, PORT_BASE + 640)
    env = {
        "BERTH_ROUTER_LISTEN": f"127.0.0.27:{base}",
        "BERTH_POOLER_LISTEN": f"127.0.0.27:{base + 1}",
        "BERTH_PGBOUNCER_LISTEN": f"127.0.0.1:{base + 2}",
    }
    pool = AgentPool()
    try:
        agent = pool.start(env=env)
        client = agent.client(deadline=90)
        first_sql, first_pooler = "supasqlfirst", "supapoolfirst"
        ports = {first_sql: base + 3, first_pooler: base + 4}
        client.put_files(first_sql, [runtime_toml(ports[first_sql], 15), FileSpec("supabase.sql", INIT_SQL)])
        client.put_files(first_pooler, [runtime_toml(ports[first_pooler], 15, init=False)])
        for ref in ports:
            client.up(ref)
        routes = [RouteSpec(ref=ref, port=port, password=PASSWORD) for ref, port in ports.items()]
        client.routes(RoutesRequest(domain="berth.test", routes=routes))
        wait_for(lambda: client.info().router.pooled == 2, timeout=30, what="both projects pooled")

        # The pooler prepared the second before its SQL ran: now it runs, at a restart.
        client.put_files(first_pooler, [runtime_toml(ports[first_pooler], 15), FileSpec("supabase.sql", INIT_SQL)])
        assert "ran supabase.sql" in client.restart(first_pooler).output_tail

        for ref, port in ports.items():
            with psycopg.connect(
                host="pooler.berth.test",
                hostaddr="127.0.0.27",
                port=base + 1,
                user=f"postgres.{ref}",
                password=PASSWORD,
                dbname="postgres",
                sslmode="require",
                connect_timeout=10,
            ) as pooled:
                assert pooled.execute("select current_setting('port')::int").fetchone() == (port,)
                assert pooled.execute("select to_regclass('auth.users') is not null").fetchone() == (True,)
            with connect(port) as conn:
                # One get_auth, the pooler's shape, owned by whoever made it first.
                assert conn.execute(
                    "select count(*), bool_and(prosecdef) from pg_proc where proname = 'get_auth'"
                ).fetchone() == (1, True)
    finally:
        pool.close()
