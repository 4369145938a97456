"""supabase-management-js (pinned, see package.json) against a live Berth: refusal of a Postgres
major no host runs, pause and restore, health, and a query."""

import pytest

from orgs.actions import create_token
from projects.models import Project, Status
from tests.api_helpers import join, make_org, make_user
from tests.interop.conftest import PASSWORD
from tests.stack import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def status_of(ref: str) -> str:
    return Project.objects.values_list("status", flat=True).get(ref=ref)


def test_management_js_creates_pauses_restores_checks_and_queries(stack):
    alice = make_user("alice")
    org = make_org("Acme")
    join(alice, org)
    token = create_token(alice, name="js")[1]

    # The template lists 18; the host serves 15, 16 and 17 (Debian's and the checkout's pgbin/).
    refused = stack.management_js("create", org.slug, "Eighteen", "18", PASSWORD, token=token)
    assert (refused["ok"], refused["status"]) == (False, 422)
    assert "supported: 15, 16, 17" in refused["message"]
    assert not Project.objects.filter(name="Eighteen").exists()

    created = stack.management_js("create", org.slug, "Orders", "15", PASSWORD, token=token)
    assert (created["ok"], created["status"]) == (True, 201), created
    ref = created["data"]["ref"]
    wait_for(lambda: status_of(ref) == Status.ACTIVE_HEALTHY, timeout=90, what=f"{ref} healthy")

    health = stack.management_js("health", ref, "db", token=token)
    assert health["data"] == [{"name": "db", "healthy": True, "status": "ACTIVE_HEALTHY", "error": None}]

    query = stack.management_js("query", ref, "select current_setting('server_version_num') as v", token=token)
    assert query["status"] == 201
    assert query["data"][0]["v"].startswith("15")
    failed = stack.management_js("query", ref, "select * from no_such_table", token=token)
    assert (failed["ok"], failed["status"]) == (False, 400)
    assert "no_such_table" in failed["message"]

    assert stack.management_js("pause", ref, token=token)["ok"]
    wait_for(lambda: status_of(ref) == Status.INACTIVE, timeout=60, what=f"{ref} paused")
    paused = stack.management_js("health", ref, "db", token=token)
    assert paused["data"][0]["healthy"] is False
    assert stack.management_js("restore", ref, token=token)["ok"]
    wait_for(lambda: status_of(ref) == Status.ACTIVE_HEALTHY, timeout=60, what=f"{ref} restored")
    assert stack.management_js("query", ref, "select 1 as one", token=token)["data"] == [{"one": 1}]
