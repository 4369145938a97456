"""manage.py devsetup: the local admin, owner of the default organization, and the local host."""

from io import StringIO

import pytest
from django.core.management import call_command

from orgs.models import DEFAULT_ORGANIZATION_SLUG, Membership, Role

pytestmark = pytest.mark.django_db


def test_it_makes_the_local_admin_owner_of_the_default_organization_idempotently():
    for _ in range(2):
        call_command("devsetup", stdout=StringIO())
    membership = Membership.objects.select_related("user", "organization").get()
    assert membership.user.username == "admin"
    assert membership.organization.slug == DEFAULT_ORGANIZATION_SLUG
    assert membership.role == Role.OWNER
