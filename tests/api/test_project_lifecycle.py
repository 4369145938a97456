"""POST /v1/projects/{ref}/pause and /restore, and GET /v1/projects/{ref}/health."""

import pytest

from operations.models import Kind, Operation
from orgs.models import Role
from projects.models import Status
from tests.api_helpers import api_as, join, make_org, make_user
from tests.factories import make_host, make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_role():
    return Role.DEVELOPER


@pytest.fixture
def running(org, postgres):
    return make_project(organization=org, template_version=postgres, host=make_host(), status=Status.ACTIVE_HEALTHY)


def test_pause_and_restore_queue_stop_and_start(alice, running):
    api = api_as(alice)
    assert api.post(f"/v1/projects/{running.ref}/pause").status_code == 200
    operation = Operation.objects.get(project=running)
    assert operation.kind == Kind.STOP
    Operation.objects.filter(pk=operation.pk).update(state="succeeded")
    assert api.post(f"/v1/projects/{running.ref}/restore").status_code == 200
    assert Operation.objects.filter(project=running).latest("created_at").kind == Kind.START


def test_pause_answers_400_while_an_operation_is_in_flight(alice, running):
    api = api_as(alice)
    api.post(f"/v1/projects/{running.ref}/pause")
    response = api.post(f"/v1/projects/{running.ref}/restore")
    assert response.status_code == 400
    assert "in progress" in response.json()["message"]


def test_read_only_members_cannot_pause(running, org):
    reader = make_user("reader")
    join(reader, org, Role.READ_ONLY)
    assert api_as(reader).post(f"/v1/projects/{running.ref}/pause").status_code == 403
    assert not Operation.objects.exists()


def test_nobody_pauses_another_organizations_project(postgres):
    theirs = make_project(organization=make_org("Other"), template_version=postgres, host=make_host())
    assert api_as(make_user("mallory")).post(f"/v1/projects/{theirs.ref}/pause").status_code == 404
    assert not Operation.objects.exists()


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Status.ACTIVE_HEALTHY, (True, "ACTIVE_HEALTHY")),
        (Status.COMING_UP, (False, "COMING_UP")),
        (Status.ACTIVE_UNHEALTHY, (False, "UNHEALTHY")),
        (Status.INACTIVE, (False, "UNHEALTHY")),
    ],
)
def test_health_follows_the_last_refresh(alice, running, status, expected):
    running.status = status
    running.save()
    response = api_as(alice).get(f"/v1/projects/{running.ref}/health", services="db")
    assert response.status_code == 200
    assert response.json() == [{"name": "db", "healthy": expected[0], "status": expected[1], "error": None}]


def test_health_says_which_services_the_template_does_not_run(alice, running):
    response = api_as(alice).get(f"/v1/projects/{running.ref}/health?services=db,auth")
    names = {item["name"]: item for item in response.json()}
    assert names["db"]["healthy"] is True
    assert names["auth"]["healthy"] is False
    assert "template" in names["auth"]["error"]


def test_health_refuses_unknown_services_and_needs_some(alice, running):
    api = api_as(alice)
    assert api.get(f"/v1/projects/{running.ref}/health", services="kitchen").status_code == 400
    assert api.get(f"/v1/projects/{running.ref}/health").status_code == 400


def test_health_never_calls_an_agent(alice, running, monkeypatch):
    import hosts.agents

    monkeypatch.setattr(hosts.agents, "client_for", lambda *a, **k: pytest.fail("an agent was called"))
    assert api_as(alice).get(f"/v1/projects/{running.ref}/health", services="db").status_code == 200
