"""Staff manage organizations and their members on the dashboard."""

import pytest

from audit.models import AuditEntry
from orgs.models import Membership, Organization, Role
from tests.api_helpers import join, make_org, make_user

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
