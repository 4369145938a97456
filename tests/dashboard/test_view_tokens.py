"""The access tokens page: every signed-in user manages their own tokens, shown once."""

import pytest

from audit.models import AuditEntry
from orgs.actions import create_token
from orgs.models import TOKEN_PATTERN, AccessToken, token_digest
from tests.api_helpers import ApiClient, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def member(client):
    user = make_user("dev")  # not staff: the rest of the dashboard is closed to them
    client.force_login(user)
    return user


def test_a_non_staff_user_sees_their_tokens_page_but_no_staff_page(client, member):
    assert client.get("/tokens/").status_code == 200
    assert client.get("/").status_code == 403


def test_anonymous_users_are_sent_to_sign_in(client):
    response = client.get("/tokens/")
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_it_creates_a_token_shown_once_and_stored_as_a_hash(client, member):
    response = client.post("/tokens/", {"name": "laptop", "expires_days": "30"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    plaintext = response.context["created"]
    assert TOKEN_PATTERN.fullmatch(plaintext)
    assert plaintext in response.content.decode()
    token = AccessToken.objects.get(user=member)
    assert token.digest == token_digest(plaintext)
    assert token.expires_at is not None
    assert ApiClient(plaintext).get("/v1/organizations").status_code == 200
    assert plaintext not in client.get("/tokens/").content.decode()
    assert AuditEntry.objects.filter(action="token.create", actor=member).exists()


def test_it_shows_form_errors_and_creates_nothing(client, member):
    response = client.post("/tokens/", {"name": "", "expires_days": "0"})
    assert response.status_code == 200
    assert response.context["form"].errors
    assert not AccessToken.objects.exists()


def test_it_revokes_the_users_own_token(client, member):
    token, plaintext = create_token(member, name="laptop")
    response = client.post(f"/tokens/{token.pk}/revoke/")
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert ApiClient(plaintext).get("/v1/organizations").status_code == 401


def test_nobody_revokes_another_users_token(client, member):
    token, _ = create_token(make_user("other"), name="theirs")
    assert client.post(f"/tokens/{token.pk}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_revoking_needs_a_post(client, member):
    token, _ = create_token(member, name="laptop")
    assert client.get(f"/tokens/{token.pk}/revoke/").status_code == 405
