"""config/database/postgres, ssl-enforcement and network-restrictions: checks before anything is
written, tenancy and roles, audit, and what the rows say after the agent applied, refused or
never answered (a stand-in agent here; tests/api/test_database_settings_e2e.py runs a real one)."""

import pytest

from agent.api import SettingsReply
from agent.client import AgentError, AgentTimeout, AgentUnreachable
from audit.models import AuditEntry
from operations import routes
from orgs.models import Role
from ports.models import BlockState, PortBlock
from projects.models import DatabaseSettings, DesiredState, Status
from templating.secrets import generate_project_secrets
from tests.api_helpers import api_as, join, make_org, make_user
from tests.factories import make_host, make_project

pytestmark = pytest.mark.django_db

GIB = 1024**3


class FakeAgent:
    def __init__(self):
        self.requests, self.error, self.pending = [], None, []

    def __call__(self, host, *, deadline):
        return self

    def bans(self, ref, unban=()):
        self.unbanned = list(unban)
        if self.error:
            raise self.error
        return [address for address in ["203.0.113.7", "2001:db8::1"] if address not in unban]

    def apply_settings(self, ref, request, deadline_s=None):
        self.requests.append(request)
        if self.error:
            raise self.error
        return SettingsReply(values=dict(request.parameters), pending_restart=self.pending)


@pytest.fixture
def agent(monkeypatch):
    import hosts.agents

    fake = FakeAgent()
    monkeypatch.setattr(hosts.agents, "client_for", fake)
    return fake


@pytest.fixture
def org():
    return make_org("Acme")


@pytest.fixture
def project(org, postgres):
    host = make_host(capabilities={"driver": "process", "postgres_versions": [15], "memory_bytes": 4 * GIB})
    return make_project(
        organization=org,
        template_version=postgres,
        host=host,
        status=Status.ACTIVE_HEALTHY,
        secrets=generate_project_secrets(),
    )


def member(org, role=Role.DEVELOPER):
    user = make_user(f"user-{role}")
    join(user, org, role)
    return user


def put(api, project, body):
    return api.put(f"/v1/projects/{project.ref}/config/database/postgres", body)


def test_a_new_project_has_no_parameters_set_and_every_range_allowed(org, project, agent):
    api = api_as(member(org, Role.READ_ONLY))
    assert api.get(f"/v1/projects/{project.ref}/config/database/postgres").json() == {}
    assert api.get(f"/v1/projects/{project.ref}/ssl-enforcement").json() == {
        "currentConfig": {"database": False},
        "appliedSuccessfully": True,
    }
    restrictions = api.get(f"/v1/projects/{project.ref}/network-restrictions").json()
    assert restrictions["config"] == {"dbAllowedCidrs": ["0.0.0.0/0"], "dbAllowedCidrsV6": ["::/0"]}
    assert restrictions["status"] == "applied"
    assert agent.requests == []


def test_it_applies_the_parameters_and_answers_with_them(org, project, agent):
    api = api_as(member(org))
    response = put(api, project, {"work_mem": "64MB", "max_connections": 120, "statement_timeout": "8s"})
    assert response.status_code == 200, response.json()
    assert response.json() == {"work_mem": "64MB", "max_connections": 120, "statement_timeout": "8s"}
    (sent,) = agent.requests
    assert sent.parameters == {"work_mem": "64MB", "max_connections": "120", "statement_timeout": "8s"}
    assert sent.restart is True  # the platform's default: restart for what needs one
    row = DatabaseSettings.objects.get(project=project)
    assert row.applied and row.applied_at and row.running_values["work_mem"] == "64MB"
    entry = AuditEntry.objects.get(action="project.database_settings")
    assert entry.detail["changes"]["postgres_config"]["work_mem"] == "64MB"
    assert AuditEntry.objects.filter(action="token.use", project=project).exists()
    assert api.get(f"/v1/projects/{project.ref}/config/database/postgres").json() == response.json()


def test_without_restart_what_needs_one_is_reported_pending(org, project, agent):
    agent.pending = ["shared_buffers"]
    response = put(api_as(member(org)), project, {"shared_buffers": "256MB", "restart_database": False})
    assert response.status_code == 200
    assert agent.requests[0].restart is False
    assert DatabaseSettings.objects.get(project=project).pending_restart == ["shared_buffers"]


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"work_mem": "64XB"}, "units"),
        ({"work_mem": "10kB"}, "must be"),
        ({"statement_timeout": "soon"}, "not a time"),
        ({"max_connections": 5}, "max_connections must be 10-10000"),
        ({"shared_buffers": "3GB"}, "50% of the host's memory"),
        ({"session_replication_role": "leader"}, "Invalid request"),
        ({"wal_level": "minimal"}, "Invalid request"),
    ],
)
def test_it_refuses_a_bad_value_before_anything_is_written(org, project, agent, body, said):
    response = put(api_as(member(org)), project, body)
    assert response.status_code == 400
    assert said in response.json()["message"]
    assert agent.requests == []
    assert not DatabaseSettings.objects.exists()
    assert not AuditEntry.objects.filter(action="project.database_settings").exists()


def test_a_value_postgres_rejects_leaves_the_old_configuration(org, project, agent):
    api = api_as(member(org))
    put(api, project, {"work_mem": "64MB"})
    agent.error = AgentError("PUT x: PostgreSQL rejected work_mem = '900MB'", code="settings_rejected", status=422)
    response = put(api, project, {"work_mem": "900MB"})
    assert response.status_code == 400 and "PostgreSQL rejected work_mem" in response.json()["message"]
    row = DatabaseSettings.objects.get(project=project)
    assert row.postgres_config == {"work_mem": "64MB"} and row.applied and not row.applying_since


@pytest.mark.parametrize(("error", "status"), [(AgentUnreachable("refused"), 502), (AgentTimeout("late"), 504)])
def test_a_change_the_host_never_confirmed_is_kept_as_not_applied(org, project, agent, error, status):
    agent.error = error
    api = api_as(member(org))
    response = api.post(f"/v1/projects/{project.ref}/network-restrictions/apply", {"dbAllowedCidrs": ["10.0.0.0/8"]})
    assert response.status_code == status
    restrictions = api.get(f"/v1/projects/{project.ref}/network-restrictions").json()
    assert restrictions["status"] == "stale"
    assert restrictions["config"]["dbAllowedCidrs"] == ["10.0.0.0/8"]
    assert restrictions["old_config"]["dbAllowedCidrs"] == ["0.0.0.0/0"]
    # The next change applies the whole document, this one included.
    agent.error = None
    assert api.post(f"/v1/projects/{project.ref}/network-restrictions/apply", {}).status_code == 201
    assert agent.requests[-1].allowed_cidrs == ["10.0.0.0/8", "::/0"]
    assert api.get(f"/v1/projects/{project.ref}/network-restrictions").json()["status"] == "applied"


def test_invalid_ranges_are_refused_with_a_message(org, project, agent):
    api = api_as(member(org))
    response = api.post(
        f"/v1/projects/{project.ref}/network-restrictions/apply",
        {"dbAllowedCidrs": ["10.0.0.0/8", "300.1.1.1/32"], "dbAllowedCidrsV6": ["10.0.0.0/8"]},
    )
    assert response.status_code == 400
    message = response.json()["message"]
    assert "'300.1.1.1/32'" in message and "not IPv6" in message
    assert agent.requests == []


def test_ssl_enforcement_is_applied_and_answered(org, project, agent):
    api = api_as(member(org))
    response = api.put(f"/v1/projects/{project.ref}/ssl-enforcement", {"requestedConfig": {"database": True}})
    assert response.json() == {"currentConfig": {"database": True}, "appliedSuccessfully": True}
    assert agent.requests[0].ssl_enforced is True


def test_read_only_members_change_nothing(org, project, agent):
    api = api_as(member(org, Role.READ_ONLY))
    assert put(api, project, {"work_mem": "64MB"}).status_code == 403
    assert api.post(f"/v1/projects/{project.ref}/network-restrictions/apply", {}).status_code == 403
    assert agent.requests == [] and not DatabaseSettings.objects.exists()


def test_a_paused_project_is_refused(org, project, agent):
    project.desired_state, project.status = DesiredState.STOPPED, Status.INACTIVE
    project.save()
    response = put(api_as(member(org)), project, {"work_mem": "64MB"})
    assert response.status_code == 400 and "paused" in response.json()["message"]
    assert agent.requests == []


def test_another_organizations_project_is_not_found(postgres, agent):
    theirs = make_project(organization=make_org("Other"), template_version=postgres, host=make_host())
    response = api_as(make_user("mallory")).get(f"/v1/projects/{theirs.ref}/config/database/postgres")
    assert response.status_code == 404


def test_the_hosts_router_gets_the_allowed_ranges(org, project, agent, monkeypatch):
    pushed = []
    monkeypatch.setattr(routes, "push_after", lambda p: pushed.append(p.ref))
    PortBlock.objects.create(
        host=project.host, first_port=20010, last_port=20019, state=BlockState.LEASED, project=project
    )
    assert routes.host_routes(project.host).routes[0].allowed_cidrs is None
    api = api_as(member(org))
    api.post(f"/v1/projects/{project.ref}/network-restrictions/apply", {"dbAllowedCidrs": ["192.0.2.0/24"]})
    assert pushed == [project.ref]
    assert routes.host_routes(project.host).routes[0].allowed_cidrs == ["192.0.2.0/24", "::/0"]


def test_bans_are_read_from_the_host_and_lifted_with_an_audit_row(org, project, agent):
    reader = api_as(member(org, Role.READ_ONLY))
    response = reader.post(f"/v1/projects/{project.ref}/network-bans/retrieve")
    assert response.status_code == 201
    assert response.json() == {"banned_ipv4_addresses": ["203.0.113.7"]}
    body = {"ipv4_addresses": ["203.0.113.7"]}
    assert reader.delete(f"/v1/projects/{project.ref}/network-bans", body).status_code == 403
    response = api_as(member(org)).delete(f"/v1/projects/{project.ref}/network-bans", body)
    assert response.status_code == 200
    assert agent.unbanned == ["203.0.113.7"]
    assert AuditEntry.objects.get(action="project.network_unban").detail == {"addresses": ["203.0.113.7"]}


def test_unbanning_something_that_is_not_an_address_is_refused(org, project, agent):
    body = {"ipv4_addresses": ["nope"]}
    response = api_as(member(org)).delete(f"/v1/projects/{project.ref}/network-bans", body)
    assert response.status_code == 400 and "nope" in response.json()["message"]
    assert not AuditEntry.objects.filter(action="project.network_unban").exists()


def test_parameters_set_before_are_checked_again_against_the_hosts_memory_now(org, project, agent):
    api = api_as(member(org))
    assert put(api, project, {"shared_buffers": "1GB"}).status_code == 200
    project.host.capabilities = {**project.host.capabilities, "memory_bytes": GIB}  # a smaller host now
    project.host.save()
    response = api.put(f"/v1/projects/{project.ref}/ssl-enforcement", {"requestedConfig": {"database": True}})
    assert response.status_code == 400 and "shared_buffers" in response.json()["message"]
    assert len(agent.requests) == 1
    assert DatabaseSettings.objects.get(project=project).ssl_enforced is False
