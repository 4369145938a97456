"""Every writer of a project's status goes through the status gate, so each move leaves a
typed StatusChange naming what moved it: an operation's claim, settle or cut-off, the
health refresh, the reaper, the cleanup after a forced end."""

from datetime import timedelta

import pytest
from django.utils import timezone

from operations import cleanup, reaper
from operations.actions import cancel_operation, request_operation
from operations.health import ProbeOutcome, apply_outcomes
from operations.models import Kind, Operation, State
from projects.models import Project, Status, StatusCause
from tests.factories import make_host, make_project

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("enqueued")]


def changes(project) -> list[tuple]:
    return list(
        project.status_changes.order_by("at", "pk").values_list("old", "new", "cause", "operation_id", "reason")
    )


def test_a_claim_and_its_settle_each_record_their_move_with_the_operation():
    project = make_project(host=make_host(), status=Status.INACTIVE)
    operation = Operation.objects.claim(request_operation(project, Kind.START).pk)
    operation.settle(State.SUCCEEDED, status=Status.ACTIVE_HEALTHY)
    assert changes(project) == [
        (Status.INACTIVE, Status.COMING_UP, StatusCause.CLAIMED, operation.pk, ""),
        (Status.COMING_UP, Status.ACTIVE_HEALTHY, StatusCause.SETTLED, operation.pk, ""),
    ]


def test_a_cancel_while_running_records_the_cut_off(django_capture_on_commit_callbacks):
    project = make_project(host=make_host(), status=Status.ACTIVE_HEALTHY)
    operation = Operation.objects.claim(request_operation(project, Kind.RESTART).pk)
    with django_capture_on_commit_callbacks():
        assert cancel_operation(operation)
    assert changes(project)[-1] == (
        Status.RESTARTING,
        Status.UNKNOWN,
        StatusCause.CUT_OFF,
        operation.pk,
        "restart cancelled by staff",
    )


def test_the_health_refresh_records_a_flip_and_not_a_count_of_failures(settings):
    settings.BERTH_UNHEALTHY_AFTER = 2
    project = make_project(status=Status.ACTIVE_HEALTHY)
    failing = ProbeOutcome([{"name": "db", "status": "fail", "detail": "refused"}])
    apply_outcomes([(project, failing)])
    assert changes(project) == []
    project.refresh_from_db()
    apply_outcomes([(project, failing)])
    assert changes(project) == [
        (Status.ACTIVE_HEALTHY, Status.ACTIVE_UNHEALTHY, StatusCause.HEALTH, None, "db: fail (refused)")
    ]


def test_the_reaper_records_freeing_a_project_no_operation_moves():
    project = make_project(status=Status.GOING_DOWN)
    assert reaper.reap(timezone.now() + timedelta(seconds=1)) == 1
    assert changes(project) == [
        (
            Status.GOING_DOWN,
            Status.UNKNOWN,
            StatusCause.STUCK,
            None,
            "left in a transitional status with no operation running",
        )
    ]


def test_the_cleanup_records_what_it_found_running():
    project = make_project(host=make_host(), status=Status.UNKNOWN)
    operation = Operation.objects.create(
        project=project, kind=Kind.STOP, state=State.CANCELLED, deadline=timezone.now(), error_message="by staff"
    )
    cleanup.record(operation, Status.UNKNOWN, "stop cancelled; the runtime is stopped", Status.INACTIVE)
    project.refresh_from_db()
    assert (project.status, project.status_reason) == (Status.INACTIVE, "stop cancelled; the runtime is stopped")
    assert changes(project) == [
        (Status.UNKNOWN, Status.INACTIVE, StatusCause.CLEANUP, operation.pk, "stop cancelled; the runtime is stopped")
    ]
    assert Project.objects.get(pk=project.pk).status_changed_at is not None
