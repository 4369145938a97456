"""BERTH_QUEUE_DEADLINE and BERTH_OPERATION_DEADLINE are in seconds (README: 900 s, how long an
operation may wait for a worker; 600 s, how long one may run): a queued operation's deadline is
that many seconds after its request, a claimed one's after its claim, and the reaper fails it
as soon as they pass, so a lost task's project is not blocked for longer."""

from datetime import timedelta
from unittest import mock

import pytest

from operations.actions import request_operation
from operations.models import Kind, Operation, State
from operations.reaper import reap
from projects.models import Status
from tests.factories import make_host, make_project

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def lost_task():
    """The task is enqueued nowhere: no worker will ever pick the operation up."""
    with mock.patch("django_q.tasks.async_task", return_value="task") as async_task:
        yield async_task


def test_a_queued_operation_may_wait_the_queue_deadline_in_seconds(settings):
    settings.BERTH_QUEUE_DEADLINE = 90
    project = make_project(status=Status.ACTIVE_HEALTHY, host=make_host())
    operation = request_operation(project, Kind.STOP)
    assert operation.deadline - operation.created_at == pytest.approx(timedelta(seconds=90), abs=timedelta(seconds=5))


def test_the_reaper_fails_a_lost_task_once_the_queue_deadline_has_passed(settings):
    settings.BERTH_QUEUE_DEADLINE = 90
    project = make_project(status=Status.ACTIVE_HEALTHY, host=make_host())
    operation = request_operation(project, Kind.STOP)

    assert reap(now=operation.created_at + timedelta(seconds=80)) == 0
    operation.refresh_from_db()
    assert operation.state == State.QUEUED

    reap(now=operation.created_at + timedelta(seconds=100))
    operation.refresh_from_db()
    assert operation.state == State.TIMED_OUT
    assert "no worker picked it up" in operation.error_message


def test_a_claimed_operation_must_end_within_the_operation_deadline_in_seconds(settings):
    """README: BERTH_OPERATION_DEADLINE, 600 s, how long one operation may run before the reaper fails it."""
    settings.BERTH_OPERATION_DEADLINE = 120
    project = make_project(status=Status.ACTIVE_HEALTHY, host=make_host())
    claimed = Operation.objects.claim(request_operation(project, Kind.STOP).pk)
    assert claimed.deadline - claimed.started_at == pytest.approx(timedelta(seconds=120), abs=timedelta(seconds=5))

    assert reap(now=claimed.started_at + timedelta(seconds=110)) == 0
    reap(now=claimed.started_at + timedelta(seconds=130))
    claimed.refresh_from_db()
    assert claimed.state == State.TIMED_OUT


@pytest.mark.parametrize("kind", [Kind.BACKUP, Kind.RESTORE, Kind.VERIFY])
def test_an_operation_waiting_on_a_backup_job_gets_the_backup_deadline(settings, kind):
    """A restore of a large database outlives BERTH_OPERATION_DEADLINE: the backup kinds get
    BERTH_BACKUP_DEADLINE, and the reaper holds them to it."""
    settings.BERTH_OPERATION_DEADLINE = 120
    settings.BERTH_BACKUP_DEADLINE = 3600
    project = make_project(status=Status.ACTIVE_HEALTHY, host=make_host())
    claimed = Operation.objects.claim(request_operation(project, kind).pk)
    assert claimed.deadline - claimed.started_at == pytest.approx(timedelta(seconds=3600), abs=timedelta(seconds=5))

    Operation.objects.filter(pk=claimed.pk).update(heartbeat_at=claimed.started_at + timedelta(seconds=3590))
    assert reap(now=claimed.started_at + timedelta(seconds=600)) == 0
    claimed.refresh_from_db()
    assert claimed.state == State.RUNNING
    reap(now=claimed.started_at + timedelta(seconds=3610))
    claimed.refresh_from_db()
    assert claimed.state == State.TIMED_OUT


def test_the_reaper_ends_a_backup_kind_whose_worker_went_silent_long_before_its_deadline(settings):
    """A restore's deadline is hours away; its worker heartbeats at every poll of the agent's
    job, so one silent for longer than any step may take is gone, and the reaper ends it then."""
    settings.BERTH_OPERATION_DEADLINE = 120
    settings.BERTH_AGENT_CALL_DEADLINE = 30
    settings.BERTH_BACKUP_DEADLINE = 3600
    project = make_project(status=Status.ACTIVE_HEALTHY, host=make_host())
    claimed = Operation.objects.claim(request_operation(project, Kind.RESTORE).pk)
    start = claimed.started_at

    Operation.objects.filter(pk=claimed.pk).update(heartbeat_at=start + timedelta(seconds=100))
    assert reap(now=start + timedelta(seconds=200)) == 0, "heard from 100 s ago: still working"
    assert reap(now=start + timedelta(seconds=251)) >= 1
    claimed.refresh_from_db()
    assert claimed.state == State.TIMED_OUT
    assert "was not heard from" in claimed.error_message
    project.refresh_from_db()
    assert project.status != Status.RESTORING
