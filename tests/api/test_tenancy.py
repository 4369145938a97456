"""Tenancy under /v1/ with the other organizations as they really are: they have members.

docs/architecture.md, Management API: a caller sees the organizations it is a member of and
their live projects; a project of another organization is answered exactly like a missing
ref (404); `read_only` members get 403 on writes and may query only with `read_only: true`.
"""

import json
from unittest import mock

import pytest

from audit.models import Action, AuditEntry
from operations.models import Operation
from orgs.models import Role
from projects.models import Project, Status
from tests.api_helpers import api_as, join, make_org, make_user
from tests.factories import make_host, make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme(alice):
    org = make_org("Acme")
    join(alice, org, Role.DEVELOPER)
    return org


@pytest.fixture
def other(alice):
    """Another organization with members of its own (and not alice)."""
    org = make_org("Other")
    join(make_user("bob"), org, Role.OWNER)
    join(make_user("carol"), org, Role.READ_ONLY)
    return org


def test_it_lists_only_the_callers_organizations_when_others_have_members(alice, acme, other):
    api = api_as(alice)
    assert [org["slug"] for org in api.get("/v1/organizations").json()] == [acme.slug]
    assert api.get(f"/v1/organizations/{other.slug}").status_code == 404


def test_it_lists_only_the_callers_projects_when_other_organizations_have_members(alice, acme, other, postgres):
    mine = make_project(organization=acme, template_version=postgres, host=make_host())
    make_project(organization=other, template_version=postgres, host=make_host())
    reply = api_as(alice).get("/v1/projects")
    assert reply.status_code == 200
    assert [project["ref"] for project in reply.json()] == [mine.ref]


def test_a_project_of_an_organization_with_members_answers_like_a_missing_ref(alice, acme, other, postgres):
    theirs = make_project(organization=other, template_version=postgres, host=make_host())
    api = api_as(alice)
    for path in (f"/v1/projects/{theirs.ref}", f"/v1/projects/{theirs.ref}/api-keys"):
        reply, missing = api.get(path), api.get(path.replace(theirs.ref, "nosuchref0000000000"))
        assert (reply.status_code, reply.json()["message"].replace(theirs.ref, "REF")) == (
            404,
            missing.json()["message"].replace("nosuchref0000000000", "REF"),
        )


# Every write under /v1/projects/{ref}, with a body the route would otherwise accept.
WRITES = {
    ("delete", "/v1/projects/{ref}"): None,
    ("post", "/v1/projects/{ref}/pause"): None,
    ("post", "/v1/projects/{ref}/restore"): None,
    ("post", "/v1/projects/{ref}/upgrade"): {"target_version": "16"},
    ("patch", "/v1/projects/{ref}/config/database/pooler"): {"default_pool_size": 20},
    ("delete", "/v1/projects/{ref}/cli/login-role"): None,
    ("post", "/v1/projects/{ref}/cli/login-role"): {"read_only": False},
    ("post", "/v1/projects/{ref}/database/query"): {"query": "create table t (id int)"},
    ("patch", "/v1/projects/{ref}/database/password"): {"password": "Correct.Horse.Battery9"},
    ("post", "/v1/projects/{ref}/database/backups/restore-pitr"): {"recovery_time_target_unix": 1_700_000_000},
    ("put", "/v1/projects/{ref}/config/database/postgres"): {"max_connections": 120},
    ("put", "/v1/projects/{ref}/ssl-enforcement"): {"requestedConfig": {"database": True}},
    ("post", "/v1/projects/{ref}/network-restrictions/apply"): {"dbAllowedCidrs": ["10.0.0.0/8"]},
    ("delete", "/v1/projects/{ref}/network-bans"): {"ipv4_addresses": ["192.0.2.1"]},
}
# Reads the platform's API serves as POST (a read_only member may make them).
READS_BY_POST = {("post", "/v1/projects/{ref}/network-bans/retrieve")}


def test_the_table_of_writes_names_every_write_route(client):
    """A new write route must join WRITES, so its role check is tested too."""
    document = client.get("/v1/openapi.json").json()
    writes = {
        (method, path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in {"post", "put", "patch", "delete"} and "{ref}" in path
    }
    assert writes == set(WRITES) | READS_BY_POST


@pytest.mark.parametrize(("method", "path"), sorted(WRITES))
def test_read_only_members_get_403_on_every_write(method, path, acme, postgres):
    project = make_project(organization=acme, template_version=postgres, host=make_host(), status=Status.ACTIVE_HEALTHY)
    reader = make_user("reader")
    join(reader, acme, Role.READ_ONLY)
    api = api_as(reader)
    body = WRITES[(method, path)]
    with mock.patch("hosts.agents.client_for") as agent:
        reply = api.client.generic(
            method.upper(),
            path.format(ref=project.ref),
            json.dumps(body) if body is not None else "",
            content_type="application/json",
            headers=api.headers,
        )
    assert reply.status_code == 403, reply.content
    assert "read_only" in reply.json()["message"]
    assert not agent.called
    assert not Operation.objects.exists()
    project.refresh_from_db()
    assert project.status == Status.ACTIVE_HEALTHY
    assert not AuditEntry.objects.filter(action=Action.TOKEN_USE).exists()


def test_read_only_members_cannot_create_projects_in_their_organization(acme, postgres):
    reader = make_user("reader")
    join(reader, acme, Role.READ_ONLY)
    body = {"name": "new", "organization_slug": acme.slug, "db_pass": "Correct.Horse.Battery9"}
    reply = api_as(reader).post("/v1/projects", body)
    assert reply.status_code == 403
    assert not Project.objects.filter(organization=acme).exists()
