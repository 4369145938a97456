"""Every dashboard page, in the states a new user meets first: an empty database, and a
template just registered with a project on a host whose agent has never reported and does
not answer. Generated from the URL configuration, so a new page is covered too.

Pages that show live agent data must answer within BERTH_AGENT_PAGE_DEADLINE (plus a
generous 2 s), measured against an agent that never answers.
"""

import time

import pytest

from operations.rollouts import start_rollout
from tests.dashboard.test_access_routes import ROUTES, concrete
from tests.dashboard_helpers import placed_project, register_template
from tests.factories import make_host

pytestmark = pytest.mark.django_db

PAGE_DEADLINE = 0.5
HTMX = {"HTTP_HX_REQUEST": "true"}
# 286: a polled partial answering that nothing is in flight (htmx stops polling); 405: POST only.

DASHBOARD = [
    pytest.param(parts, view, id=name.split(":")[1])
    for parts, name, view in ROUTES
    if name and name.startswith("dashboard:")
]
WITHOUT_PARAMETERS = [p for p in DASHBOARD if "<" not in "".join(str(part) for part in p.values[0])]


@pytest.mark.parametrize(("parts", "view"), WITHOUT_PARAMETERS)
def test_every_page_answers_on_an_empty_database(staff_client, parts, view):
    path = concrete(parts, view, {})
    for headers in ({}, HTMX):
        response = staff_client.get(path, **headers)
        assert response.status_code in (200, 286, 405), f"GET {path}: {response.status_code}"


@pytest.fixture
def fresh_state(tmp_path, silent_agent, settings):
    """A template just registered (and a newer revision), a never-reported host on a silent agent,
    and a project there on the older revision, so the re-sync plan asks the agent."""
    settings.BERTH_AGENT_PAGE_DEADLINE = PAGE_DEADLINE
    first = register_template(tmp_path)
    host = make_host(agent_url=silent_agent.url)
    project = placed_project(first, host)
    newer = register_template(tmp_path, readme="a newer revision\n")
    operation = project.operations.get()
    rollout = start_rollout(newer)
    return {
        "ref": project.ref,
        "pk": host.pk,
        "name": first.name,
        "operation": operation.pk,
        "slug": project.organization.slug,
        "rollout_id": rollout.pk,
    }


@pytest.mark.parametrize(("parts", "view"), DASHBOARD)
def test_every_page_answers_within_its_deadline_with_a_silent_never_reported_host(
    staff_client, parts, view, fresh_state, request
):
    name = request.node.callspec.id
    path = concrete(parts, view, fresh_state)
    for headers in ({}, HTMX):
        started = time.monotonic()
        response = staff_client.get(path, **headers)
        took = time.monotonic() - started
        assert response.status_code in (200, 286, 302, 405), f"GET {path}: {response.status_code}"
        assert took <= PAGE_DEADLINE + 2, f"GET {path} took {took:.1f}s"
        if name in ("resync_plan", "rollout_diff"):
            assert took >= PAGE_DEADLINE * 0.9, "the plan asked the agent"
            assert "agent unreachable" in response.content.decode()
