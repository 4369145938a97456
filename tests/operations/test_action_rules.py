"""Which actions a project's state allows is written once (operations.actions.refusal): the
verbs refuse with it, and the project page leaves out exactly what it refuses, with the
same words."""

import pytest
from django.utils import timezone

from operations.actions import (
    OperationRefused,
    cancel_operation,
    refusal,
    request_operation,
    retry_project,
    unavailable_actions,
)
from operations.models import Kind, Operation, State
from projects.models import DesiredState, Status
from tests.factories import make_host, make_project

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("enqueued")]

# What the page adds to the verbs' refusals: a restart that would change nothing.
HINTS = ("stopped: start it instead",)
KINDS = (Kind.START, Kind.STOP, Kind.RESTART, Kind.RESYNC, Kind.DELETE)
STATES = [
    (Status.ACTIVE_HEALTHY, DesiredState.RUNNING, True),
    (Status.INACTIVE, DesiredState.STOPPED, True),
    (Status.INIT_FAILED, DesiredState.RUNNING, False),  # never placed
    (Status.UNKNOWN, DesiredState.DELETED, True),  # its delete failed
    (Status.REMOVED, DesiredState.DELETED, True),
]


@pytest.mark.parametrize(("status", "desired", "placed"), STATES)
def test_the_page_leaves_out_exactly_what_the_verbs_refuse_with_their_reason(status, desired, placed):
    project = make_project(status=status, desired_state=desired, host=make_host() if placed else None)
    why_not = unavailable_actions(project, last=None, in_progress=False, update_available=True)
    for kind in KINDS:
        reason = refusal(project, kind)
        if reason:
            assert why_not[kind] == reason
            with pytest.raises(OperationRefused, match=f"^{project.ref} {reason}$"):
                request_operation(project, kind)
        else:
            assert kind not in why_not or why_not[kind] in HINTS
            cancel_operation(request_operation(project, kind))


def test_a_failed_delete_is_offered_again_and_retried():
    project = make_project(status=Status.UNKNOWN, desired_state=DesiredState.DELETED, host=make_host())
    failed = Operation.objects.create(project=project, kind=Kind.DELETE, state=State.FAILED, deadline=timezone.now())
    why_not = unavailable_actions(project, last=failed, in_progress=False, update_available=True)
    assert "retry" not in why_not and Kind.DELETE not in why_not
    assert why_not[Kind.START] == "is being deleted"
    assert retry_project(project).kind == Kind.DELETE


def test_nothing_is_offered_while_an_operation_runs():
    project = make_project(status=Status.ACTIVE_HEALTHY, host=make_host())
    why_not = unavailable_actions(project, last=None, in_progress=True, update_available=True)
    assert set(why_not) == {*KINDS, "retry"}
