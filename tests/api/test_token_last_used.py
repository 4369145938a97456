"""`last_used_at` is written at most once a minute per token (docs/architecture.md, Management
API: Tokens), so a busy token costs no write per request, and the tokens page still says when
it was last used to the minute."""

from datetime import timedelta

import pytest
from django.utils import timezone

from orgs.models import AccessToken
from tests.api_helpers import ApiClient, make_user, token_for

pytestmark = pytest.mark.django_db


def test_last_used_is_written_at_most_once_a_minute():
    token = token_for(make_user("alice"))
    api = ApiClient(token)
    row = AccessToken.objects.get()
    assert row.last_used_at is None

    assert api.get("/v1/organizations").status_code == 200
    first = AccessToken.objects.get().last_used_at
    assert first is not None
    assert api.get("/v1/organizations").status_code == 200
    assert AccessToken.objects.get().last_used_at == first  # within the minute: not written again

    half_a_minute_ago = timezone.now() - timedelta(seconds=30)
    AccessToken.objects.update(last_used_at=half_a_minute_ago)
    api.get("/v1/organizations")
    assert AccessToken.objects.get().last_used_at == half_a_minute_ago

    over_a_minute_ago = timezone.now() - timedelta(seconds=61)
    AccessToken.objects.update(last_used_at=over_a_minute_ago)
    api.get("/v1/organizations")
    assert AccessToken.objects.get().last_used_at > over_a_minute_ago + timedelta(seconds=60)
