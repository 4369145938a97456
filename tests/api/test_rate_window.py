"""The rate limit's window, to the second: a fixed one-minute window per token (docs/architecture.md,
Management API), so a refusal's Retry-After is the seconds left until the minute ends, the
window ends exactly then, and a token whose row already holds an earlier window counts afresh.

The clock is the rate limit module's own (`ratelimit.time`), set by the test."""

from types import SimpleNamespace

import pytest

from api import ratelimit
from api.models import RateWindow
from orgs.actions import create_token
from tests.api_helpers import ApiClient, make_user

pytestmark = pytest.mark.django_db

# The start of a minute (and of a two-minute span, so a window of another length shows).
MINUTE = 1_000_080


@pytest.fixture
def clock(monkeypatch):
    now = SimpleNamespace(value=float(MINUTE))
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: now.value))
    return now


def test_retry_after_is_the_time_left_in_the_minute_and_the_window_ends_on_it(settings, clock):
    settings.BERTH_API_RATE_LIMIT = 2
    row, token = create_token(make_user("alice"), name="t")
    # The database already holds windows: this token's full one from the minute before, and another token's.
    RateWindow.objects.create(token=row, window_start=MINUTE - 60, count=50, total=50)
    other, _ = create_token(make_user("bob"), name="t")
    RateWindow.objects.create(token=other, window_start=MINUTE, count=1, total=1)
    api = ApiClient(token)

    clock.value = MINUTE + 0.5
    assert [api.get("/v1/organizations")["x-ratelimit-remaining"] for _ in range(2)] == ["1", "0"]

    clock.value = MINUTE + 17.2
    refused = api.get("/v1/organizations")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "43"
    assert refused["x-ratelimit-reset"] == "43"

    clock.value = MINUTE + 59.9
    last_moment = api.get("/v1/organizations")
    assert last_moment.status_code == 429
    assert last_moment["Retry-After"] == "1"

    clock.value = MINUTE + 60.0
    next_minute = api.get("/v1/organizations")
    assert next_minute.status_code == 200
    assert next_minute["x-ratelimit-remaining"] == "1"
    assert next_minute["x-ratelimit-reset"] == "60"
    assert RateWindow.objects.get(token=other).count == 1  # another token's window is its own


def test_an_answered_request_says_when_its_window_ends(settings, clock):
    settings.BERTH_API_RATE_LIMIT = 5
    api = ApiClient(create_token(make_user("alice"), name="t")[1])
    clock.value = MINUTE + 45.7
    reply = api.get("/v1/organizations")
    assert reply.status_code == 200
    assert (reply["x-ratelimit-limit"], reply["x-ratelimit-remaining"], reply["x-ratelimit-reset"]) == ("5", "4", "15")
