"""Each host's route table (operations.routes): what its router serves, and how it gets there."""

import pytest

from agent.api import ListenerStatus, RouterStatus
from agent.client import AgentUnreachable
from operations import routes
from ports.models import BlockState, PortBlock
from projects.models import DesiredState, Status
from templating.secrets import generate_project_secrets
from tests.factories import make_host, make_project

pytestmark = pytest.mark.django_db


def placed(host, first_port: int, postgres, **fields):
    fields.setdefault("status", Status.ACTIVE_HEALTHY)
    project = make_project(template_version=postgres, host=host, secrets=generate_project_secrets(), **fields)
    PortBlock.objects.create(
        host=host, first_port=first_port, last_port=first_port + 9, state=BlockState.LEASED, project=project
    )
    return project


def test_a_hosts_table_holds_its_live_projects_with_their_ports_limits_and_whether_paused(postgres, settings):
    host, other = make_host(), make_host()
    running = placed(host, 20000, postgres, pool_size=3, max_client_conn=9)
    stopped = placed(host, 20010, postgres, desired_state=DesiredState.STOPPED, status=Status.INACTIVE)
    placed(host, 20020, postgres, desired_state=DesiredState.DELETED)
    placed(host, 20030, postgres, status=Status.REMOVED)
    placed(other, 20000, postgres)
    make_project(template_version=postgres, host=host)  # placed, never leased: nothing to route to

    table = routes.host_routes(host)

    assert table.domain == settings.BERTH_DATABASE_DOMAIN
    by_ref = {route.ref: route for route in table.routes}
    assert set(by_ref) == {running.ref, stopped.ref}
    assert (by_ref[running.ref].port, by_ref[running.ref].paused) == (20000, False)
    assert (by_ref[running.ref].pool_size, by_ref[running.ref].max_client_conn) == (3, 9)
    assert by_ref[running.ref].password == running.secrets["postgres_password"]
    assert by_ref[stopped.ref].paused is True


def test_a_probe_host_override_is_where_the_router_reaches_the_runtime(postgres):
    host = make_host(probe_host_override="10.0.0.7")
    project = placed(host, 20000, postgres)
    assert [(route.ref, route.host) for route in routes.host_routes(host).routes] == [(project.ref, "10.0.0.7")]


class RecordingAgent:
    def __init__(self, error=None):
        self.error, self.pushed = error, []

    def __call__(self, host, *, deadline):
        return self

    def routes(self, request):
        if self.error:
            raise self.error
        self.pushed.append(request)
        up = ListenerStatus("0.0.0.0:5432", True)
        return RouterStatus(db=up, pooler=up, pgbouncer=up, routes=len(request.routes))


def test_a_push_records_the_routers_status_on_the_host(postgres, monkeypatch):
    import hosts.agents

    host = make_host(capabilities={"driver": "process"})
    placed(host, 20000, postgres)
    agent = RecordingAgent()
    monkeypatch.setattr(hosts.agents, "client_for", agent)
    assert routes.push_routes(host)
    host.refresh_from_db()
    assert host.capabilities["driver"] == "process"
    assert host.router_status()["routes"] == 1 and host.router_status()["db"]["listening"] is True


def test_a_push_after_an_operation_is_a_task_of_its_own_that_never_raises(postgres, monkeypatch):
    import django_q.tasks

    import hosts.agents

    host = make_host()
    project = placed(host, 20000, postgres)
    queued = []
    monkeypatch.setattr(django_q.tasks, "async_task", lambda func, *args, **kwargs: queued.append((func, args)))
    routes.push_after(project)  # the operation's task does not wait on the agent
    assert queued == [("operations.tasks.push_host_routes", (host.pk,))]
    monkeypatch.setattr(hosts.agents, "client_for", RecordingAgent(error=AgentUnreachable("no route to host")))
    assert routes.push_host(host.pk) is False  # logged; the periodic push repairs it
    host.refresh_from_db()
    assert host.router_status() is None


def test_push_all_asks_every_host_with_live_projects(postgres, monkeypatch, settings):
    import hosts.agents

    first, second, empty = make_host(), make_host(), make_host()
    placed(first, 20000, postgres)
    placed(second, 20000, postgres)
    agent = RecordingAgent()
    monkeypatch.setattr(hosts.agents, "client_for", agent)
    settings.BERTH_HOST_THREADS = 1  # this test's rows are visible to its own connection only
    assert routes.push_all() == 2
    assert sorted(len(request.routes) for request in agent.pushed) == [1, 1]
    assert empty.router_status() is None
