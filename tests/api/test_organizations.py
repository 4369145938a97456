"""GET/POST /v1/organizations and GET /v1/organizations/{slug}."""

import pytest

from audit.models import AuditEntry
from orgs.models import Membership, Organization, Role
from tests.api_helpers import api_as, join, make_org, make_user

pytestmark = pytest.mark.django_db


def test_it_lists_only_the_callers_organizations():
    alice, bob = make_user("alice"), make_user("bob")
    mine, theirs = make_org("Mine"), make_org("Theirs")
    join(alice, mine, Role.READ_ONLY)
    join(bob, theirs)
    response = api_as(alice).get("/v1/organizations")
    assert response.status_code == 200
    assert response.json() == [{"id": mine.slug, "slug": mine.slug, "name": "Mine"}]


def test_it_creates_an_organization_owned_by_the_caller():
    alice = make_user("alice")
    response = api_as(alice).post("/v1/organizations", {"name": "New Co"})
    assert response.status_code == 201
    body = response.json()
    org = Organization.objects.get(slug=body["id"])
    assert body == {"id": org.slug, "slug": org.slug, "name": "New Co"}
    assert Membership.objects.get(organization=org).role == Role.OWNER
    assert Membership.objects.get(organization=org).user == alice
    assert AuditEntry.objects.filter(action="organization.create", actor=alice).exists()
    assert AuditEntry.objects.filter(action="token.use", actor=alice).exists()


def test_it_rejects_a_body_without_a_name():
    response = api_as(make_user("alice")).post("/v1/organizations", {})
    assert response.status_code == 400
    assert "name" in response.json()["message"]
    assert not Organization.objects.exclude(slug="default").exists()


def test_it_reads_one_organization_of_the_callers():
    alice = make_user("alice")
    org = make_org("Mine")
    join(alice, org)
    response = api_as(alice).get(f"/v1/organizations/{org.slug}")
    assert response.status_code == 200
    assert response.json()["name"] == "Mine"


def test_it_answers_404_for_another_organization():
    alice, bob = make_user("alice"), make_user("bob")
    theirs = make_org("Theirs")
    join(bob, theirs)
    response = api_as(alice).get(f"/v1/organizations/{theirs.slug}")
    assert response.status_code == 404
    assert set(response.json()) == {"message"}
