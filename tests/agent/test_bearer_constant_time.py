"""The agent compares the bearer token in constant time (hmac.compare_digest): a comparison that
stops at the first differing byte would let a caller find the token byte by byte from timings.

Tests never assert on wall-clock time, so this one checks that every decision, accept or
refuse, is compare_digest's, made on the bytes sent and the token."""

import hmac

import pytest

from agent import server

TOKEN = "agent-token-0123456789abcdef"


def wsgi_call(auth, header: str | None):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/v1/info"}
    if header is not None:
        environ["HTTP_AUTHORIZATION"] = header
    statuses = []
    body = auth(environ, lambda status, headers: statuses.append(status))
    return statuses[0], b"".join(body)


@pytest.fixture
def compared(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(server.hmac, "compare_digest", spy)
    return calls


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"reached"]


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (f"Bearer {TOKEN}", "200 OK"),
        (f"bearer {TOKEN}", "200 OK"),
        (f"Bearer {TOKEN[:-1]}x", "401 Unauthorized"),
        (f"Bearer {TOKEN[:8]}", "401 Unauthorized"),
    ],
    ids=["right", "scheme-any-case", "last-byte-differs", "prefix"],
)
def test_every_bearer_decision_is_a_constant_time_comparison(compared, header, status):
    answer, body = wsgi_call(server.BearerAuth(app, TOKEN), header)
    assert answer == status
    assert (body == b"reached") == (status == "200 OK")
    assert compared == [(header.split(" ", 1)[1].encode("latin-1"), TOKEN.encode())]


def test_a_request_without_a_bearer_token_is_refused_unread(compared):
    answer, body = wsgi_call(server.BearerAuth(app, TOKEN), None)
    assert answer == "401 Unauthorized"
    assert body != b"reached"
