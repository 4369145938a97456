"""What an operation found and did is kept in typed columns, and what decides reads them: a
cancel gives back the desired state the request replaced, a step that changed nothing gives
back the status the claim found, and a settle writes the outcome with the state. The events
are deleted before each decision here, so nothing can read them instead."""

import pytest

from operations.actions import cancel_operation, request_operation
from operations.models import Kind, Operation, OperationEvent, Outcome, State
from operations.runner import OperationRun
from projects.models import DesiredState, Project, Status
from tests.factories import make_host, make_project

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("enqueued")]


def placed(**fields):
    return make_project(host=make_host(), **fields)


def test_a_cancel_gives_back_the_desired_state_the_request_replaced_from_the_operation():
    project = placed(desired_state=DesiredState.STOPPED, status=Status.INACTIVE)
    operation = request_operation(project, Kind.START)
    assert operation.desired_before == DesiredState.STOPPED
    assert Project.objects.get(pk=project.pk).desired_state == DesiredState.RUNNING
    OperationEvent.objects.all().delete()
    assert cancel_operation(operation)
    assert Project.objects.get(pk=project.pk).desired_state == DesiredState.STOPPED


def test_a_claim_keeps_the_status_it_found_for_a_step_that_changes_nothing():
    project = placed(status=Status.ACTIVE_UNHEALTHY, status_reason="db: slow")
    operation = request_operation(project, Kind.RESYNC)
    claimed = Operation.objects.claim(operation.pk)
    assert (claimed.status_before, claimed.status_reason_before) == (Status.ACTIVE_UNHEALTHY, "db: slow")
    assert Project.objects.get(pk=project.pk).status == Status.UPGRADING
    OperationEvent.objects.all().delete()
    assert OperationRun(claimed).status_before_claim() == (Status.ACTIVE_UNHEALTHY, "db: slow")


def test_a_settle_writes_the_outcome_with_the_state():
    project = placed(status=Status.ACTIVE_HEALTHY)
    operation = Operation.objects.claim(request_operation(project, Kind.RESYNC).pk)
    assert operation.settle(
        State.SUCCEEDED, status=Status.ACTIVE_HEALTHY, result=Outcome.UPDATED, result_message="postgres r2: 1 written"
    )
    operation.refresh_from_db()
    assert (operation.state, operation.result, operation.result_message) == (
        State.SUCCEEDED,
        Outcome.UPDATED,
        "postgres r2: 1 written",
    )


def test_a_settle_refuses_a_field_that_is_no_outcome_and_settles_nothing():
    project = placed(status=Status.ACTIVE_HEALTHY)
    operation = Operation.objects.claim(request_operation(project, Kind.RESYNC).pk)
    with pytest.raises(TypeError, match="not an outcome of an operation: error_code_typo"):
        operation.settle(State.SUCCEEDED, status=Status.ACTIVE_HEALTHY, error_code_typo="x")
    operation.refresh_from_db()
    assert operation.state == State.RUNNING
