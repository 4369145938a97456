"""Signing in and out: staff land on the dashboard, other users on their tokens; anyone signs out."""

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def sign_in(client, username, **params):
    url = reverse("login") + (f"?next={params['next']}" if "next" in params else "")
    return client.post(url, {"username": username, "password": "pw-0123456789"})


@pytest.fixture
def people(django_user_model):
    django_user_model.objects.create_user("ops", password="pw-0123456789", is_staff=True)
    django_user_model.objects.create_user("dev", password="pw-0123456789")


def test_staff_land_on_the_projects_page(client, people):
    assert sign_in(client, "ops")["Location"] == reverse("dashboard:projects")


def test_a_user_who_is_not_staff_lands_on_their_tokens(client, people):
    response = sign_in(client, "dev")
    assert response["Location"] == reverse("dashboard:tokens")
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert f'class="brand" href="{reverse("dashboard:tokens")}"' in page.content.decode()


def test_next_still_wins_over_the_default(client, people):
    assert sign_in(client, "dev", next="/tokens/?page=2")["Location"] == "/tokens/?page=2"


def test_a_user_who_is_not_staff_can_sign_out(client, people):
    sign_in(client, "dev")
    response = client.post(reverse("logout"))
    assert response.status_code == 302 and response["Location"] == reverse("login")
    assert client.get("/tokens/").status_code == 302  # signed out: the login page again


def test_sign_out_rejects_get(client, people):
    sign_in(client, "ops")
    assert client.get(reverse("logout")).status_code == 405
