import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry
from operations.models import Kind, Operation, State
from tests.dashboard_helpers import process_host
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def operation(kind=Kind.START, state=State.QUEUED, **project_fields):
    project = make_project(**project_fields)
    return Operation.objects.create(project=project, kind=kind, state=state, deadline=timezone.now())


def test_it_rejects_post(staff_client):
    assert staff_client.post(reverse("dashboard:operations")).status_code == 405


def test_it_shows_an_empty_state(staff_client):
    assert b"No operation matches" in staff_client.get(reverse("dashboard:operations")).content


def test_it_filters_by_state_kind_and_host(staff_client):
    queued = operation(host=process_host(name="east"))
    failed = operation(kind=Kind.STOP, state=State.FAILED)

    def refs(**params):
        html = staff_client.get(reverse("dashboard:operations"), params).content.decode()
        return {op.project.ref for op in (queued, failed) if op.project.ref in html}

    assert refs(state="unfinished") == {queued.project.ref}
    assert refs(state="failed") == {failed.project.ref}
    assert refs(kind="stop") == {failed.project.ref}
    assert refs(host="east") == {queued.project.ref}


def test_the_table_polls_while_something_is_unfinished_and_then_answers_286(staff_client):
    op = operation()
    page = staff_client.get(reverse("dashboard:operations")).content.decode()
    assert 'hx-trigger="every 2s"' in page
    headers = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "operations-table"}
    assert staff_client.get(reverse("dashboard:operations"), **headers).status_code == 200
    Operation.objects.filter(pk=op.pk).update(state=State.SUCCEEDED)
    assert staff_client.get(reverse("dashboard:operations"), **headers).status_code == 286


def test_cancel_rejects_get(staff_client):
    op = operation()
    assert staff_client.get(reverse("dashboard:cancel_operation", args=[op.pk])).status_code == 405


def test_cancel_cancels_a_queued_operation_and_audits(staff_client, staff_user):
    op = operation()
    response = staff_client.post(reverse("dashboard:cancel_operation", args=[op.pk]), follow=True)
    op.refresh_from_db()
    assert op.state == State.CANCELLED
    assert AuditEntry.objects.filter(action="operation.cancel", actor=staff_user).exists()
    assert "Cancelled" in response.content.decode()


def test_cancel_cancels_a_running_operation_and_queues_the_cleanup(staff_client, django_capture_on_commit_callbacks):
    from unittest import mock

    op = operation(state=State.RUNNING, host=process_host())
    assert f"/operations/{op.pk}/cancel/" in staff_client.get(reverse("dashboard:operations")).content.decode()
    with mock.patch("django_q.tasks.async_task") as enqueued, django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(reverse("dashboard:cancel_operation", args=[op.pk]), follow=True)
    assert "its agent command and what it started are being stopped" in response.content.decode()
    op.refresh_from_db()
    assert op.state == State.CANCELLED
    assert enqueued.call_args.args == ("operations.tasks.clean_up", op.pk), "no agent call from the request"


def test_cancel_refuses_a_finished_operation(staff_client):
    op = operation(state=State.SUCCEEDED)
    response = staff_client.post(reverse("dashboard:cancel_operation", args=[op.pk]), follow=True)
    assert "already ended" in response.content.decode()
    op.refresh_from_db()
    assert op.state == State.SUCCEEDED


def test_its_first_and_last_page_cost_the_same_queries_for_5_and_500_operations(staff_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from berth.keyset import AFTER, _encode
    from projects.models import Project

    staff_client.get(reverse("dashboard:operations"))  # session and user lookups warm up alike

    def queries(params):
        with CaptureQueriesContext(connection) as captured:
            assert staff_client.get(reverse("dashboard:operations"), params).status_code == 200
        return len(captured)

    def queries_for(count):
        Operation.objects.all().delete()
        version = make_project().template_version
        host = process_host()
        projects = Project.objects.bulk_create(
            Project(name=f"P{n}", postgres_major=15, template=version.name, template_version=version, host=host)
            for n in range(count)
        )
        Operation.objects.bulk_create(
            Operation(project=p, kind=Kind.START, state=State.SUCCEEDED, deadline=timezone.now()) for p in projects
        )
        second_oldest = Operation.objects.order_by("created_at", "pk")[1]
        last = {"cursor": _encode(AFTER, second_oldest, [("created_at", True), ("pk", True)])}
        assert staff_client.get(reverse("dashboard:operations"), last).content.decode().count("opstate-succeeded") == 1
        return queries({}), queries(last), queries({"state": "succeeded", **last})

    assert queries_for(5) == queries_for(500)
