"""The `postgres` template's database matches the Supabase image's (the docker `supabase`
template's db) in what a project's migrations rely on: the roles and their attributes,
authenticator's memberships, the schemas, the request roles' schema grants, the default
privileges on `public`, where the extensions live and the helper functions' signatures.

The image side needs a Docker engine holding the template's 15 image (`docker pull` it; these
tests never pull): without one the comparison is SKIPPED, saying so. The catalog reader itself
runs on the process side either way."""

import subprocess
import tomllib

import psycopg
import pytest

from agent.api import FileSpec
from tests.agent.test_docker_engine import require_engine
from tests.stack import PORT_BASE, ROOT, free_port_range, wait_for

IMAGE = tomllib.loads((ROOT / "runtimes" / "supabase" / "manifest.toml").read_text())["postgres"]["versions"]["15"][
    "image"
]
PASSWORD = "correct-horse-battery"
API_ROLES = ["anon", "authenticated", "service_role"]
ROLES = [
    *API_ROLES,
    "authenticator",
    "supabase_admin",
    "supabase_auth_admin",
    "supabase_storage_admin",
    "dashboard_user",
    "pgbouncer",
]
SCHEMAS = ["public", "extensions", "auth", "storage", "graphql_public", "pgbouncer"]
# What projects' migrations and policies call; auth.jwt() is left out: Supabase Auth adds it to
# the image's database when it first runs.
FUNCTIONS = ["auth.uid", "auth.role", "auth.email", "storage.foldername", "storage.filename", "storage.extension"]


def catalog(conn: psycopg.Connection) -> dict:
    roles = {
        name: tuple(attributes)
        for name, *attributes in conn.execute(
            "select rolname, rolsuper, rolinherit, rolcanlogin, rolbypassrls from pg_roles where rolname = any(%s)",
            [ROLES],
        )
    }
    members = {
        row[0]
        for row in conn.execute(
            "select r.rolname from pg_auth_members a join pg_roles r on r.oid = a.roleid "
            "where a.member = 'authenticator'::regrole and r.rolname = any(%s)",
            [API_ROLES],
        )
    }
    schemas = {row[0] for row in conn.execute("select nspname from pg_namespace where nspname = any(%s)", [SCHEMAS])}
    usage = {
        (role, schema)
        for role in API_ROLES
        for schema in schemas
        if conn.execute("select has_schema_privilege(%s, %s, 'USAGE')", [role, schema]).fetchone()[0]
    }
    defaults = set(
        conn.execute(
            "select d.defaclrole::regrole::text, d.defaclobjtype::text, a.grantee::regrole::text "
            "from pg_default_acl d, aclexplode(d.defaclacl) a "
            "where d.defaclnamespace = 'public'::regnamespace and a.grantee::regrole::text = any(%s) "
            "and d.defaclrole::regrole::text in ('postgres', 'supabase_admin')",
            [API_ROLES],
        ).fetchall()
    )
    extensions = dict(
        conn.execute(
            "select extname, extnamespace::regnamespace::text from pg_extension "
            "where extname in ('pgcrypto', 'uuid-ossp', 'pg_stat_statements')"
        ).fetchall()
    )
    functions = set(
        conn.execute(
            "select n.nspname || '.' || p.proname, pg_get_function_identity_arguments(p.oid), "
            "pg_get_function_result(p.oid) from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
            "where n.nspname || '.' || p.proname = any(%s)",
            [FUNCTIONS],
        ).fetchall()
    )
    return {
        "roles": roles,
        "authenticator_of": members,
        "schemas": schemas,
        "schema_usage": usage,
        "public_default_privileges": defaults,
        "extensions": extensions,
        "functions": functions,
    }


@pytest.fixture(scope="module")
def process_catalog(shared_agent):
    client, ref, port = shared_agent.client(deadline=90), "supacatalog", free_port_range(1, PORT_BASE + 680)
    runtime = (
        f'driver = "process"\n[postgres]\nmajor = 15\nport = {port}\npassword = "{PASSWORD}"\n'
        'init_sql = "supabase.sql"\n'
    )
    init_sql = (ROOT / "runtimes" / "postgres" / "supabase.sql").read_bytes()
    client.put_files(ref, [FileSpec("runtime.toml", runtime.encode()), FileSpec("supabase.sql", init_sql)])
    client.up(ref)
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=PASSWORD, dbname="postgres") as conn:
        found = catalog(conn)
    client.delete(ref, purge_data=True)
    return found


def test_the_catalog_reader_sees_what_the_template_makes(process_catalog):
    assert set(process_catalog["roles"]) == set(ROLES)
    assert process_catalog["authenticator_of"] == set(API_ROLES)
    assert process_catalog["schemas"] == set(SCHEMAS)
    assert {name for name, _, _ in process_catalog["functions"]} == set(FUNCTIONS)
    assert ("anon", "auth") in process_catalog["schema_usage"]
    assert ("postgres", "r", "anon") in process_catalog["public_default_privileges"]


def test_the_process_template_has_the_supabase_images_catalog(process_catalog):
    engine = require_engine(images=[IMAGE])
    port = free_port_range(1, PORT_BASE + 690)
    started = subprocess.run(
        [engine["docker"], "run", "-d", "--rm", "-e", f"POSTGRES_PASSWORD={PASSWORD}", "-p", f"127.0.0.1:{port}:5432"]
        + [IMAGE],
        env=engine["env"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    container = started.stdout.strip()
    try:

        def image_catalog():
            try:
                # The image's superuser is supabase_admin; its init scripts run before it listens on TCP.
                with psycopg.connect(
                    host="127.0.0.1", port=port, user="supabase_admin", password=PASSWORD, dbname="postgres"
                ) as conn:
                    return (
                        catalog(conn) if conn.execute("select to_regclass('storage.objects')").fetchone()[0] else None
                    )
            except psycopg.OperationalError:
                return None

        image = wait_for(image_catalog, timeout=120, interval=1, what=f"{IMAGE} to initialise")
    finally:
        subprocess.run([engine["docker"], "rm", "-f", container], env=engine["env"], capture_output=True, timeout=60)
    assert process_catalog == image
