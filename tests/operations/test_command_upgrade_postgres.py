"""manage.py upgrade_postgres: the same verbs as the API and the dashboard, with exit statuses
for scripts (the project's agent is a stand-in here; the e2e tests run the real one)."""

import json
from io import StringIO
from unittest import mock

import pytest
from django.core.management import CommandError, call_command

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
NONE = Agent({16: UpgradeCheck(15, 16, [LACKING], []), 17: UpgradeCheck(15, 17, [LACKING], [])})


@pytest.fixture
def project(postgres):
    project = make_runtime_project(postgres, status=Status.ACTIVE_HEALTHY)
    project.host.capabilities = {"driver": "process", "postgres_versions": [15, 16, 17]}
    project.host.save()
    return project


def run(*args) -> str:
    out = StringIO()
    call_command("upgrade_postgres", *args, stdout=out)
    return out.getvalue()


def test_check_prints_the_targets_and_why_the_others_are_not_eligible(project):
    with mock.patch("hosts.agents.client_for", NOT_17):
        printed = run("--project", project.ref, "--check")
        platform = json.loads(run("--project", project.ref, "--check", "--json"))
    assert "eligible targets: 16 (logical)" in printed
    assert "not eligible: PostgreSQL 17 here lacks extension adminpack" in printed
    assert platform["eligible"] is True and platform["unsupported_extensions"] == ["adminpack"]
    assert not Operation.objects.exists()


def test_check_of_an_ineligible_project_exits_1(project):
    with mock.patch("hosts.agents.client_for", NONE), pytest.raises(CommandError) as refused:
        run("--project", project.ref, "--check")
    assert refused.value.returncode == 1


def test_an_ineligible_target_is_refused_with_exit_1_and_starts_nothing(project):
    with mock.patch("hosts.agents.client_for", NOT_17), pytest.raises(CommandError) as refused:
        run("--project", project.ref, "--to", "17", "--no-wait")
    assert refused.value.returncode == 1 and "adminpack" in str(refused.value)
    assert not Operation.objects.exists()


def test_an_eligible_target_is_queued(project):
    with mock.patch("hosts.agents.client_for", NOT_17):
        printed = run("--project", project.ref, "--to", "16", "--no-wait")
    operation = Operation.objects.get(project=project)
    assert (operation.kind, operation.params) == (Kind.UPGRADE, {"target_major": 16})
    assert f"operation {operation.pk}" in printed


def test_rollback_without_a_kept_cluster_is_refused(project):
    with pytest.raises(CommandError, match="no earlier major"):
        run("--project", project.ref, "--rollback", "--no-wait")


def test_a_fleet_with_nothing_below_the_target_is_refused(project):
    with pytest.raises(CommandError, match="none is below Postgres 15"):
        run("--template", "postgres", "--to", "15", "--no-wait")
