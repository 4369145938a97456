"""Staff manage organizations and their members on the dashboard."""

import pytest

from audit.models import AuditEntry
from orgs.models import Membership, Organization, Role
from projects.models import Project, Status
from tests.api_helpers import join, make_org, make_user
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def test_staff_create_an_organization(staff_client):
    response = staff_client.post("/organizations/", {"name": "Acme"})
    org = Organization.objects.get(name="Acme")
    assert response.status_code == 302
    assert response["Location"] == f"/organizations/{org.slug}/"
    assert AuditEntry.objects.filter(action="organization.create").exists()
    assert "Acme" in staff_client.get("/organizations/").content.decode()


def test_staff_add_change_and_remove_members(staff_client):
    org = make_org("Acme")
    dev = make_user("dev")
    staff_client.post(f"/organizations/{org.slug}/", {"username": "dev", "role": "developer"})
    assert Membership.objects.get(organization=org, user=dev).role == Role.DEVELOPER
    staff_client.post(f"/organizations/{org.slug}/", {"username": "dev", "role": "read_only"})
    membership = Membership.objects.get(organization=org, user=dev)
    assert membership.role == Role.READ_ONLY
    staff_client.post(f"/organizations/{org.slug}/members/{membership.pk}/remove/")
    assert not Membership.objects.filter(organization=org).exists()
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"organization.member_add", "organization.member_role", "organization.member_remove"} <= actions


def test_an_unknown_user_is_a_form_error(staff_client):
    org = make_org("Acme")
    response = staff_client.post(f"/organizations/{org.slug}/", {"username": "ghost", "role": "developer"})
    assert response.status_code == 200
    assert "No user" in response.content.decode()


def test_members_who_are_not_staff_cannot_manage_organizations(client):
    dev = make_user("dev")
    org = make_org("Acme")
    join(dev, org, Role.OWNER)
    client.force_login(dev)
    assert client.get("/organizations/").status_code == 403
    assert client.post(f"/organizations/{org.slug}/", {"username": "dev", "role": "owner"}).status_code == 403


def test_the_list_and_the_page_count_live_projects_up_to_the_cap(staff_client, monkeypatch):
    monkeypatch.setattr("dashboard.queries.COUNT_CAP", 2)
    acme, small = make_org("Acme"), make_org("Small")
    join(make_user("dev"), acme, Role.DEVELOPER)
    for n in range(3):
        make_project(name=f"A{n}", organization=acme)
    make_project(name="Gone", organization=small, status=Status.REMOVED)
    make_project(name="S", organization=small)
    listing = staff_client.get("/organizations/").content.decode()
    acme_row = listing[listing.index(f"/organizations/{acme.slug}/") :].split("</tr>")[0]
    small_row = listing[listing.index(f"/organizations/{small.slug}/") :].split("</tr>")[0]
    assert "<td>1</td><td>2+</td>" in acme_row  # one member; three projects past a cap of two
    assert "<td>0</td><td>1</td>" in small_row  # the removed project is not counted
    assert "2+ project(s)" in staff_client.get(f"/organizations/{acme.slug}/").content.decode()


def test_the_list_costs_the_same_queries_for_3_and_300_projects(staff_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    acme = make_org("Acme")
    version = make_project(organization=acme).template_version
    staff_client.get("/organizations/")  # session and user lookups warm up alike

    def queries_for(count):
        Project.objects.bulk_create(
            Project(name=f"P{n}", organization=acme, postgres_major=15, template=version.name, template_version=version)
            for n in range(count)
        )
        with CaptureQueriesContext(connection) as captured:
            assert staff_client.get("/organizations/").status_code == 200
        return len(captured)

    assert queries_for(3) == queries_for(300)
