"""Eligibility for a major upgrade, in the platform's shape: judged from the project's state,
the template's majors on its host, and what the host's agent reads from the cluster (here a
stand-in client answering as the agent would)."""

from unittest import mock

import pytest
from django.utils import timezone

from agent.api import UpgradeBlocker, UpgradeCheck
from agent.client import AgentUnreachable
from operations.models import Kind, Operation
from operations.upgrades import eligibility
from projects.models import Status
from tests.factories import make_runtime_project

pytestmark = pytest.mark.django_db


class Agent:
    """Answers upgrade checks per target as given; records what it was asked."""

    def __init__(self, answers: dict[int, UpgradeCheck] | None = None, unreachable: bool = False):
        self.answers, self.unreachable, self.asked = answers or {}, unreachable, []

    def __call__(self, host, *, deadline, operation=None):
        return self

    def upgrade_check(self, ref, target):
        self.asked.append(target)
        if self.unreachable:
            raise AgentUnreachable("connection refused")
        return self.answers[target]


def check(target: int, methods=("logical", "dump"), blockers=(), warnings=(), data_bytes=50 << 20) -> UpgradeCheck:
    return UpgradeCheck(15, target, list(blockers), list(methods), {}, list(warnings), data_bytes)


def healthy_project(postgres, **fields):
    project = make_runtime_project(postgres, postgres_major=15, status=Status.ACTIVE_HEALTHY, **fields)
    project.host.capabilities = {"driver": "process", "postgres_versions": [15, 16, 17]}
    project.host.save()
    return project


def test_an_eligible_project_lists_each_newer_major_its_host_runs_with_the_method(postgres):
    project = healthy_project(postgres)
    agent = Agent({16: check(16), 17: check(17, methods=["dump"], warnings=["the dump path stops writes"])})
    with mock.patch("hosts.agents.client_for", agent):
        found = eligibility(project, deadline=2)
    platform = found.as_platform()
    assert agent.asked == [16, 17]
    assert platform["eligible"] is True
    assert platform["current_app_version"] == "berth-postgres-15"
    assert platform["latest_app_version"] == "berth-postgres-17"
    assert [(t["postgres_version"], t["method"]) for t in platform["target_upgrade_versions"]] == [
        ("16", "logical"),
        ("17", "dump"),
    ]
    assert platform["validation_errors"] == []
    assert platform["warnings"][0]["target_version"] == "17"
    assert platform["duration_estimate_hours"] > 0


def test_an_extension_the_target_lacks_is_a_validation_error_in_the_platforms_shape(postgres):
    project = healthy_project(postgres)
    lacking = UpgradeBlocker("unsupported_extension", "PostgreSQL 17 here lacks extension adminpack", "adminpack")
    with mock.patch("hosts.agents.client_for", Agent({16: check(16), 17: check(17, methods=[], blockers=[lacking])})):
        found = eligibility(project, deadline=2)
    platform = found.as_platform()
    assert [t["postgres_version"] for t in platform["target_upgrade_versions"]] == ["16"]
    assert platform["unsupported_extensions"] == ["adminpack"]
    assert platform["validation_errors"] == [
        {
            "type": "unsupported_extension",
            "message": "PostgreSQL 17 here lacks extension adminpack",
            "target_version": "17",
            "extension_name": "adminpack",
        }
    ]
    assert "adminpack" in found.refusal(17) and found.refusal(16) is None


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"status": Status.INACTIVE}, "project_not_healthy"),
        ({"host": None}, "project_not_provisioned"),
    ],
)
def test_a_project_that_cannot_start_an_upgrade_is_refused_without_asking_the_agent(postgres, change, kind):
    project = healthy_project(postgres)
    for name, value in change.items():
        setattr(project, name, value)
    agent = Agent()
    with mock.patch("hosts.agents.client_for", agent):
        found = eligibility(project, deadline=2)
    assert not found.eligible and agent.asked == []
    assert [error["type"] for error in found.errors] == [kind]
    assert found.refusal(17)


def test_an_operation_in_flight_makes_it_ineligible(postgres):
    project = healthy_project(postgres)
    Operation.objects.create(project=project, kind=Kind.RESTART, deadline=timezone.now())
    with mock.patch("hosts.agents.client_for", Agent()):
        found = eligibility(project, deadline=2)
    assert [error["type"] for error in found.errors] == ["operation_in_progress"]


def test_no_newer_major_on_the_host_says_what_it_runs(postgres):
    project = healthy_project(postgres)
    project.host.capabilities = {"driver": "process", "postgres_versions": [15]}
    with mock.patch("hosts.agents.client_for", Agent()):
        found = eligibility(project, deadline=2)
    [error] = found.errors
    assert error["type"] == "no_newer_version" and "it runs 15" in error["message"]


def test_an_agent_that_does_not_answer_makes_it_ineligible_with_that_reason(postgres):
    project = healthy_project(postgres)
    with mock.patch("hosts.agents.client_for", Agent(unreachable=True)):
        found = eligibility(project, deadline=2)
    assert not found.eligible
    assert found.errors[0]["type"] == "agent_unreachable" and "did not answer" in found.refusal(16)
