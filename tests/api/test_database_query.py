"""POST /v1/projects/{ref}/database/query: through the project's agent, audited without data."""

import pytest

from agent.client import AgentError, AgentTimeout
from audit.models import AuditEntry
from orgs.models import Role
from ports.models import BlockState, PortBlock
from projects.models import Status
from tests.api_helpers import api_as, join, make_user
from tests.factories import make_host, make_project

pytestmark = pytest.mark.django_db


class FakeAgent:
    def __init__(self, reply=None, error=None):
        self.reply, self.error, self.calls = reply, error, []

    def __call__(self, host, *, deadline):
        self.host, self.deadline = host, deadline
        return self

    def query(self, ref, spec, deadline_s=None):
        self.calls.append((ref, spec, deadline_s))
        if self.error:
            raise self.error
        return self.reply


@pytest.fixture
def agent(monkeypatch):
    import hosts.agents

    fake = FakeAgent(reply=[{"server_version_num": "150014"}])
    monkeypatch.setattr(hosts.agents, "client_for", fake)
    return fake


@pytest.fixture
def running(org, postgres):
    from templating.secrets import generate_project_secrets

    host = make_host()
    project = make_project(
        organization=org,
        template_version=postgres,
        host=host,
        status=Status.ACTIVE_HEALTHY,
        secrets=generate_project_secrets(),
    )
    PortBlock.objects.create(host=host, first_port=20010, last_port=20019, state=BlockState.LEASED, project=project)
    return project


SQL = "select current_setting('server_version_num') as server_version_num"


def test_it_runs_the_query_on_the_projects_database_and_answers_201_with_rows(alice, running, agent, settings):
    response = api_as(alice).post(f"/v1/projects/{running.ref}/database/query", {"query": SQL})
    assert response.status_code == 201
    assert response.json() == [{"server_version_num": "150014"}]
    (ref, spec, deadline_s) = agent.calls[0]
    assert ref == running.ref
    assert spec.port == 20010
    assert spec.password == running.secrets["postgres_password"]
    assert spec.read_only is False
    assert spec.max_rows == settings.BERTH_API_QUERY_MAX_ROWS
    assert deadline_s == settings.BERTH_API_QUERY_DEADLINE


def test_it_audits_that_a_query_ran_never_the_sql_or_rows(alice, running, agent):
    api_as(alice).post(f"/v1/projects/{running.ref}/database/query", {"query": SQL})
    entry = AuditEntry.objects.get(action="token.use", project=running)
    assert entry.detail["action"] == "project.query"
    assert entry.detail["outcome"] == "ok"
    assert "server_version_num" not in str(entry.detail)


def test_postgres_errors_are_400_with_postgres_message(alice, running, agent):
    agent.error = AgentError(
        'POST http://agent/v1/runtimes/x/query: relation "nope" does not exist', code="query_failed", status=400
    )
    response = api_as(alice).post(f"/v1/projects/{running.ref}/database/query", {"query": "select * from nope"})
    assert response.status_code == 400
    assert response.json() == {"message": 'relation "nope" does not exist'}
    assert AuditEntry.objects.get(action="token.use").detail["outcome"] == "query_failed"


def test_a_query_past_its_deadline_is_504(alice, running, agent):
    agent.error = AgentTimeout("no complete answer")
    response = api_as(alice).post(f"/v1/projects/{running.ref}/database/query", {"query": "select pg_sleep(99)"})
    assert response.status_code == 504


def test_an_unreachable_agent_is_502(alice, running, agent):
    agent.error = AgentError("connection refused", code="unreachable")
    assert api_as(alice).post(f"/v1/projects/{running.ref}/database/query", {"query": SQL}).status_code == 502


def test_read_only_members_may_only_read(org, running, agent):
    reader = make_user("reader")
    join(reader, org, Role.READ_ONLY)
    api = api_as(reader)
    assert api.post(f"/v1/projects/{running.ref}/database/query", {"query": SQL}).status_code == 403
    assert not agent.calls
    ok = api.post(f"/v1/projects/{running.ref}/database/query", {"query": SQL, "read_only": True})
    assert ok.status_code == 201
    assert agent.calls[0][1].read_only is True


def test_another_organizations_project_is_404_and_never_queried(running, agent):
    response = api_as(make_user("mallory")).post(f"/v1/projects/{running.ref}/database/query", {"query": SQL})
    assert response.status_code == 404
    assert not agent.calls


def test_a_project_without_a_database_yet_is_400(alice, org, postgres, agent):
    project = make_project(organization=org, template_version=postgres)
    response = api_as(alice).post(f"/v1/projects/{project.ref}/database/query", {"query": SQL})
    assert response.status_code == 400
    assert not agent.calls


def test_it_refuses_an_empty_query(alice, running, agent):
    assert api_as(alice).post(f"/v1/projects/{running.ref}/database/query", {"query": ""}).status_code == 400
    assert not agent.calls
