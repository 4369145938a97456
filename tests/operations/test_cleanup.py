"""After a forced end (cancel, mark failed, reaper): the operation's agent command is stopped,
what it started is stopped, and the project's status says what really runs."""

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import module_loading, timezone

from operations import reaper, tasks
from operations.actions import cancel_operation, fail_operation, request_operation
from operations.creation import create_project
from operations.models import Kind, Operation, State
from operations.runner import OperationRun
from projects.models import DesiredState, Project, Status
from tests.operations.test_runner import ScriptedAgent, provision

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent_script(settings):
    """A scripted agent; tasks enqueued on commit run at once, as a worker would run them."""
    settings.BERTH_HEALTH_POLL_INITIAL = 0.01
    settings.BERTH_HEALTH_POLL_MAX = 0.02
    script = ScriptedAgent()
    enqueued = []

    def run_now(func, *args, **kwargs):
        enqueued.append(func)
        if func != "operations.tasks.run_operation":
            module_loading.import_string(func)(*args)

    with mock.patch("hosts.agents.client_for", script), mock.patch("django_q.tasks.async_task", run_now):
        script.enqueued = enqueued
        yield script


def claimed(project, kind):
    operation = request_operation(project, kind)
    return Operation.objects.claim(operation.pk)


def test_cancelling_a_running_provisioning_stops_its_command_and_its_runtime(
    agent_script, host, staff_user, django_capture_on_commit_callbacks
):
    project = create_project(name="Cancelled", postgres_major=15, template="postgres")
    operation = Operation.objects.claim(project.operations.get().pk)
    run = OperationRun(operation)
    run.place()
    run.lease()
    run.push_files()
    run.bring_up()
    agent_script.calls.clear()

    with django_capture_on_commit_callbacks(execute=True):
        assert cancel_operation(operation, actor=staff_user) is True

    operation.refresh_from_db()
    project.refresh_from_db()
    assert operation.state == State.CANCELLED
    assert [c[0] for c in agent_script.calls] == ["cancel", "down", "status"]
    assert agent_script.called("cancel") == [("cancel", project.ref, str(operation.pk))]
    assert project.status == Status.INIT_FAILED
    assert project.status_reason.endswith("its runtime is stopped")
    assert "cleanup" in operation.events.values_list("step", flat=True)


def test_the_worker_starts_nothing_after_the_cancel_and_its_late_verdict_is_dropped(
    agent_script, host, django_capture_on_commit_callbacks
):
    project = create_project(name="Late", postgres_major=15, template="postgres")
    operation = Operation.objects.claim(project.operations.get().pk)
    with django_capture_on_commit_callbacks(execute=True):
        cancel_operation(operation)
    agent_script.calls.clear()

    OperationRun(operation).run()

    operation.refresh_from_db()
    assert operation.state == State.CANCELLED and operation.error_code == "cancelled"
    assert not agent_script.called("up"), "no command after the cancel"
    assert not operation.settle(State.SUCCEEDED, status=Status.ACTIVE_HEALTHY)
    assert Project.objects.get(pk=project.pk).status == Status.INIT_FAILED


def test_the_agent_command_names_its_operation(host):
    from hosts.agents import client_for

    project = create_project(name="Named", postgres_major=15, template="postgres")
    operation = project.operations.get()
    assert client_for(host, deadline=5, operation=operation).operation == str(operation.pk)


def test_a_cancelled_restart_leaves_a_running_runtime_running_and_says_so(
    agent_script, host, django_capture_on_commit_callbacks
):
    project, _ = provision(host)
    operation = claimed(project, Kind.RESTART)
    agent_script.calls.clear()
    with django_capture_on_commit_callbacks(execute=True):
        cancel_operation(operation)
    project.refresh_from_db()
    assert not agent_script.called("down"), "a runtime meant to run is not taken offline"
    assert project.status == Status.UNKNOWN
    assert "the runtime is running" in project.status_reason
    assert project.desired_state == DesiredState.RUNNING


def test_a_reaped_provisioning_is_stopped_and_its_status_says_so(
    agent_script, host, django_capture_on_commit_callbacks
):
    project = create_project(name="Reaped", postgres_major=15, template="postgres")
    operation = Operation.objects.claim(project.operations.get().pk)
    run = OperationRun(operation)
    run.place()
    run.lease()
    run.bring_up()
    agent_script.calls.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert reaper.reap(now=timezone.now() + timedelta(hours=1)) >= 1
    project.refresh_from_db()
    assert Operation.objects.get(pk=operation.pk).state == State.TIMED_OUT
    assert agent_script.called("down")
    assert project.status == Status.INIT_FAILED
    assert project.status_reason.endswith("its runtime is stopped")


def test_a_runtime_the_agent_could_not_stop_is_recorded_as_running(
    agent_script, host, staff_user, django_capture_on_commit_callbacks
):
    from agent.client import AgentTimeout

    project = create_project(name="Stubborn", postgres_major=15, template="postgres")
    operation = Operation.objects.claim(project.operations.get().pk)
    run = OperationRun(operation)
    run.place()
    run.lease()
    run.bring_up()
    with (
        mock.patch.object(ScriptedAgent, "down", side_effect=AgentTimeout("down took too long")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        fail_operation(operation, actor=staff_user, reason="worker gone")
    project.refresh_from_db()
    assert project.status == Status.INIT_FAILED
    assert "may still run" in project.status_reason


def test_nothing_is_touched_once_a_later_operation_owns_the_runtime(agent_script, host):
    project, _ = provision(host)
    operation = claimed(project, Kind.RESTART)
    Operation.objects.filter(pk=operation.pk).update(state=State.FAILED)
    request_operation(project, Kind.STOP)
    agent_script.calls.clear()
    assert tasks.clean_up(operation.pk) is False
    assert agent_script.calls == []


def test_a_queued_operation_cancelled_or_reaped_needs_no_cleanup(
    agent_script, host, django_capture_on_commit_callbacks
):
    project, _ = provision(host)
    agent_script.enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        cancel_operation(request_operation(project, Kind.STOP))
        request_operation(project, Kind.RESTART)
        reaper.reap(now=timezone.now() + timedelta(days=1))
    assert "operations.tasks.clean_up" not in agent_script.enqueued
