"""Authentication under /v1/ is `Authorization: Bearer` with the whole token (docs/architecture.md,
Management API: Tokens, Authentication): a token is found by its sha256, the first 8
characters shown on the tokens page are only a hint, and a session cookie authenticates
nothing, also for a user who holds tokens."""

import pytest
from django.test import Client

from orgs.models import Role
from tests.api_helpers import ApiClient, join, make_org, make_user, token_for
from tests.factories import make_host, make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    user = make_user("alice")
    join(user, make_org("Acme"), Role.OWNER)
    return user


def test_a_token_that_shares_only_the_visible_hint_is_refused(alice):
    token = token_for(alice)
    forged = token[:8] + ("0" if token[8] != "0" else "1") * 36
    assert forged != token and forged[:8] == token[:8]
    assert ApiClient(token).get("/v1/organizations").status_code == 200
    reply = ApiClient(forged).get("/v1/organizations")
    assert reply.status_code == 401
    assert reply.json()["message"].startswith("Unauthorized")


def test_a_browser_session_of_a_user_with_tokens_authenticates_nothing(alice, postgres):
    """The user has a usable token; their signed-in session still reaches nothing under /v1/."""
    make_project(organization=alice.memberships.get().organization, template_version=postgres, host=make_host())
    token_for(alice)
    browser = Client()
    browser.force_login(alice)
    for method, path in (("get", "/v1/projects"), ("get", "/v1/organizations"), ("post", "/v1/organizations")):
        reply = getattr(browser, method)(path, content_type="application/json")
        assert reply.status_code == 401, (method, path)
        assert reply.json()["message"].startswith("Unauthorized")
