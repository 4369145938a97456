"""The settings a team changes on its own database, through the Management API, on a real
project run by a real agent (process driver, PostgreSQL 15): Postgres parameters, the
database password, SSL enforcement and network restrictions, with Berth's own probes and
queries still reaching the database whatever the team allows."""

from unittest import mock

import psycopg
import pytest

from hosts import agents
from operations import tasks
from operations.creation import create_project
from operations.health import probe_project
from operations.models import Operation
from orgs.models import Role
from projects.models import DatabaseSettings, Project, Status
from tests.api_helpers import api_as, join, make_org, make_user
from tests.pg_wire import startup, wrong_password
from tests.stack import PORT_BASE, agent_host, connect

pytestmark = pytest.mark.django_db
ELSEWHERE = "127.0.0.2"


@pytest.fixture
def running(agent_factory):
    agent_host(agent_factory(), start=PORT_BASE + 600)
    owner = make_user("owner")
    org = make_org("Acme")
    join(owner, org, Role.OWNER)
    with mock.patch("django_q.tasks.async_task", return_value="task"):
        project = create_project(name="Orders", postgres_major=15, template="postgres", organization=org, actor=owner)
        tasks.run_operation(Operation.objects.get(project=project).pk)
    project = Project.objects.get(pk=project.pk)
    assert project.status == Status.ACTIVE_HEALTHY, project.status_reason
    return project, api_as(owner)


def db_port(project: Project) -> int:
    return project.port_block.first_port


def show(project: Project, name: str) -> str:
    with connect(project) as connection:
        return connection.execute(f"show {name}").fetchone()[0]


def test_postgres_parameters_reach_the_server_by_reload_or_restart(running):
    project, api = running
    path = f"/v1/projects/{project.ref}/config/database/postgres"
    response = api.put(path, {"work_mem": "24MB", "max_connections": 90, "restart_database": False})
    assert response.status_code == 200, response.json()
    assert show(project, "work_mem") == "24MB"
    assert show(project, "max_connections") == "100"
    assert DatabaseSettings.objects.get(project=project).pending_restart == ["max_connections"]
    assert api.put(path, {"work_mem": "24MB", "max_connections": 90}).status_code == 200
    assert show(project, "max_connections") == "90"
    assert DatabaseSettings.objects.get(project=project).pending_restart == []
    # A refused change (one bad value among good ones) changes nothing on the server; what
    # PostgreSQL itself refuses is tests/agent/test_settings.py's.
    refused = api.put(path, {"work_mem": "24MB", "session_replication_role": "replica", "wal_sender_timeout": "-5"})
    assert refused.status_code == 400
    assert show(project, "work_mem") == "24MB" and show(project, "session_replication_role") == "origin"


def test_a_new_password_works_at_once_and_the_old_one_no_longer(running):
    project, api = running
    old = project.secrets["postgres_password"]
    new = "Fresh-Password-2026-xyz"
    response = api.patch(f"/v1/projects/{project.ref}/database/password", {"password": new})
    assert response.status_code == 200, response.json()
    with connect(project, new) as connection:
        assert connection.execute("select 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(project, old)
    project.refresh_from_db()
    assert project.secrets["postgres_password"] == new
    runtime_toml = _host_file(project, "runtime.toml")
    assert f'password = "{new}"' in runtime_toml and old not in runtime_toml
    # Berth's own probes use the stored secret: they pass with the new password.
    outcome = probe_project(project, deadline=20)
    assert outcome.healthy, outcome.summary


def test_a_weak_password_is_refused_and_nothing_changes(running):
    project, api = running
    response = api.patch(f"/v1/projects/{project.ref}/database/password", {"password": "short"})
    assert response.status_code == 400
    with connect(project) as connection:
        assert connection.execute("select 1").fetchone() == (1,)


def test_ssl_enforcement_refuses_plaintext_clients_but_never_berths_own(running):
    project, api = running
    response = api.put(f"/v1/projects/{project.ref}/ssl-enforcement", {"requestedConfig": {"database": True}})
    assert response.json() == {"currentConfig": {"database": True}, "appliedSuccessfully": True}
    kind, message = startup(db_port(project), ELSEWHERE, tls=False)
    assert kind == b"E" and "no encryption" in message
    assert startup(db_port(project), ELSEWHERE, tls=True)[0] == b"R"
    assert api.post(f"/v1/projects/{project.ref}/database/query", {"query": "select 1 as one"}).json() == [{"one": 1}]
    api.put(f"/v1/projects/{project.ref}/ssl-enforcement", {"requestedConfig": {"database": False}})
    assert startup(db_port(project), ELSEWHERE, tls=False)[0] == b"R"


def test_network_restrictions_let_only_allowed_clients_in_and_never_lock_berth_out(running):
    project, api = running
    path = f"/v1/projects/{project.ref}/network-restrictions"
    response = api.post(f"{path}/apply", {"dbAllowedCidrs": ["127.0.0.1/32"], "dbAllowedCidrsV6": []})
    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "applied"
    kind, message = startup(db_port(project), ELSEWHERE, tls=True)
    assert kind == b"E" and "no pg_hba.conf entry" in message
    # Nothing but a far range allowed: Berth's probes and queries still reach the database.
    assert api.post(f"{path}/apply", {"dbAllowedCidrs": ["10.9.0.0/16"]}).status_code == 201
    assert api.post(f"/v1/projects/{project.ref}/database/query", {"query": "select 2 as two"}).json() == [{"two": 2}]
    outcome = probe_project(project, deadline=20)
    assert outcome.healthy, outcome.summary
    assert api.post(f"{path}/apply", {"dbAllowedCidrs": ["127.0.0.2/32"]}).status_code == 201
    assert startup(db_port(project), ELSEWHERE, tls=True)[0] == b"R"


def _host_file(project: Project, path: str) -> str:
    return agents.client_for(project.host, deadline=10).contents(project.ref, [path])[path].decode()


def test_an_address_failing_its_password_repeatedly_is_banned_until_unbanned(running):
    project, api = running
    for _ in range(5):
        assert "password authentication failed" in wrong_password(db_port(project), ELSEWHERE)
    banned = api.post(f"/v1/projects/{project.ref}/network-bans/retrieve").json()
    assert banned == {"banned_ipv4_addresses": [ELSEWHERE]}
    assert startup(db_port(project), ELSEWHERE, tls=False)[0] == b"E"
    unbanned = api.delete(f"/v1/projects/{project.ref}/network-bans", {"ipv4_addresses": [ELSEWHERE]})
    assert unbanned.status_code == 200
    assert api.post(f"/v1/projects/{project.ref}/network-bans/retrieve").json() == {"banned_ipv4_addresses": []}
    assert startup(db_port(project), ELSEWHERE, tls=False)[0] == b"R"
