"""The dashboard's admin actions: retry a project, mark an operation failed."""

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry
from operations.models import Kind, Operation, State
from projects.models import Status
from tests.dashboard_helpers import placed_project, process_host, register_template

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(tmp_path):
    return placed_project(register_template(tmp_path), process_host())


def test_retry_queues_the_failed_operation_again(admin_client_logged_in, project):
    Operation.objects.create(project=project, kind=Kind.RESTART, state=State.FAILED, deadline=timezone.now())
    admin_client_logged_in.post(
        reverse("admin:projects_project_changelist"), {"action": "retry", "_selected_action": [project.pk]}
    )
    assert project.operations.get(state=State.QUEUED).attempt == 2


def test_mark_failed_settles_a_running_operation_and_frees_the_project(admin_client_logged_in, superuser, project):
    operation = Operation.objects.create(
        project=project, kind=Kind.RESTART, state=State.RUNNING, deadline=timezone.now()
    )
    project.status = Status.RESTARTING
    project.save()
    finished = project.operations.get(kind=Kind.PROVISION)
    admin_client_logged_in.post(
        reverse("admin:operations_operation_changelist"),
        {"action": "mark_failed", "_selected_action": [operation.pk, finished.pk]},
    )
    operation.refresh_from_db()
    finished.refresh_from_db()
    project.refresh_from_db()
    assert operation.state == State.FAILED and operation.error_code == "marked_failed"
    assert finished.state == State.SUCCEEDED
    assert project.status == Status.UNKNOWN
    assert AuditEntry.objects.get(action="operation.mark_failed").actor == superuser


def test_cancel_stops_a_running_operation_through_the_cancel_verb(
    admin_client_logged_in, superuser, project, django_capture_on_commit_callbacks
):
    from unittest import mock

    operation = Operation.objects.create(
        project=project, kind=Kind.RESTART, state=State.RUNNING, deadline=timezone.now()
    )
    with mock.patch("django_q.tasks.async_task") as enqueued, django_capture_on_commit_callbacks(execute=True):
        admin_client_logged_in.post(
            reverse("admin:operations_operation_changelist"), {"action": "cancel", "_selected_action": [operation.pk]}
        )
    operation.refresh_from_db()
    assert operation.state == State.CANCELLED
    assert enqueued.call_args.args == ("operations.tasks.clean_up", operation.pk)
    assert AuditEntry.objects.get(action="operation.cancel").detail["state_before"] == "running"
