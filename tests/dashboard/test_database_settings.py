"""The project page shows a project's database settings (set, running, pending restart, applied
at), and the database settings page changes them through the same verbs as the API."""

import pytest
from django.urls import reverse

from agent.api import SettingsReply
from audit.models import AuditEntry
from projects.models import DatabaseSettings, Status
from tests.factories import make_host, make_project

pytestmark = pytest.mark.django_db


class FakeAgent:
    def __init__(self):
        self.requests, self.pending = [], []

    def __call__(self, host, *, deadline):
        return self

    def apply_settings(self, ref, request, deadline_s=None):
        self.requests.append(request)
        return SettingsReply(values=dict(request.parameters), pending_restart=self.pending)


@pytest.fixture
def agent(monkeypatch):
    import hosts.agents

    fake = FakeAgent()
    monkeypatch.setattr(hosts.agents, "client_for", fake)
    return fake


@pytest.fixture
def project(postgres):
    return make_project(template_version=postgres, host=make_host(), status=Status.ACTIVE_HEALTHY)


def form(**fields):
    return {
        "action": "settings",
        "postgres_config": "",
        "allowed_cidrs": "0.0.0.0/0",
        "allowed_cidrs_v6": "::/0",
        **fields,
    }


def test_the_dashboard_applies_settings_and_the_project_page_shows_them(staff_client, project, agent):
    agent.pending = ["shared_buffers"]
    url = reverse("dashboard:database_settings", args=[project.ref])
    response = staff_client.post(
        url,
        form(postgres_config="work_mem = 64MB\nshared_buffers = 256MB\ntrack_commit_timestamp = on", ssl_enforced="on"),
    )
    assert response.status_code == 302
    (sent,) = agent.requests
    assert sent.parameters == {"work_mem": "64MB", "shared_buffers": "256MB", "track_commit_timestamp": "on"}
    assert sent.ssl_enforced is True and sent.restart is False
    assert AuditEntry.objects.get(action="project.database_settings").detail["changes"]["ssl_enforced"] is True
    page = staff_client.get(reverse("dashboard:project", args=[project.ref])).content.decode()
    assert "work_mem = 64MB" in page
    assert "pending restart" in page and "connections without TLS are refused" in page


def test_a_bad_value_is_shown_and_nothing_is_applied(staff_client, project, agent):
    url = reverse("dashboard:database_settings", args=[project.ref])
    response = staff_client.post(url, form(postgres_config="work_mem = 64 parsecs"), follow=True)
    assert "Not changed: work_mem" in response.content.decode()
    assert agent.requests == [] and not DatabaseSettings.objects.exists()


def test_a_new_project_shows_postgres_defaults(staff_client, project, agent):
    page = staff_client.get(reverse("dashboard:database_settings", args=[project.ref])).content.decode()
    assert "defaults</dd>" in page and "nothing set yet" in page
