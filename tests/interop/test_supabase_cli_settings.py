"""`supabase postgres-config get|update`, `ssl-enforcement`, `network-restrictions` and
`network-bans` (the official CLI, pinned, `--experimental`) against Berth: the settings reach
the project's running server, and the CLI takes what Berth answers."""

import psycopg
import pytest

from orgs.actions import create_token
from orgs.models import Role
from projects.models import DatabaseSettings, Project, Status
from tests.api_helpers import join, make_org, make_user
from tests.interop.conftest import PASSWORD
from tests.pg_wire import startup
from tests.stack import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def show(project: Project, name: str) -> str:
    with psycopg.connect(
        host="127.0.0.1",
        port=project.port_block.first_port,
        user="postgres",
        password=project.secrets["postgres_password"],
        dbname="postgres",
        connect_timeout=10,
    ) as connection:
        return connection.execute(f"show {name}").fetchone()[0]


def test_postgres_config_update_and_get_reach_the_running_server(stack):
    user = make_user("alice")
    org = make_org("Acme")
    join(user, org, Role.OWNER)
    token = create_token(user, name="cli")[1]
    created = stack.cli_json(
        "projects",
        "create",
        "Orders",
        "--org-id",
        org.slug,
        "--db-password",
        PASSWORD,
        "--region",
        "us-east-1",
        token=token,
    )
    ref = created["ref"]
    wait_for(
        lambda: Project.objects.get(ref=ref).status == Status.ACTIVE_HEALTHY, timeout=120, interval=1, what="healthy"
    )
    project = Project.objects.get(ref=ref)

    updated = stack.cli(
        "postgres-config",
        "update",
        "--project-ref",
        ref,
        "--config",
        "work_mem=32MB",
        "--config",
        "statement_timeout=9s",
        "--no-restart",
        "--experimental",
        token=token,
    )
    assert "work_mem" in updated.stdout and "32MB" in updated.stdout
    assert show(project, "work_mem") == "32MB" and show(project, "statement_timeout") == "9s"

    # The CLI merges with what GET answers: the earlier parameters stay.
    stack.cli(
        "postgres-config",
        "update",
        "--project-ref",
        ref,
        "--config",
        "max_connections=80",
        "--experimental",
        token=token,
    )
    shown = stack.cli("postgres-config", "get", "--project-ref", ref, "--experimental", token=token).stdout
    assert "work_mem" in shown and "max_connections" in shown and "80" in shown
    assert show(project, "max_connections") == "80"  # restarted: the CLI asked for no --no-restart
    assert show(project, "work_mem") == "32MB"

    refused = stack.cli(
        "postgres-config",
        "update",
        "--project-ref",
        ref,
        "--config",
        "work_mem=lots",
        "--experimental",
        token=token,
        check=False,
    )
    assert refused.returncode != 0 and "work_mem" in refused.stderr + refused.stdout
    assert show(project, "work_mem") == "32MB"


def test_ssl_enforcement_network_restrictions_and_bans_from_the_cli(stack):
    user = make_user("bob")
    org = make_org("Bobs")
    join(user, org, Role.OWNER)
    token = create_token(user, name="cli")[1]
    ref = stack.cli_json(
        "projects",
        "create",
        "Shop",
        "--org-id",
        org.slug,
        "--db-password",
        PASSWORD,
        "--region",
        "us-east-1",
        token=token,
    )["ref"]
    wait_for(
        lambda: Project.objects.get(ref=ref).status == Status.ACTIVE_HEALTHY, timeout=120, interval=1, what="healthy"
    )
    project = Project.objects.get(ref=ref)

    def cli(*args):
        return stack.cli(*args, "--project-ref", ref, "--experimental", token=token).stdout

    assert "SSL is being enforced" in cli("ssl-enforcement", "update", "--enable-db-ssl-enforcement")
    assert DatabaseSettings.objects.get(project=project).ssl_enforced
    kind, message = startup(project.port_block.first_port, "127.0.0.2", tls=False)
    assert kind == b"E" and "no encryption" in message
    assert "SSL is being enforced" in cli("ssl-enforcement", "get")

    shown = cli("network-restrictions", "update", "--db-allow-cidr", "127.0.0.1/32")
    assert "127.0.0.1/32" in shown
    kind, message = startup(project.port_block.first_port, "127.0.0.2", tls=True)
    assert kind == b"E" and "no pg_hba.conf entry" in message
    assert "127.0.0.1/32" in cli("network-restrictions", "get")

    cli("network-bans", "get")
    cli("network-bans", "remove", "--db-unban-ip", "203.0.113.9")
