"""/metrics compares the bearer token in constant time (docs/architecture.md, Metrics:
`BERTH_METRICS_TOKEN`, compared in constant time): every decision, accept or refuse, is
hmac.compare_digest's on the header sent and the expected one. Tests never time things."""

import hmac

import pytest

from metrics import views

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-0123456789abcdef"


@pytest.fixture
def compared(monkeypatch, settings):
    settings.BERTH_METRICS_TOKEN = TOKEN
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(views.hmac, "compare_digest", spy)
    return calls


@pytest.mark.parametrize(
    ("header", "status"),
    [(f"Bearer {TOKEN}", 200), (f"Bearer {TOKEN[:-1]}x", 401), (f"Bearer {TOKEN[:8]}", 401), ("", 401)],
    ids=["right", "last-byte-differs", "prefix", "missing"],
)
def test_every_metrics_token_decision_is_a_constant_time_comparison(client, compared, header, status):
    headers = {"Authorization": header} if header else {}
    assert client.get("/metrics", headers=headers).status_code == status
    assert compared == [(header.encode(), f"Bearer {TOKEN}".encode())]
