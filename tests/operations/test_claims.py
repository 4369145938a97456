"""Claims and the reaper: conditional updates that touch exactly one row."""

from datetime import timedelta

import pytest
from django.utils import timezone

from operations import reaper
from operations.models import Kind, Operation, State
from projects.models import Status
from tests.factories import make_host, make_project

pytestmark = pytest.mark.django_db


def queued(project, kind=Kind.PROVISION, deadline_in=60):
    return Operation.objects.create(
        project=project, kind=kind, deadline=timezone.now() + timedelta(seconds=deadline_in)
    )


def test_claim_moves_queued_to_running_and_sets_a_transitional_status():
    project = make_project()
    operation = Operation.objects.claim(queued(project).pk)
    assert operation.state == State.RUNNING
    project.refresh_from_db()
    assert project.status == Status.COMING_UP


def test_a_second_claim_of_the_same_operation_does_nothing():
    project = make_project()
    operation = queued(project)
    assert Operation.objects.claim(operation.pk) is not None
    assert Operation.objects.claim(operation.pk) is None


def test_a_queued_operation_past_its_deadline_cannot_be_claimed():
    operation = queued(make_project(), deadline_in=-1)
    assert Operation.objects.claim(operation.pk) is None


def test_reaper_times_out_a_running_operation_past_its_deadline():
    project = make_project()
    operation = Operation.objects.claim(queued(project).pk)
    Operation.objects.filter(pk=operation.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    assert reaper.reap() == 1
    operation.refresh_from_db()
    project.refresh_from_db()
    assert operation.state == State.TIMED_OUT
    assert "did not finish before the deadline" in operation.error_message
    assert project.status == Status.INIT_FAILED
    assert "timed out" in project.status_reason
    assert operation.events.filter(step="reaped").exists()


def test_reaper_moves_a_stopping_project_to_unknown_not_a_transitional_status():
    project = make_project(host=make_host())
    operation = Operation.objects.claim(queued(project, kind=Kind.STOP).pk)
    Operation.objects.filter(pk=operation.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    reaper.reap()
    project.refresh_from_db()
    assert project.status == Status.UNKNOWN


def test_reaper_leaves_operations_within_their_deadline_alone():
    operation = Operation.objects.claim(queued(make_project()).pk)
    assert reaper.reap() == 0
    operation.refresh_from_db()
    assert operation.state == State.RUNNING


def test_a_worker_finishing_after_the_reaper_does_not_overwrite_the_verdict():
    project = make_project()
    operation = Operation.objects.claim(queued(project).pk)
    Operation.objects.filter(pk=operation.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    reaper.reap()
    assert operation.settle(State.SUCCEEDED, status=Status.ACTIVE_HEALTHY) is False
    operation.refresh_from_db()
    project.refresh_from_db()
    assert operation.state == State.TIMED_OUT
    assert project.status == Status.INIT_FAILED


def test_reaper_frees_a_project_left_transitional_with_no_operation():
    project = make_project(status=Status.GOING_DOWN)
    reaper.reap()
    project.refresh_from_db()
    assert project.status == Status.UNKNOWN


def test_reaper_leaves_a_transitional_project_alone_while_an_operation_runs_for_it():
    # The stuck-project write is one UPDATE whose condition is "no unfinished operation",
    # so an operation claimed at any moment before it keeps its project's status.
    project = make_project(status=Status.GOING_DOWN)
    Operation.objects.create(
        project=project, kind=Kind.STOP, state=State.RUNNING, deadline=timezone.now() + timedelta(seconds=60)
    )
    assert reaper.reap() == 0
    project.refresh_from_db()
    assert project.status == Status.GOING_DOWN
