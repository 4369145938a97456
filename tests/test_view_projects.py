import pytest
from django.urls import reverse

from tests.factories import make_project

pytestmark = pytest.mark.django_db


def test_it_sends_anonymous_users_to_login(client):
    response = client.get(reverse("dashboard:projects"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_it_forbids_signed_in_non_staff(client, django_user_model):
    user = django_user_model.objects.create_user("visitor", password="pw")
    client.force_login(user)
    assert client.get(reverse("dashboard:projects")).status_code == 403


def test_it_shows_the_empty_state(staff_client):
    response = staff_client.get(reverse("dashboard:projects"))
    assert response.status_code == 200
    assert b"No projects yet" in response.content


def test_it_lists_projects(staff_client):
    project = make_project(name="<b>Orders</b>")
    response = staff_client.get(reverse("dashboard:projects"))
    assert project.ref.encode() in response.content
    assert b"&lt;b&gt;Orders&lt;/b&gt;" in response.content


def test_it_loads_htmx_from_django_htmx_and_sends_csrf_in_hx_headers(staff_client):
    response = staff_client.get(reverse("dashboard:projects"))
    html = response.content.decode()
    assert "/static/django-htmx/" in html or "htmx" in html
    assert 'hx-headers=\'{"X-CSRFToken": "' in html
    assert "cdn" not in html.lower()


def test_login_page_renders_for_anonymous(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b"Sign in to Berth" in response.content
