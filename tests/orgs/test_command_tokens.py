"""manage.py tokens create | list | revoke."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEntry
from orgs.models import TOKEN_PATTERN, AccessToken, token_digest
from tests.api_helpers import ApiClient, make_user

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command("tokens", *args, stdout=out)
    return out.getvalue()


def test_create_prints_the_token_alone_on_its_last_line():
    user = make_user("alice")
    output = run("create", "--user", "alice", "--name", "ci", "--expires-days", "7")
    last = output.rstrip("\n").splitlines()[-1]
    assert TOKEN_PATTERN.fullmatch(last)
    token = AccessToken.objects.get(user=user)
    assert token.digest == token_digest(last)
    assert token.expires_at is not None
    assert AuditEntry.objects.filter(action="token.create", actor_label="manage.py tokens").exists()


def test_create_refuses_an_unknown_user_or_a_bad_expiry():
    with pytest.raises(CommandError, match="no user"):
        run("create", "--user", "ghost", "--name", "ci")
    make_user("alice")
    with pytest.raises(CommandError, match="Expiry"):
        run("create", "--user", "alice", "--name", "ci", "--expires-days", "0")
    assert not AccessToken.objects.exists()


def test_list_and_revoke():
    make_user("alice")
    plaintext = run("create", "--user", "alice", "--name", "ci").rstrip("\n").splitlines()[-1]
    token = AccessToken.objects.get()
    listing = run("list")
    assert "ci" in listing and "active" in listing and plaintext not in listing
    assert "revoked" in run("revoke", str(token.pk))
    assert "already" in run("revoke", str(token.pk))
    assert ApiClient(plaintext).get("/v1/organizations").status_code == 401
    with pytest.raises(CommandError, match="no token with id 999"):
        run("revoke", "999")
