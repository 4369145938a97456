"""Requesting, cancelling and retrying operations: one transaction, one audit row, enqueue on commit."""

import pytest

from audit.models import AuditEntry
from operations.actions import OperationInProgress, OperationRefused, cancel_operation, request_operation, retry_project
from operations.models import Kind, Operation, State
from projects.models import DesiredState, Status
from tests.factories import make_host, make_project

pytestmark = pytest.mark.django_db


def test_it_queues_an_operation_and_enqueues_on_commit(enqueued, staff_user, django_capture_on_commit_callbacks):
    project = make_project(host=make_host())
    with django_capture_on_commit_callbacks(execute=True):
        operation = request_operation(project, Kind.STOP, actor=staff_user)
    assert operation.state == State.QUEUED
    enqueued.assert_called_once()
    assert enqueued.call_args.args == ("operations.tasks.run_operation", operation.pk)
    operation.refresh_from_db()
    assert operation.task_id == "task-1"
    project.refresh_from_db()
    assert project.desired_state == DesiredState.STOPPED
    entry = AuditEntry.objects.get(action="operation.stop")
    assert entry.actor == staff_user and entry.project == project


def test_it_stamps_the_project_s_last_activity_with_the_request(enqueued):
    project = make_project(host=make_host())
    created = project.last_activity_at
    operation = request_operation(project, Kind.RESTART)
    project.refresh_from_db()
    assert project.last_activity_at == operation.created_at > created
    refused = make_project(status=Status.REMOVED)
    before = refused.last_activity_at
    with pytest.raises(OperationRefused):
        request_operation(refused, Kind.START)
    refused.refresh_from_db()
    assert refused.last_activity_at == before


def test_it_does_not_enqueue_when_the_transaction_rolls_back(enqueued, django_capture_on_commit_callbacks):
    from django.db import transaction

    project = make_project(host=make_host())
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            request_operation(project, Kind.STOP)
            raise RuntimeError("rolled back")
    assert callbacks == []
    enqueued.assert_not_called()
    assert not Operation.objects.exists()


@pytest.mark.postgres
def test_it_refuses_a_second_request_while_one_is_unfinished(enqueued):
    project = make_project(host=make_host())
    request_operation(project, Kind.STOP)
    with pytest.raises(OperationInProgress, match="already in progress"):
        request_operation(project, Kind.START)
    assert project.operations.count() == 1
    assert AuditEntry.objects.filter(action="operation.start").count() == 0


def test_it_refuses_lifecycle_actions_on_an_unplaced_project(enqueued):
    project = make_project()
    with pytest.raises(OperationRefused, match="never been provisioned"):
        request_operation(project, Kind.START)


def test_it_refuses_anything_on_a_removed_project(enqueued):
    project = make_project(host=make_host(), status=Status.REMOVED)
    with pytest.raises(OperationRefused, match="is removed"):
        request_operation(project, Kind.DELETE)


def test_cancel_only_touches_a_queued_operation(enqueued):
    project = make_project(host=make_host())
    operation = request_operation(project, Kind.STOP)
    assert cancel_operation(operation) is True
    operation.refresh_from_db()
    assert operation.state == State.CANCELLED
    assert cancel_operation(operation) is False


def test_retry_repeats_the_failed_kind_with_the_next_attempt(enqueued):
    project = make_project(host=make_host())
    failed = request_operation(project, Kind.PROVISION)
    Operation.objects.filter(pk=failed.pk).update(state=State.FAILED)
    retry = retry_project(project)
    assert retry.kind == Kind.PROVISION
    assert retry.attempt == 2
    assert retry.params["retry_of"] == failed.pk


def test_retry_refuses_when_the_last_operation_succeeded(enqueued):
    project = make_project(host=make_host())
    done = request_operation(project, Kind.STOP)
    Operation.objects.filter(pk=done.pk).update(state=State.SUCCEEDED)
    with pytest.raises(OperationRefused, match="nothing to retry"):
        retry_project(project)


@pytest.mark.parametrize("kind", [Kind.DELETE, Kind.STOP])
def test_cancel_gives_the_project_back_its_desired_state(enqueued, kind):
    project = make_project(host=make_host(), status=Status.ACTIVE_HEALTHY)
    operation = request_operation(project, kind)
    assert cancel_operation(operation) is True
    project.refresh_from_db()
    assert project.desired_state == DesiredState.RUNNING
    # A cancelled delete no longer refuses other actions as "being deleted".
    assert request_operation(project, Kind.RESTART).kind == Kind.RESTART


def test_retry_refuses_a_cancelled_operation(enqueued):
    project = make_project(host=make_host())
    operation = request_operation(project, Kind.STOP)
    cancel_operation(operation)
    with pytest.raises(OperationRefused, match="nothing to retry"):
        retry_project(project)


@pytest.mark.parametrize("state", [State.FAILED, State.TIMED_OUT])
def test_retry_accepts_failed_and_timed_out_operations(enqueued, state):
    project = make_project(host=make_host())
    operation = request_operation(project, Kind.STOP)
    Operation.objects.filter(pk=operation.pk).update(state=state)
    assert retry_project(project).kind == Kind.STOP
