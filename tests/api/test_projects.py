"""GET/POST /v1/projects, GET/DELETE /v1/projects/{ref}: shapes, errors and tenancy."""

from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEntry
from operations.models import Kind, Operation
from orgs.models import Role
from projects.models import Project, Status
from tests.api_helpers import ApiClient, api_as, join, make_org, make_user, token_for
from tests.factories import REPORTED_CAPABILITIES, make_host, make_project, make_reported_host
from tests.standin_agent import InfoAgent

pytestmark = pytest.mark.django_db

PASSWORD = "Correct-Horse-Battery-42"
PROJECT_KEYS = {
    "id",
    "ref",
    "organization_id",
    "organization_slug",
    "name",
    "region",
    "created_at",
    "status",
    "database",
}


@pytest.fixture
def api(alice, org):
    return api_as(alice)


@pytest.fixture
def process_host(postgres):
    return make_host(capabilities={"driver": "process", "postgres_versions": [15]})


def create_body(org, **overrides):
    return {"name": "Orders", "organization_slug": org.slug, "db_pass": PASSWORD, "region": "us-east-1", **overrides}


def test_it_lists_projects_of_the_callers_organizations_only(api, org):
    mine = make_project(organization=org)
    make_project(organization=make_org("Other"))
    response = api.get("/v1/projects")
    assert response.status_code == 200
    assert [p["ref"] for p in response.json()] == [mine.ref]


def test_it_describes_a_project_in_the_management_api_shape(api, org, settings):
    settings.BERTH_DATABASE_DOMAIN = "db.example.test"
    project = make_project(organization=org, postgres_major=15, status=Status.ACTIVE_HEALTHY)
    body = api.get(f"/v1/projects/{project.ref}").json()
    assert set(body) == PROJECT_KEYS
    assert body["id"] == body["ref"] == project.ref
    assert body["organization_id"] == body["organization_slug"] == org.slug
    assert body["status"] == "ACTIVE_HEALTHY"
    assert body["created_at"].startswith(project.created_at.strftime("%Y-%m-%dT%H:%M:%S"))
    assert body["created_at"].endswith(("Z", "+00:00"))
    assert body["database"] == {
        "host": f"db.{project.ref}.db.example.test",
        "version": "15",
        "postgres_engine": "15",
        "release_channel": "ga",
    }


def test_it_answers_another_organizations_project_like_a_missing_one(api):
    theirs = make_project(organization=make_org("Other"))
    other = api.get(f"/v1/projects/{theirs.ref}")
    missing = api.get("/v1/projects/abcdefghijklmnopqrst")
    assert other.status_code == missing.status_code == 404
    assert other.json()["message"].replace(theirs.ref, "REF") == missing.json()["message"].replace(
        "abcdefghijklmnopqrst", "REF"
    )


def test_it_hides_removed_projects(api, org):
    project = make_project(organization=org, status=Status.REMOVED)
    assert api.get(f"/v1/projects/{project.ref}").status_code == 404
    assert api.get("/v1/projects").json() == []


def test_it_lists_newest_first_in_pages(api, org):
    refs = [make_project(organization=org).ref for _ in range(3)]
    assert [p["ref"] for p in api.get("/v1/projects", limit=2).json()] == refs[::-1][:2]
    assert [p["ref"] for p in api.get("/v1/projects", limit=2, offset=2).json()] == refs[:1]
    assert api.get("/v1/projects", limit=0).status_code == 400


def test_listing_takes_the_same_queries_for_few_and_many_projects(api, org):
    make_project(organization=org)
    with CaptureQueriesContext(connection) as few:
        api.get("/v1/projects")
    for _ in range(20):
        make_project(organization=org)
    with CaptureQueriesContext(connection) as many:
        assert len(api.get("/v1/projects").json()) == 21
    assert len(few) == len(many)


def test_it_creates_a_project_through_the_creation_verb(api, org, alice, process_host):
    response = api.post("/v1/projects", create_body(org))
    assert response.status_code == 201, response.json()
    body = response.json()
    project = Project.objects.get(ref=body["ref"])
    assert set(body) == PROJECT_KEYS - {"database"}
    assert body["organization_slug"] == org.slug
    assert body["region"] == "us-east-1"
    assert project.organization == org
    assert project.secrets["postgres_password"] == PASSWORD
    assert project.postgres_major == 15  # the newest major a host can run, when none is asked for
    assert project.created_by == alice
    assert Operation.objects.get(project=project).kind == Kind.PROVISION
    assert AuditEntry.objects.filter(action="project.create", project=project, actor=alice).exists()
    assert AuditEntry.objects.filter(action="token.use", project=project).exists()


def test_it_accepts_the_deprecated_organization_id(api, org, process_host):
    body = create_body(org, organization_id=org.slug)
    del body["organization_slug"]
    assert api.post("/v1/projects", body).status_code == 201


def test_it_refuses_a_postgres_major_no_host_runs_listing_what_is(api, org, process_host):
    response = api.post("/v1/projects", create_body(org, postgres_engine="17"))
    assert response.status_code == 422
    assert "supported: 15" in response.json()["message"]
    assert not Project.objects.exists()


def test_it_refuses_a_weak_or_malformed_db_pass(api, org, process_host):
    for password in ("short", "password1234", "aaaaaaaaaaaaaaaa", "has spaces in it!", 'quote"inside-pass'):
        response = api.post("/v1/projects", create_body(org, db_pass=password))
        assert response.status_code == 422, password
        assert "password" in response.json()["message"]
    assert not Project.objects.exists()


def test_it_refuses_a_duplicate_name_in_the_organization(api, org, process_host, postgres):
    make_project(organization=org, name="Orders", template_version=postgres)
    response = api.post("/v1/projects", create_body(org))
    assert response.status_code == 409
    assert "Orders" in response.json()["message"]


def test_the_same_name_is_fine_in_another_organization(api, org, alice, process_host, postgres):
    other = make_org("Other")
    join(alice, other)
    make_project(organization=other, name="Orders", template_version=postgres)
    assert api.post("/v1/projects", create_body(org)).status_code == 201


def test_it_refuses_a_region_no_host_serves_listing_the_regions(api, org, postgres):
    make_host(region="eu-west-1", capabilities={"driver": "process", "postgres_versions": [15]})
    response = api.post("/v1/projects", create_body(org, region="us-east-1"))
    assert response.status_code == 422
    assert "eu-west-1" in response.json()["message"]
    assert api.post("/v1/projects", create_body(org, region="eu-west-1")).status_code == 201


def test_creating_in_an_organization_the_caller_is_not_in_is_forbidden(api, process_host):
    other = make_org("Other")
    for slug in (other.slug, "no-such-org"):
        response = api.post("/v1/projects", create_body(other, organization_slug=slug))
        assert response.status_code == 403
    assert not Project.objects.exists()


def test_read_only_members_cannot_create(org, process_host):
    reader = make_user("reader")
    join(reader, org, Role.READ_ONLY)
    assert api_as(reader).post("/v1/projects", create_body(org)).status_code == 403


def test_it_rejects_a_body_without_required_fields(api, org):
    response = api.post("/v1/projects", {"name": "Orders"})
    assert response.status_code == 400
    assert "db_pass" in response.json()["message"]


def test_it_deletes_a_project_with_its_data(api, org):
    project = make_project(organization=org, status=Status.ACTIVE_HEALTHY)
    response = api.delete(f"/v1/projects/{project.ref}")
    assert response.status_code == 200
    assert response.json() == {"id": project.pk, "ref": project.ref, "name": project.name, "slug": project.ref}
    operation = Operation.objects.get(project=project)
    assert (operation.kind, operation.params) == (Kind.DELETE, {"purge_data": True})


def test_delete_answers_400_while_another_operation_is_in_flight(api, org):
    project = make_project(organization=org, status=Status.ACTIVE_HEALTHY)
    assert api.delete(f"/v1/projects/{project.ref}").status_code == 200
    response = api.delete(f"/v1/projects/{project.ref}")
    assert response.status_code == 400
    assert "in progress" in response.json()["message"]


def test_nobody_deletes_another_organizations_project(api, org):
    theirs = make_project(organization=make_org("Other"))
    reader = make_user("reader")
    join(reader, org, Role.READ_ONLY)
    mine = make_project(organization=org)
    assert api.delete(f"/v1/projects/{theirs.ref}").status_code == 404
    assert api_as(reader).delete(f"/v1/projects/{mine.ref}").status_code == 403
    assert not Operation.objects.exists()


def test_a_user_in_two_organizations_has_each_ones_role(alice, org):
    other = make_org("Other")
    join(alice, other, Role.READ_ONLY)
    readable = make_project(organization=other)
    writable = make_project(organization=org)
    client = ApiClient(token_for(alice))
    assert client.post(f"/v1/projects/{readable.ref}/pause").status_code == 403
    assert client.post(f"/v1/projects/{writable.ref}/pause").status_code == 400  # never provisioned
    assert len(client.get("/v1/projects").json()) == 2


def test_without_postgres_engine_it_asks_a_never_reported_host_and_takes_its_newest(api, org, postgres):
    make_host(name="local")  # as registered: its agent never reported
    agent = InfoAgent([15, 16])
    with mock.patch("hosts.agents.client_for", agent):
        response = api.post("/v1/projects", create_body(org, region=""))
    assert response.status_code == 201, response.json()
    assert agent.asked == ["local"]
    assert Project.objects.get(ref=response.json()["ref"]).postgres_major == 16


def test_without_postgres_engine_a_silent_never_reported_host_offers_nothing_and_is_named(api, org, postgres):
    make_host(name="local")
    with mock.patch("hosts.agents.client_for", InfoAgent(None)):
        response = api.post("/v1/projects", create_body(org, region=""))
    assert response.status_code == 422
    assert "local" in response.json()["message"]
    assert not Project.objects.exists()


def test_without_postgres_engine_the_newest_major_of_the_regions_hosts_is_taken(api, org, postgres):
    make_reported_host(region="eu-west-1", capabilities={**REPORTED_CAPABILITIES, "postgres_versions": [15]})
    make_reported_host(region="us-east-1", capabilities={**REPORTED_CAPABILITIES, "postgres_versions": [15, 16]})
    response = api.post("/v1/projects", create_body(org, region="eu-west-1"))
    assert response.status_code == 201, response.json()
    assert Project.objects.get(ref=response.json()["ref"]).postgres_major == 15


def test_it_lists_the_projects_after_a_ref_even_when_created_at_ties(api, org):
    from django.utils import timezone

    from projects.models import Project

    refs = [make_project(organization=org).ref for _ in range(5)]
    Project.objects.update(created_at=timezone.now())  # only the id orders them now
    first = [p["ref"] for p in api.get("/v1/projects", limit=2).json()]
    rest = [p["ref"] for p in api.get("/v1/projects", limit=10, after=first[-1]).json()]
    assert first + rest == refs[::-1]
    assert api.get("/v1/projects", after=rest[-1]).json() == []


def test_it_refuses_an_after_ref_outside_the_callers_list_and_after_with_offset(api, org):
    mine = make_project(organization=org)
    theirs = make_project()
    assert api.get("/v1/projects", after=theirs.ref).status_code == 400
    assert api.get("/v1/projects", after=mine.ref, offset=1).status_code == 400
