"""/v1/projects/{ref}/upgrade, /eligibility and /status in the platform's shapes; the project's
agent is a stand-in answering upgrade checks as the real one would (the real one is in
tests/agent/test_upgrades.py and tests/operations/test_upgrades_e2e.py)."""

from unittest import mock

import pytest

from agent.api import UpgradeBlocker, UpgradeCheck
from operations.models import Kind, Operation, State
from orgs.models import Role
from projects.models import Status
from tests.api_helpers import api_as, join, make_org, make_user
from tests.factories import make_runtime_project

pytestmark = pytest.mark.django_db


class Agent:
    def __init__(self, answers):
        self.answers = answers

    def __call__(self, host, *, deadline, operation=None):
        return self

    def upgrade_check(self, ref, target):
        return self.answers[target]


ELIGIBLE = Agent({16: UpgradeCheck(15, 16, [], ["logical", "dump"]), 17: UpgradeCheck(15, 17, [], ["dump"])})
LACKING = UpgradeBlocker("unsupported_extension", "PostgreSQL 17 here lacks extension adminpack", "adminpack")
NOT_17 = Agent({16: UpgradeCheck(15, 16, [], ["logical"]), 17: UpgradeCheck(15, 17, [LACKING], [])})


@pytest.fixture
def project(alice, postgres):
    org = make_org("Acme")
    join(alice, org, Role.DEVELOPER)
    project = make_runtime_project(postgres, organization=org, status=Status.ACTIVE_HEALTHY)
    project.host.capabilities = {"driver": "process", "postgres_versions": [15, 16, 17]}
    project.host.save()
    return project


def test_eligibility_is_the_platforms_shape(alice, project):
    with mock.patch("hosts.agents.client_for", NOT_17):
        reply = api_as(alice).get(f"/v1/projects/{project.ref}/upgrade/eligibility")
    assert reply.status_code == 200
    body = reply.json()
    assert body["eligible"] is True
    assert body["current_app_version"] == "berth-postgres-15"
    assert [(t["postgres_version"], t["method"]) for t in body["target_upgrade_versions"]] == [("16", "logical")]
    assert body["validation_errors"] == [
        {
            "type": "unsupported_extension",
            "message": "PostgreSQL 17 here lacks extension adminpack",
            "target_version": "17",
            "extension_name": "adminpack",
        }
    ]
    assert body["unsupported_extensions"] == ["adminpack"]


def test_an_ineligible_target_is_refused_at_once_naming_the_reason_and_nothing_starts(alice, project):
    with mock.patch("hosts.agents.client_for", NOT_17):
        reply = api_as(alice).post(f"/v1/projects/{project.ref}/upgrade", {"target_version": "17"})
    assert reply.status_code == 400
    assert "adminpack" in reply.json()["message"]
    assert not Operation.objects.exists()
    assert api_as(alice).get(f"/v1/projects/{project.ref}/upgrade/status").json() == {"databaseUpgradeStatus": None}


def test_a_target_that_is_not_a_major_is_refused(alice, project):
    reply = api_as(alice).post(f"/v1/projects/{project.ref}/upgrade", {"target_version": "seventeen"})
    assert reply.status_code == 400 and "target_version" in reply.json()["message"]
    assert not Operation.objects.exists()


def test_an_eligible_upgrade_is_queued_and_its_status_follows_the_operation(alice, project):
    with mock.patch("hosts.agents.client_for", ELIGIBLE):
        reply = api_as(alice).post(f"/v1/projects/{project.ref}/upgrade", {"target_version": "17"})
    assert reply.status_code == 201
    operation = Operation.objects.get(pk=int(reply.json()["tracking_id"]))
    assert (operation.kind, operation.params) == (Kind.UPGRADE, {"target_major": 17})
    status = api_as(alice).get(f"/v1/projects/{project.ref}/upgrade/status").json()["databaseUpgradeStatus"]
    assert (status["status"], status["progress"], status["target_version"]) == (0, "0_requested", 17)

    Operation.objects.filter(pk=operation.pk).update(
        state=State.FAILED, error_code="agent_command_failed", error_message="the new cluster did not start"
    )
    status = api_as(alice).get(f"/v1/projects/{project.ref}/upgrade/status").json()["databaseUpgradeStatus"]
    assert (status["status"], status["error"]) == (2, "the new cluster did not start")


def test_read_only_members_cannot_upgrade(project, alice):
    reader = make_user("reader")
    join(reader, project.organization, Role.READ_ONLY)
    with mock.patch("hosts.agents.client_for", ELIGIBLE):
        assert api_as(reader).post(f"/v1/projects/{project.ref}/upgrade", {"target_version": "16"}).status_code == 403
        assert api_as(reader).get(f"/v1/projects/{project.ref}/upgrade/eligibility").status_code == 200
    assert not Operation.objects.exists()
