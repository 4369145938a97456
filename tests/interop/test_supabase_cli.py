"""The official Supabase CLI (pinned, see package.json) drives Berth through the Management API:
organizations, a project's whole life, its keys, `link` then `db query --linked`, `db push` with
the connection string Berth shows, and the refusals."""

import jwt
import pytest

from orgs.actions import create_token, revoke_token
from projects.models import Project, Status
from tests.api_helpers import join, make_org, make_user
from tests.interop.conftest import PASSWORD
from tests.stack import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def shown_connection_string(project: Project) -> str:
    """The database URL as the dashboard's project page shows it, password revealed."""
    from dashboard.views.project import connection_details

    details = connection_details(project)
    return (
        f"postgres://postgres:{project.secrets['postgres_password']}@{details['address']}:{details['db_port']}/postgres"
    )


def test_the_cli_drives_a_project_through_its_whole_life(stack):
    token = create_token(make_user("alice"), name="cli")[1]

    created = stack.cli("orgs", "create", "Acme", token=token)
    assert "Created organization" in created.stdout
    [org] = stack.cli_json("orgs", "list", token=token)
    assert org["name"] == "Acme"

    project = stack.cli_json(
        "projects",
        "create",
        "Orders",
        "--org-id",
        org["id"],
        "--db-password",
        PASSWORD,
        "--region",
        "us-east-1",
        token=token,
    )
    ref = project["ref"]

    def listed_healthy():
        listed = {p["ref"]: p for p in stack.cli_json("projects", "list", token=token)}
        return listed[ref]["status"] == "ACTIVE_HEALTHY" and listed[ref]

    listed = wait_for(listed_healthy, timeout=90, interval=2, what=f"{ref} listed as ACTIVE_HEALTHY")
    assert listed["organization_id"] == org["id"]
    # The CLI names no major: the newest one the host serves (15, 16 and 17 here).
    assert listed["database"]["postgres_engine"] == "17"

    row = Project.objects.get(ref=ref)
    keys = {
        key["name"]: key["api_key"] for key in stack.cli_json("projects", "api-keys", "--project-ref", ref, token=token)
    }
    for role in ("anon", "service_role"):
        claims = jwt.decode(keys[role], row.secrets["jwt_secret"], algorithms=["HS256"])
        assert claims["role"] == role

    workdir = stack.tmp_path / "app"
    workdir.mkdir()
    stack.cli("init", "--yes", token=token, cwd=workdir)
    stack.cli("link", "--project-ref", ref, token=token, cwd=workdir)
    assert (workdir / "supabase" / ".temp" / "pooler-url").read_text().startswith(f"postgresql://postgres.{ref}@")
    rows = stack.cli_json(
        "db",
        "query",
        "--linked",
        "select current_setting('server_version_num') as version",
        token=token,
        cwd=workdir,
        SUPABASE_DB_PASSWORD=PASSWORD,
    )
    assert rows[0]["version"].startswith("17")

    # The string Berth shows works as it is: the runtime serves TLS, which the CLI requires.
    url = shown_connection_string(row)
    migration = workdir / "supabase" / "migrations" / "20260101000000_orders.sql"
    migration.parent.mkdir(exist_ok=True)
    migration.write_text("create table orders (id bigint primary key, note text);\n")
    pushed = stack.cli("db", "push", "--db-url", url, "--yes", token=token, cwd=workdir)
    assert "Finished supabase db push" in pushed.stdout + pushed.stderr
    listing = stack.cli("migration", "list", "--db-url", url, token=token, cwd=workdir)
    assert listing.stdout.count("20260101000000") == 2  # local and remote columns

    stack.cli("projects", "delete", ref, "--yes", token=token)
    wait_for(lambda: Project.objects.get(ref=ref).status == Status.REMOVED, timeout=60, what=f"{ref} to be removed")
    assert not (stack.agent.root / ref).exists()
    assert ref not in {p["ref"] for p in stack.cli_json("projects", "list", token=token)}


def test_the_cli_is_refused_a_bad_token_a_revoked_one_and_other_organizations(stack):
    from operations.creation import create_project

    alice, bob = make_user("alice"), make_user("bob")
    theirs = make_org("Bob's")
    join(bob, theirs)
    bobs = create_project(name="Secret", postgres_major=15, template="postgres", organization=theirs)

    bad = stack.cli("projects", "list", token="sbp_" + "0" * 40, check=False)
    assert bad.returncode != 0
    assert "Unauthorized" in bad.stdout + bad.stderr

    token_row, revoked = create_token(alice, name="old")
    assert stack.cli("orgs", "list", token=revoked).returncode == 0
    revoke_token(token_row, actor=alice)
    refused = stack.cli("orgs", "list", token=revoked, check=False)
    assert refused.returncode != 0
    assert "Unauthorized" in refused.stdout + refused.stderr

    token = create_token(alice, name="cli")[1]
    keys = stack.cli("projects", "api-keys", "--project-ref", bobs.ref, token=token, check=False)
    assert keys.returncode != 0
    assert "not found" in (keys.stdout + keys.stderr).lower()
    deleted = stack.cli("projects", "delete", bobs.ref, "--yes", token=token, check=False)
    assert deleted.returncode != 0
    assert Project.objects.get(pk=bobs.pk).desired_state == "running"
    assert bobs.ref not in {p["ref"] for p in stack.cli_json("projects", "list", token=token)}
