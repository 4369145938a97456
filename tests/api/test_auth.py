"""Bearer authentication with personal access tokens: shape, hashing, expiry, revocation."""

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEntry
from orgs.actions import create_token, revoke_token
from orgs.models import TOKEN_PATTERN, AccessToken
from tests.api_helpers import ApiClient

pytestmark = pytest.mark.django_db


def test_a_new_token_has_the_cli_shape_and_is_stored_only_as_its_hash(alice):
    token, plaintext = create_token(alice, name="laptop")
    assert TOKEN_PATTERN.fullmatch(plaintext)
    assert token.digest == hashlib.sha256(plaintext.encode()).hexdigest()
    stored = AccessToken.objects.filter(pk=token.pk).values().get()
    assert plaintext not in {str(value) for value in stored.values()}
    assert token.hint == plaintext[:8]
    assert AuditEntry.objects.filter(action="token.create", detail__token=token.pk).exists()


def test_tokens_differ_every_time(alice):
    assert create_token(alice, name="a")[1] != create_token(alice, name="b")[1]


def test_it_authenticates_a_valid_token_and_records_its_use(alice):
    token, plaintext = create_token(alice, name="laptop")
    assert ApiClient(plaintext).get("/v1/organizations").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer sbp_" + "0" * 40, "Bearer not-a-token", "Basic c2JwXzEyMw==", "Token sbp_" + "a" * 40],
)
def test_it_answers_401_json_to_anything_but_a_valid_bearer_token(client, header):
    headers = {"Authorization": header} if header else {}
    response = client.get("/v1/projects", headers=headers)
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    assert set(response.json()) == {"message"}


def test_a_signed_in_session_is_not_enough(client, staff_user):
    client.force_login(staff_user)
    assert client.get("/v1/projects").status_code == 401
    assert client.post("/v1/organizations", {"name": "x"}, content_type="application/json").status_code == 401


def test_it_refuses_an_expired_token(alice):
    token, plaintext = create_token(alice, name="short", expires_days=1)
    assert ApiClient(plaintext).get("/v1/projects").status_code == 200
    AccessToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert ApiClient(plaintext).get("/v1/projects").status_code == 401


def test_it_refuses_a_revoked_token_and_audits_the_revocation(alice):
    token, plaintext = create_token(alice, name="laptop")
    assert revoke_token(token, actor=alice) is True
    assert revoke_token(token, actor=alice) is False
    assert ApiClient(plaintext).get("/v1/projects").status_code == 401
    assert AuditEntry.objects.filter(action="token.revoke", detail__token=token.pk).count() == 1


def test_it_refuses_the_token_of_a_deactivated_user(alice):
    _, plaintext = create_token(alice, name="laptop")
    alice.is_active = False
    alice.save()
    assert ApiClient(plaintext).get("/v1/projects").status_code == 401


def test_it_refuses_bad_expiry_and_empty_names(alice):
    from django.core.exceptions import ValidationError

    for kwargs in ({"name": " "}, {"name": "x", "expires_days": 0}, {"name": "x", "expires_days": 100000}):
        with pytest.raises(ValidationError):
            create_token(alice, **kwargs)
    assert not AccessToken.objects.exists()


def test_the_openapi_document_is_generated_from_the_schemas(client):
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert {"/v1/projects", "/v1/projects/{ref}/database/query", "/v1/organizations"} <= set(document["paths"])
    assert "ProjectOut" in document["components"]["schemas"]


@pytest.mark.parametrize("path", ["/v1/", "/v1/nope", "/v1/projects/abc/branches"])
def test_paths_no_endpoint_serves_answer_json_401_then_404(client, alice, path):
    anonymous = client.get(path)
    assert anonymous.status_code == 401
    assert set(anonymous.json()) == {"message"}
    known = ApiClient(create_token(alice, name="t")[1]).get(path)
    assert known.status_code == 404
    assert set(known.json()) == {"message"}


@pytest.mark.parametrize(("method", "path"), [("put", "/v1/projects"), ("get", "/v1/projects/abc/pause")])
def test_a_method_a_path_does_not_serve_answers_401_then_405(client, alice, method, path):
    anonymous = getattr(client, method)(path)
    assert anonymous.status_code == 401
    assert set(anonymous.json()) == {"message"}
    api = ApiClient(create_token(alice, name="t")[1])
    known = getattr(api.client, method)(path, headers=api.headers)
    assert known.status_code == 405
