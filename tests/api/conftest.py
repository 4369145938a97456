"""The API tests' people: alice, and Acme, the organization she belongs to with `alice_role`
(owner unless a module says otherwise by overriding that fixture)."""

import pytest

from orgs.models import Role
from tests.api_helpers import join, make_org, make_user


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def alice_role():
    return Role.OWNER


@pytest.fixture
def org(alice, alice_role):
    org = make_org("Acme")
    join(alice, org, alice_role)
    return org
