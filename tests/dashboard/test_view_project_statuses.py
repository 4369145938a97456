"""The projects table's status partial: out-of-band cells for the refs it is asked about."""

import pytest
from django.urls import reverse

from projects.models import Status
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def test_it_rejects_post(staff_client):
    assert staff_client.post(reverse("dashboard:project_statuses")).status_code == 405


def test_it_keeps_polling_while_a_project_is_in_flight(staff_client):
    project = make_project(status=Status.COMING_UP)
    response = staff_client.get(reverse("dashboard:project_statuses"), {"ref": project.ref})
    assert response.status_code == 200
    html = response.content.decode()
    assert f'id="status-{project.ref}"' in html and 'hx-swap-oob="true"' in html
    assert 'hx-trigger="every 2s"' in html


def test_it_answers_286_once_everything_settled(staff_client):
    project = make_project(status=Status.ACTIVE_HEALTHY)
    response = staff_client.get(reverse("dashboard:project_statuses"), {"ref": project.ref})
    assert response.status_code == 286
    html = response.content.decode()
    assert "Active Healthy" in html or "ACTIVE_HEALTHY" in html
    assert "hx-trigger" not in html


def test_it_ignores_unknown_refs(staff_client):
    response = staff_client.get(reverse("dashboard:project_statuses"), {"ref": "nosuchref"})
    assert response.status_code == 286
