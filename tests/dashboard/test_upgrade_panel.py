"""The project's upgrade panel: eligibility (from the project's agent, here a stand-in) shown
before the button; the button offers only eligible targets; a refusal is shown and starts
nothing; rollback and discard appear only while an old cluster is kept."""

from unittest import mock

import pytest
from django.urls import reverse

from agent.api import UpgradeBlocker, UpgradeCheck
from operations.models import Kind, Operation
from projects.models import Status
from tests.factories import make_runtime_project

pytestmark = pytest.mark.django_db

LACKING = UpgradeBlocker("unsupported_extension", "PostgreSQL 17 here lacks extension adminpack", "adminpack")


class Agent:
    def __init__(self, answers):
        self.answers = answers

    def __call__(self, host, *, deadline, operation=None):
        return self

    def upgrade_check(self, ref, target):
        return self.answers[target]


NOT_17 = Agent({16: UpgradeCheck(15, 16, [], ["logical", "dump"]), 17: UpgradeCheck(15, 17, [LACKING], [])})


@pytest.fixture
def project(postgres):
    project = make_runtime_project(postgres, status=Status.ACTIVE_HEALTHY)
    project.host.capabilities = {"driver": "process", "postgres_versions": [15, 16, 17]}
    project.host.save()
    return project


def test_it_shows_the_eligibility_before_the_button(staff_client, project):
    with mock.patch("hosts.agents.client_for", NOT_17):
        html = staff_client.get(reverse("dashboard:upgrade", args=[project.ref])).content.decode()
    assert '<option value="16">' in html and '<option value="17">' not in html
    assert "PostgreSQL 17: PostgreSQL 17 here lacks extension adminpack" in html
    assert "logical replication: seconds of downtime" in html
    assert "Roll back" not in html


def test_a_refused_upgrade_is_shown_and_starts_nothing(staff_client, project):
    with mock.patch("hosts.agents.client_for", NOT_17):
        reply = staff_client.post(
            reverse("dashboard:upgrade_action", args=[project.ref]), {"action": "upgrade", "target": "17"}, follow=True
        )
    assert "adminpack" in reply.content.decode()
    assert not Operation.objects.exists()


def test_an_eligible_upgrade_is_queued(staff_client, project):
    with mock.patch("hosts.agents.client_for", NOT_17):
        reply = staff_client.post(
            reverse("dashboard:upgrade_action", args=[project.ref]), {"action": "upgrade", "target": "16"}
        )
    assert reply.status_code == 302
    operation = Operation.objects.get(project=project)
    assert (operation.kind, operation.params["target_major"]) == (Kind.UPGRADE, 16)


def test_a_kept_old_cluster_offers_rollback_and_discard(staff_client, project):
    project.postgres_major, project.previous_postgres_major = 17, 15
    project.save()
    with mock.patch("hosts.agents.client_for", NOT_17):
        html = staff_client.get(reverse("dashboard:upgrade", args=[project.ref])).content.decode()
    assert "Roll back to PostgreSQL 15" in html and "writes made since the upgrade are lost" in html
    assert "Discard the old cluster" in html
    staff_client.post(reverse("dashboard:upgrade_action", args=[project.ref]), {"action": "rollback"})
    assert Operation.objects.get(project=project).kind == Kind.UPGRADE_ROLLBACK
