"""What the Management API got wrong (issue 25): keys a read_only member could read, pause and
restore that changed nothing yet started an operation, non-JSON errors, and a host list with
empty reasons."""

import json

import pytest
from django.test import Client

from audit.models import AuditEntry
from hosts.models import RuntimeHost
from operations.models import Operation
from orgs.models import Role
from projects.models import DesiredState, Status
from templating.secrets import generate_project_secrets
from tests.api_helpers import api_as, join, make_org, make_user, token_for
from tests.factories import make_host, make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def org():
    return make_org("Acme")


@pytest.fixture
def project(org, postgres):
    return make_project(
        organization=org,
        template_version=postgres,
        host=make_host(),
        status=Status.ACTIVE_HEALTHY,
        secrets=generate_project_secrets(),
    )


def member(org, role):
    user = make_user(f"user-{role}")
    join(user, org, role)
    return user


def test_a_read_only_member_gets_the_public_keys_alone(org, project):
    keys = api_as(member(org, Role.READ_ONLY)).get(f"/v1/projects/{project.ref}/api-keys", reveal="true").json()
    assert sorted(key["type"] for key in keys) == ["legacy", "publishable"]
    shown = json.dumps(keys)
    assert project.secrets["service_role_key"] not in shown
    assert "sb_secret_" not in shown
    assert [key["name"] for key in keys if key["type"] == "legacy"] == ["anon"]


def test_a_developer_gets_every_key_and_the_secret_one_masked_unless_revealed(org, project):
    api = api_as(member(org, Role.DEVELOPER))
    revealed = {
        key["type"] + key["name"]: key for key in api.get(f"/v1/projects/{project.ref}/api-keys", reveal="true").json()
    }
    assert set(revealed) == {"legacyanon", "legacyservice_role", "publishabledefault", "secretdefault"}
    assert revealed["legacyservice_role"]["api_key"] == project.secrets["service_role_key"]
    secret = revealed["secretdefault"]
    assert secret["api_key"].startswith("sb_secret_") and secret["secret_jwt_template"] == {"role": "service_role"}
    assert revealed["publishabledefault"]["api_key"].startswith("sb_publishable_")
    masked = {key["type"]: key for key in api.get(f"/v1/projects/{project.ref}/api-keys").json()}["secret"]
    assert masked["api_key"] != secret["api_key"] and "·" in masked["api_key"]
    assert masked["hash"] == secret["hash"]
    # The same keys on every call: derived from the project's JWT secret, never random per call.
    again = api.get(f"/v1/projects/{project.ref}/api-keys", reveal="true").json()
    assert {k["id"]: k["api_key"] for k in again} == {k["id"]: k["api_key"] for k in revealed.values()}


@pytest.mark.parametrize(
    ("path", "status", "desired", "reason"),
    [
        ("pause", Status.INACTIVE, DesiredState.STOPPED, "already stopped"),
        ("restore", Status.ACTIVE_HEALTHY, DesiredState.RUNNING, "already running"),
    ],
)
def test_it_refuses_pause_of_a_paused_project_and_restore_of_a_running_one(org, project, path, status, desired, reason):
    project.status, project.desired_state = status, desired
    project.save()
    response = api_as(member(org, Role.DEVELOPER)).post(f"/v1/projects/{project.ref}/{path}")
    assert response.status_code == 400
    assert reason in response.json()["message"]
    assert not Operation.objects.exists()
    assert not AuditEntry.objects.filter(project=project).exists()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("put", "/v1/projects"),
        ("get", "/v1/projects/{ref}/pause"),
        ("patch", "/v1/projects/{ref}"),
        ("delete", "/v1/organizations"),
        ("post", "/v1/projects/{ref}/api-keys"),
    ],
)
def test_a_method_a_path_does_not_serve_answers_json(org, project, method, path):
    token = token_for(member(org, Role.OWNER))
    response = getattr(Client(), method)(path.format(ref=project.ref), headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 405
    assert response["Content-Type"].startswith("application/json")
    assert "message" in response.json()


@pytest.mark.parametrize("path", ["/v1/nothing/here", "/v1/projects/{ref}/nothing", "/v1/projects/{ref}/api-keys/"])
def test_a_path_no_endpoint_serves_answers_json(org, project, path):
    token = token_for(member(org, Role.OWNER))
    response = Client().get(path.format(ref=project.ref), headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert "message" in response.json()


def test_hosts_never_asked_are_listed_without_an_empty_reason(org, postgres, settings):
    settings.BERTH_AGENT_PAGE_DEADLINE = 0  # no time to ask any host: none is
    make_host(name="silent-a", agent_url="http://127.0.0.1:9/")
    make_host(name="silent-b", agent_url="http://127.0.0.1:9/")
    assert all(not host.last_error for host in RuntimeHost.objects.all())
    owner = member(org, Role.OWNER)
    response = api_as(owner).post(
        "/v1/projects",
        {"name": "p", "organization_slug": org.slug, "db_pass": "Correct-Horse-42", "postgres_engine": "15"},
    )
    assert response.status_code == 422
    message = response.json()["message"]
    assert "silent-a" in message and "silent-b" in message
    assert "()" not in message
