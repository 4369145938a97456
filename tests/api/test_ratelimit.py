"""The per-token rate limit: 429 with Retry-After and x-ratelimit-* headers, counted in the database."""

import threading

import pytest
from django.db import connection

from api import ratelimit
from orgs.actions import create_token
from tests.api_helpers import ApiClient, make_user


@pytest.mark.django_db
def test_it_answers_429_past_the_limit_with_the_headers(settings):
    settings.BERTH_API_RATE_LIMIT = 3
    client = ApiClient(create_token(make_user("alice"), name="t")[1])
    remaining = [client.get("/v1/organizations")["x-ratelimit-remaining"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    refused = client.get("/v1/organizations")
    assert refused.status_code == 429
    assert set(refused.json()) == {"message"}
    assert refused["x-ratelimit-limit"] == "3"
    assert refused["x-ratelimit-remaining"] == "0"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert 0 <= int(refused["x-ratelimit-reset"]) <= 60


@pytest.mark.django_db
def test_each_token_has_its_own_count(settings):
    settings.BERTH_API_RATE_LIMIT = 1
    alice = make_user("alice")
    first, second = (ApiClient(create_token(alice, name=n)[1]) for n in "ab")
    assert first.get("/v1/organizations").status_code == 200
    assert first.get("/v1/organizations").status_code == 429
    assert second.get("/v1/organizations").status_code == 200


@pytest.mark.django_db
def test_a_new_window_starts_the_count_again(settings):
    settings.BERTH_API_RATE_LIMIT = 2
    token, _ = create_token(make_user("alice"), name="t")
    assert [ratelimit.hit(token.pk, now=120.0).remaining for _ in range(3)] == [1, 0, -1]
    assert ratelimit.hit(token.pk, now=181.0).remaining == 1
    # A lagging clock on another worker never moves the window back.
    assert ratelimit.hit(token.pk, now=130.0).remaining == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_on_separate_connections_each_count(settings):
    """As on several web workers: every request gets a distinct count, none is lost."""
    settings.BERTH_API_RATE_LIMIT = 1000
    token, _ = create_token(make_user("alice"), name="t")
    seen, barrier = [], threading.Barrier(8)

    def worker():
        barrier.wait()
        for _ in range(10):
            seen.append(ratelimit.hit(token.pk, now=600.0).remaining)
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == list(range(1000 - 80, 1000))
