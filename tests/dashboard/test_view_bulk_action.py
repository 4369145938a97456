import pytest
from django.urls import reverse

from audit.models import AuditEntry
from operations.models import Kind, Operation
from tests.dashboard_helpers import placed_project, process_host, register_template
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def test_it_rejects_get(staff_client):
    assert staff_client.get(reverse("dashboard:bulk_action")).status_code == 405


def test_it_requires_the_csrf_token(client, staff_user):
    from django.test import Client

    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(staff_user)
    response = csrf_client.post(reverse("dashboard:bulk_action"), {"action": "stop", "refs": ["x"]})
    assert response.status_code == 403


def test_it_queues_one_operation_per_project_and_reports_each_refusal(staff_client, staff_user, tmp_path):
    version = register_template(tmp_path)
    host = process_host()
    first, second = placed_project(version, host), placed_project(version, host)
    never_placed = make_project(template_version=version)
    response = staff_client.post(
        reverse("dashboard:bulk_action"),
        {"action": "stop", "refs": [first.ref, second.ref, never_placed.ref, "ghostref"], "next": "/?status=INACTIVE"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == "/?status=INACTIVE"
    assert Operation.objects.filter(kind=Kind.STOP).count() == 2
    assert AuditEntry.objects.filter(action="operation.stop", actor=staff_user).count() == 2
    html = response.content.decode()
    assert "Stop queued for 2 project(s)" in html
    assert f"{never_placed.ref} has never been provisioned" in html
    assert "ghostref: no such project" in html


def test_it_reports_an_operation_already_in_progress(staff_client, tmp_path):
    project = placed_project(register_template(tmp_path), process_host())
    staff_client.post(reverse("dashboard:bulk_action"), {"action": "restart", "refs": [project.ref]})
    response = staff_client.post(
        reverse("dashboard:bulk_action"), {"action": "stop", "refs": [project.ref]}, follow=True
    )
    assert "already in progress" in response.content.decode()
    assert project.operations.filter(kind=Kind.STOP).count() == 0


def test_it_says_when_nothing_was_selected(staff_client):
    response = staff_client.post(reverse("dashboard:bulk_action"), {"action": "stop"}, follow=True)
    assert "Select at least one project" in response.content.decode()


def test_it_never_redirects_off_site(staff_client):
    response = staff_client.post(
        reverse("dashboard:bulk_action"), {"action": "stop", "refs": ["x"], "next": "https://evil.example/"}
    )
    assert response.url == reverse("dashboard:projects")


def test_it_refuses_a_resync_of_a_project_on_the_latest_version(staff_client, tmp_path):
    project = placed_project(register_template(tmp_path), process_host())
    response = staff_client.post(
        reverse("dashboard:bulk_action"), {"action": "resync", "refs": [project.ref]}, follow=True
    )
    assert "already on the latest version" in response.content.decode()
