"""A project being deleted (its delete requested, here one that failed) refuses every kind of
operation but delete, and keeps its delete intent (docs/architecture.md, "Actions follow
state"; the Management API's pause and restore go through the same verb)."""

import pytest
from django.utils import timezone

from operations.actions import OperationRefused, request_operation
from operations.models import Kind, Operation, State
from orgs.models import Role
from projects.models import DesiredState, Status
from tests.api_helpers import api_as, join, make_org, make_user
from tests.factories import make_host, make_project

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("enqueued")]


@pytest.fixture
def deleting(postgres):
    """A project whose delete failed: nothing in flight, its desired state still deleted."""
    project = make_project(
        template_version=postgres, status=Status.UNKNOWN, desired_state=DesiredState.DELETED, host=make_host()
    )
    Operation.objects.create(project=project, kind=Kind.DELETE, state=State.FAILED, deadline=timezone.now())
    return project


@pytest.mark.parametrize("kind", [kind for kind in Kind if kind != Kind.DELETE])
def test_it_refuses_every_operation_but_delete_while_deleting(deleting, kind):
    with pytest.raises(OperationRefused, match="is being deleted"):
        request_operation(deleting, kind)
    deleting.refresh_from_db()
    assert deleting.desired_state == DesiredState.DELETED
    assert list(deleting.operations.values_list("kind", flat=True)) == [Kind.DELETE]


def test_it_takes_the_delete_again(deleting):
    assert request_operation(deleting, Kind.DELETE).state == State.QUEUED


@pytest.mark.parametrize("action", ["pause", "restore"])
def test_the_api_refuses_pause_and_restore_while_deleting_and_keeps_the_delete_intent(deleting, action):
    alice = make_user("alice")
    org = make_org("Acme")
    join(alice, org, Role.OWNER)
    deleting.organization = org
    deleting.save(update_fields=["organization"])
    reply = api_as(alice).post(f"/v1/projects/{deleting.ref}/{action}")
    assert reply.status_code == 400
    assert reply.json() == {"message": f"{deleting.ref} is being deleted"}
    deleting.refresh_from_db()
    assert deleting.desired_state == DesiredState.DELETED
    assert deleting.operations.count() == 1
