"""A later step of an operation ends within the operation's deadline even when one agent call
may take longer than the time left: the agent answers placement and the file push, then hangs.

Each test runs the operation in this process against a stand-in agent on loopback, with an
operation deadline shorter than BERTH_AGENT_CALL_DEADLINE, and measures how long it took.
"""

import time

import pytest
from django.utils import timezone

from operations import tasks
from operations.creation import create_project
from operations.models import State
from projects.models import TRANSITIONAL_STATUSES, Project
from templating.actions import sync_templates
from tests.factories import make_host
from tests.stack import free_port_range
from tests.standin_agent import StandInAgent

pytestmark = pytest.mark.django_db

CALL_DEADLINE = 12.0  # one agent call may take this long: twice what the operation has
MARGIN_S = 2.0


@pytest.fixture
def short_operations(settings):
    settings.BERTH_AGENT_CALL_DEADLINE = CALL_DEADLINE
    settings.BERTH_HEALTH_POLL_INITIAL = 0.2
    settings.BERTH_HEALTH_POLL_MAX = 0.5
    # The runner keeps this much of the deadline back to stop a runtime that never became
    # healthy; shortened so the tests take seconds, still longer than no call.
    settings.BERTH_OPERATION_CLEANUP_RESERVE = 3.0
    return settings


@pytest.fixture
def standin(request):
    agents = []

    def start(answers, **kwargs):
        agent = StandInAgent(answers, **kwargs)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.close()


def provision_on(agent, deadline: int, settings):
    """A never-reported host on `agent`, a project placed there by the operation; runs it and times it."""
    sync_templates()
    first = free_port_range(20)
    make_host(agent_url=agent.url, port_range_start=first, port_range_end=first + 19, block_size=20)
    settings.BERTH_OPERATION_DEADLINE = deadline
    project = create_project(name="Later steps", postgres_major=15, template="postgres")
    operation = project.operations.get()
    started = time.monotonic()
    assert tasks.run_operation(operation.pk) is True
    took = time.monotonic() - started
    operation.refresh_from_db()
    project = Project.objects.get(pk=project.pk)
    return project, operation, took


def assert_ended_within(operation, project, took, deadline):
    assert took <= deadline + MARGIN_S, f"the operation ran {took:.1f}s past its {deadline}s deadline"
    assert operation.state in (State.FAILED, State.TIMED_OUT)
    assert operation.finished_at <= operation.deadline + timezone.timedelta(seconds=MARGIN_S)
    assert project.status not in TRANSITIONAL_STATUSES


def test_an_up_that_never_answers_ends_within_the_operation_deadline(standin, short_operations):
    agent = standin({"info", "files"})
    project, operation, took = provision_on(agent, 5, short_operations)
    # Creation asks the never-reported host for its info, then the operation places and pushes.
    assert agent.calls[agent.calls.index("files") + 1] == "up", agent.calls
    assert_ended_within(operation, project, took, 5)
    assert operation.error_code == "agent_timeout"


def test_a_health_probe_that_never_answers_ends_within_the_operation_deadline(standin, short_operations):
    agent = standin({"info", "files", "up"})
    project, operation, took = provision_on(agent, 6, short_operations)
    assert "health" in agent.calls, "the operation reached the health step"
    assert_ended_within(operation, project, took, 6)


def test_a_stop_after_failing_probes_that_never_answers_ends_within_the_operation_deadline(standin, short_operations):
    agent = standin({"info", "files", "up", "health"}, probe_status="fail")
    project, operation, took = provision_on(agent, 6, short_operations)
    why = (agent.calls, operation.error_code, operation.error_message)
    assert agent.calls.count("health") >= 1 and agent.calls[-1] == "down", why
    assert_ended_within(operation, project, took, 6)
