"""Projects made before the `postgres` template ran the Supabase SQL get it as a template revision
rolled out like any other (`migrate_runtimes`): each is re-synced and restarted wave by wave,
its database gains the Supabase roles and schemas, and keeps its data. A real worker, agent and
process-driver PostgreSQL."""

import shutil
from io import StringIO
from pathlib import Path

import psycopg
import pytest
from django.core.management import call_command

from operations import routes
from operations.creation import create_project
from projects.models import Project, Status
from templating.actions import sync_templates
from templating.models import TemplateVersion
from tests.stack import RUNTIMES, Worker, agent_host, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def before_the_sql(root: Path) -> Path:
    """The `postgres` template as it was before it ran supabase.sql."""
    folder = root / "postgres"
    shutil.copytree(RUNTIMES / "postgres", folder)
    (folder / "supabase.sql").unlink()
    runtime = (folder / "runtime.toml").read_text()
    kept = [
        line for line in runtime.splitlines(keepends=True) if "init_sql" not in line and "Supabase project" not in line
    ]
    (folder / "runtime.toml").write_text("".join(kept))
    manifest = (folder / "manifest.toml").read_text()
    entry = manifest.index('[files."supabase.sql"]')
    (folder / "manifest.toml").write_text(manifest[:entry] + manifest[manifest.index('[files."README.md"]') :])
    return root


def connect(project: Project) -> psycopg.Connection:
    host, port = routes.db_endpoint(project)
    return psycopg.connect(
        host=host or "127.0.0.1",
        port=port,
        user="postgres",
        password=project.secrets["postgres_password"],
        dbname="postgres",
        autocommit=True,
    )


def test_existing_projects_become_supabase_databases_through_a_rollout(agent_factory, tmp_path):
    agent_host(agent_factory(), blocks=3)
    worker = Worker(tmp_path, BERTH_OPERATION_DEADLINE=60, BERTH_AGENT_CALL_DEADLINE=20, Q_WORKERS=2)
    try:
        sync_templates(before_the_sql(tmp_path / "runtimes"))
        old = TemplateVersion.objects.latest_of("postgres")
        assert "supabase.sql" not in old.files
        projects = [create_project(name=f"Legacy {n}", postgres_major=15, template="postgres") for n in range(3)]
        for project in projects:
            wait_for(
                lambda p=project: Project.objects.get(pk=p.pk).status == Status.ACTIVE_HEALTHY,
                timeout=120,
                what=f"{project.ref} healthy",
            )
            project.refresh_from_db()
            with connect(project) as conn:
                assert conn.execute("select to_regrole('anon')").fetchone() == (None,)
                conn.execute("create table orders (id bigint primary key); insert into orders values (1), (2)")

        sync_templates()  # runtimes/ as it is now: the revision that runs supabase.sql
        new = TemplateVersion.objects.latest_of("postgres")
        assert new.revision > old.revision and "supabase.sql" in new.files
        call_command(
            "migrate_runtimes", "--template", "postgres", "--to", "latest", "--canary", "1", "--wave-size", "2",
            stdout=StringIO(), stderr=StringIO(),
        )  # fmt: skip

        for project in projects:
            project.refresh_from_db()
            assert (project.template_version, project.status) == (new, Status.ACTIVE_HEALTHY)
            with connect(project) as conn:
                assert conn.execute("select count(*) from orders").fetchone() == (2,)
                assert conn.execute("select rolbypassrls from pg_roles where rolname = 'service_role'").fetchone() == (
                    True,
                )
                assert conn.execute("select to_regclass('auth.users'), to_regclass('storage.buckets')").fetchone() == (
                    "auth.users",
                    "storage.buckets",
                )
    finally:
        worker.stop()
