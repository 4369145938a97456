"""config/database/pooler (GET, PATCH) and cli/login-role (POST, DELETE), the latter on a real
project database run by a real agent (process driver)."""

from datetime import timedelta

import psycopg
import pytest
from django.utils import timezone

from agent.api import FileSpec
from audit.models import AuditEntry
from operations.login_roles import reap_expired
from orgs.models import Role
from ports.models import BlockState, PortBlock
from projects.models import LoginRole, Project, Status
from templating.secrets import generate_project_secrets
from tests.api_helpers import api_as, join, make_org, make_user
from tests.factories import make_host, make_project
from tests.stack import agent_host

pytestmark = pytest.mark.django_db


def placed(org, postgres, host=None) -> Project:
    host = host or make_host()
    project = make_project(
        organization=org,
        template_version=postgres,
        host=host,
        status=Status.ACTIVE_HEALTHY,
        secrets=generate_project_secrets(),
    )
    PortBlock.objects.create(
        host=host,
        first_port=host.port_range_start,
        last_port=host.port_range_start + 9,
        state=BlockState.LEASED,
        project=project,
    )
    return project


class Pushes:
    def __init__(self):
        self.projects = []

    def __call__(self, project):
        self.projects.append(project.ref)


@pytest.fixture
def pushes(monkeypatch):
    from operations import routes

    recorded = Pushes()
    monkeypatch.setattr(routes, "push_after", recorded)
    return recorded


def test_the_pooler_config_is_the_hosts_pooler_address_in_transaction_mode(alice, org, postgres, settings):
    project = placed(org, postgres)
    [config] = api_as(alice).get(f"/v1/projects/{project.ref}/config/database/pooler").json()
    pooler = f"pooler.{settings.BERTH_DATABASE_DOMAIN}"
    assert config["db_host"] == pooler and config["db_port"] == 6543 and config["db_user"] == f"postgres.{project.ref}"
    assert config["connection_string"] == f"postgresql://postgres.{project.ref}:[YOUR-PASSWORD]@{pooler}:6543/postgres"
    assert config["pool_mode"] == "transaction"
    assert (config["default_pool_size"], config["max_client_conn"]) == (15, 200)

    project.host.pooler_host = "pooler-2.example.com"
    project.host.save()
    [config] = api_as(alice).get(f"/v1/projects/{project.ref}/config/database/pooler").json()
    assert config["db_host"] == "pooler-2.example.com"


def test_patch_changes_the_pool_and_pushes_the_hosts_routes(
    alice, org, postgres, pushes, django_capture_on_commit_callbacks
):
    project = placed(org, postgres)
    with django_capture_on_commit_callbacks(execute=True):
        response = api_as(alice).client.patch(
            f"/v1/projects/{project.ref}/config/database/pooler",
            '{"default_pool_size": 4, "max_client_conn": 50}',
            content_type="application/json",
            headers=api_as(alice).headers,
        )
    assert response.status_code == 200
    assert response.json() == {"default_pool_size": 4, "max_client_conn": 50, "pool_mode": "transaction"}
    project.refresh_from_db()
    assert (project.pool_size, project.max_client_conn) == (4, 50)
    assert pushes.projects == [project.ref]
    assert AuditEntry.objects.filter(action="token.use", detail__action="project.pooler_config").exists()


@pytest.mark.parametrize(
    "body", ['{"default_pool_size": 0}', '{"max_client_conn": 100001}', '{"pool_mode": "session"}']
)
def test_patch_refuses_what_the_pooler_cannot_do_and_changes_nothing(alice, org, postgres, pushes, body):
    project = placed(org, postgres)
    client = api_as(alice)
    response = client.client.patch(
        f"/v1/projects/{project.ref}/config/database/pooler",
        body,
        content_type="application/json",
        headers=client.headers,
    )
    assert response.status_code == 400
    project.refresh_from_db()
    assert (project.pool_size, project.max_client_conn) == (15, 200)
    assert pushes.projects == []


def test_read_only_members_may_not_patch_nor_ask_for_a_writing_login_role(postgres, pushes):
    reader, org = make_user("reader"), make_org("Acme")
    join(reader, org, role=Role.READ_ONLY)
    project = placed(org, postgres)
    client = api_as(reader)
    patched = client.client.patch(
        f"/v1/projects/{project.ref}/config/database/pooler",
        '{"default_pool_size": 4}',
        content_type="application/json",
        headers=client.headers,
    )
    assert patched.status_code == 403
    assert client.post(f"/v1/projects/{project.ref}/cli/login-role", {"read_only": False}).status_code == 403


def test_another_organizations_project_is_not_found(alice, postgres):
    theirs = placed(make_org("Other"), postgres)
    client = api_as(alice)
    assert client.get(f"/v1/projects/{theirs.ref}/config/database/pooler").status_code == 404
    assert client.post(f"/v1/projects/{theirs.ref}/cli/login-role", {"read_only": False}).status_code == 404
    assert client.delete(f"/v1/projects/{theirs.ref}/cli/login-role").status_code == 404


# --- login roles on a real database -------------------------------------------------------------


@pytest.fixture
def live(agent, org, postgres):
    """A project whose database really runs on its leased port, under a real agent."""
    host = agent_host(agent, block_size=10, blocks=1)
    project = placed(org, postgres, host=host)
    port = host.port_range_start
    password = project.secrets["postgres_password"]
    text = f'driver = "process"\n[postgres]\nmajor = 15\nport = {port}\npassword = "{password}"\n'
    client = agent.client(deadline=90)
    client.put_files(project.ref, [FileSpec("runtime.toml", text.encode())], private_paths=["runtime.toml"])
    assert client.up(project.ref).state == "running"
    project.port = port
    return project


def login(project, role: str, password: str) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=project.port, user=role, password=password, dbname="postgres")


def test_a_login_role_logs_in_steps_up_to_postgres_and_expires_with_its_ttl(alice, live, settings):
    settings.BERTH_LOGIN_ROLE_TTL = 600
    before = timezone.now()
    response = api_as(alice).post(f"/v1/projects/{live.ref}/cli/login-role", {"read_only": False})
    assert response.status_code == 201
    body = response.json()
    assert body["role"] == "cli_login_postgres" and body["ttl_seconds"] == 600 and len(body["password"]) >= 32
    with login(live, body["role"], body["password"]) as connection:
        connection.execute("SET SESSION ROLE postgres")  # as the CLI does for cli_login_ roles
        connection.execute("create table made_by_cli (id int)")
        until = connection.execute(
            "select rolvaliduntil from pg_roles where rolname = 'cli_login_postgres'"
        ).fetchone()[0]
    row = LoginRole.objects.get(project=live)
    assert before + timedelta(seconds=590) < row.expires_at <= timezone.now() + timedelta(seconds=600)
    assert abs((until - row.expires_at).total_seconds()) < 1
    assert AuditEntry.objects.filter(action="project.login_role", project=live).exists()

    # A second request resets the password: the first one no longer logs in.
    second = api_as(alice).post(f"/v1/projects/{live.ref}/cli/login-role", {"read_only": False}).json()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        login(live, body["role"], body["password"])
    login(live, second["role"], second["password"]).close()
    assert LoginRole.objects.filter(project=live).count() == 1


def test_a_read_only_login_role_reads_and_cannot_write(alice, live):
    body = api_as(alice).post(f"/v1/projects/{live.ref}/cli/login-role", {"read_only": True}).json()
    assert body["role"] == "cli_login_read_only"
    with login(live, body["role"], body["password"]) as connection:
        assert connection.execute("select count(*) from pg_tables").fetchone()[0] > 0
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            connection.execute("create table nope (id int)")


def test_the_reaper_drops_expired_roles_and_keeps_one_renewed_meanwhile(alice, live):
    body = api_as(alice).post(f"/v1/projects/{live.ref}/cli/login-role", {"read_only": False}).json()
    reader = api_as(alice).post(f"/v1/projects/{live.ref}/cli/login-role", {"read_only": True}).json()
    with login(live, body["role"], body["password"]) as connection:
        connection.execute("SET SESSION ROLE postgres")
        connection.execute("RESET ROLE")
        connection.execute("create table owned_by_login (id int)")
    owner = psycopg.connect(
        host="127.0.0.1",
        port=live.port,
        user="postgres",
        password=live.secrets["postgres_password"],
        dbname="postgres",
        autocommit=True,
    )
    with owner:
        # Its TTL ends: the database stops it logging in, and the reaper drops it.
        owner.execute("ALTER ROLE cli_login_postgres VALID UNTIL 'yesterday'")
        LoginRole.objects.filter(project=live).update(expires_at=timezone.now() - timedelta(seconds=1))
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            login(live, body["role"], body["password"])
        # The read-only role was renewed in the database after the row was read as expired: kept.
        assert reap_expired() == 1
        roles = {name for (name,) in owner.execute("select rolname from pg_roles where rolname like 'cli_login_%'")}
        assert roles == {"cli_login_read_only"}
        assert owner.execute("select tableowner from pg_tables where tablename = 'owned_by_login'").fetchone() == (
            "postgres",
        )
    assert list(LoginRole.objects.filter(project=live).values_list("role", flat=True)) == ["cli_login_read_only"]
    login(live, reader["role"], reader["password"]).close()


def test_delete_drops_the_projects_login_roles_now(alice, live):
    body = api_as(alice).post(f"/v1/projects/{live.ref}/cli/login-role", {"read_only": False}).json()
    response = api_as(alice).delete(f"/v1/projects/{live.ref}/cli/login-role")
    assert response.status_code == 200 and response.json() == {"message": "ok"}
    assert not LoginRole.objects.filter(project=live).exists()
    with pytest.raises(psycopg.OperationalError, match="does not exist|password authentication failed"):
        login(live, body["role"], body["password"])


def test_a_project_without_a_database_gets_a_clear_refusal(alice, org, postgres):
    project = make_project(organization=org, template_version=postgres, status=Status.INIT_FAILED)
    response = api_as(alice).post(f"/v1/projects/{project.ref}/cli/login-role", {"read_only": False})
    assert response.status_code == 502
    assert "has no database running yet" in response.json()["message"]
    assert not LoginRole.objects.exists()
