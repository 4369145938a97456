"""Marking an operation failed by hand: a conditional settle, as the reaper's, with an audit row."""

import pytest
from django.utils import timezone

from audit.models import AuditEntry
from operations.actions import fail_operation
from operations.models import Kind, Operation, State
from projects.models import Status
from tests.factories import make_host, make_project

pytestmark = pytest.mark.django_db


def operation_of(kind, state, *, status):
    project = make_project(host=make_host(), status=status)
    return Operation.objects.create(project=project, kind=kind, state=state, deadline=timezone.now())


def test_it_fails_a_running_operation_and_moves_its_project_out_of_transit(staff_user):
    operation = operation_of(Kind.RESTART, State.RUNNING, status=Status.RESTARTING)
    assert fail_operation(operation, actor=staff_user, reason="worker machine died")
    operation.refresh_from_db()
    operation.project.refresh_from_db()
    assert (operation.state, operation.error_code) == (State.FAILED, "marked_failed")
    assert operation.error_message == "worker machine died" and operation.finished_at
    assert operation.project.status == Status.UNKNOWN
    assert "worker machine died" in operation.project.status_reason
    assert operation.events.get(step="marked_failed").level == "error"
    entry = AuditEntry.objects.get(action="operation.mark_failed")
    assert entry.actor == staff_user and entry.project == operation.project
    assert entry.detail == {"operation": operation.pk, "state_before": "running", "reason": "worker machine died"}


def test_it_leaves_a_failed_provisioning_init_failed(staff_user):
    operation = operation_of(Kind.PROVISION, State.RUNNING, status=Status.COMING_UP)
    fail_operation(operation, actor=staff_user, reason="stuck")
    operation.project.refresh_from_db()
    assert operation.project.status == Status.INIT_FAILED


def test_it_keeps_the_status_of_a_project_whose_queued_operation_never_started(staff_user):
    operation = operation_of(Kind.STOP, State.QUEUED, status=Status.ACTIVE_HEALTHY)
    assert fail_operation(operation, actor=None, label="manage.py", reason="not wanted")
    operation.project.refresh_from_db()
    assert operation.project.status == Status.ACTIVE_HEALTHY
    assert AuditEntry.objects.get(action="operation.mark_failed").actor_label == "manage.py"


def test_it_leaves_a_finished_operation_as_it_was(staff_user):
    operation = operation_of(Kind.START, State.SUCCEEDED, status=Status.ACTIVE_HEALTHY)
    assert not fail_operation(operation, actor=staff_user, reason="too late")
    operation.refresh_from_db()
    assert operation.state == State.SUCCEEDED and not operation.events.exists()
    assert not AuditEntry.objects.exists()


def test_it_drops_the_late_verdict_of_the_worker_it_replaced(staff_user):
    operation = operation_of(Kind.START, State.RUNNING, status=Status.COMING_UP)
    fail_operation(operation, actor=staff_user, reason="worker gone")
    assert not operation.settle(State.SUCCEEDED, status=Status.ACTIVE_HEALTHY)
    operation.refresh_from_db()
    operation.project.refresh_from_db()
    assert operation.state == State.FAILED and operation.project.status == Status.UNKNOWN
