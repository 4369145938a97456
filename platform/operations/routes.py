"""Each host's route table for its database router (agent.router): which projects it serves, where.

The table is the whole of a host's live projects that hold a database port, computed from
the rows and pushed whole (`PUT /v1/routes`), so a push is idempotent and a missed one is
repaired by the next: after every operation on the host (`push_after`), after a change of the
pooler's settings, and every BERTH_REAPER_MINUTES for every host (`push_all`). A project
whose desired state is stopped is routed as paused (clients are told so); a deleted one
leaves the table, and its ref is then unknown there.
"""

import logging
import time

import django_q.tasks
import msgspec
from django.conf import settings

from agent.api import RouteSpec, RoutesRequest
from agent.client import AgentError
from hosts import agents
from hosts.models import RuntimeHost
from operations.fanout import for_each_host
from projects.models import DatabaseSettings, DesiredState, Project, Status
from templating.manifest import manifest_of

log = logging.getLogger(__name__)


class NoDatabase(Exception):
    """The project holds no database port on a host (never provisioned, or deleted)."""


def db_endpoint(project: Project) -> tuple[str | None, int]:
    """(host override or None, port) where the project's own server listens on its host.

    None for the host means the agent's probe host: runtimes answer where only their host reaches them."""
    block = getattr(project, "port_block", None)
    slots = manifest_of(project.template_version).ports
    if project.host is None or block is None or "db" not in slots:
        raise NoDatabase(f"Project {project.ref} has no database running yet")
    return project.host.probe_host_override or None, block.first_port + slots["db"]


def host_routes(host: RuntimeHost) -> RoutesRequest:
    projects = (
        Project.objects.live()
        .filter(host=host, port_block__isnull=False)
        .exclude(desired_state=DesiredState.DELETED)
        .select_related("host", "port_block", "template_version", "dbsettings")
        .order_by("ref")
    )
    routes = []
    for project in projects:
        try:
            address, port = db_endpoint(project)
        except NoDatabase:
            continue
        routes.append(
            RouteSpec(
                ref=project.ref,
                port=port,
                host=address,
                paused=project.desired_state == DesiredState.STOPPED or project.status == Status.INACTIVE,
                max_client_conn=project.max_client_conn,
                pool_size=project.pool_size,
                password=project.secrets["postgres_password"],
                allowed_cidrs=_allowed(project),
            )
        )
    return RoutesRequest(domain=settings.BERTH_DATABASE_DOMAIN, routes=routes)


def _allowed(project: Project) -> list[str] | None:
    """The project's allowed client ranges for its router; None when it restricts nothing."""
    try:
        row = project.dbsettings
    except DatabaseSettings.DoesNotExist:
        return None
    cidrs = [*row.allowed_cidrs, *row.allowed_cidrs_v6]
    return None if {"0.0.0.0/0", "::/0"} <= set(cidrs) else cidrs


def push_routes(host: RuntimeHost, deadline: float | None = None) -> bool:
    """Hand the host's agent its table; False (logged) when the agent did not take it."""
    request = host_routes(host)
    try:
        status = agents.client_for(host, deadline=deadline or settings.BERTH_AGENT_CALL_DEADLINE).routes(request)
    except AgentError as error:
        log.warning("routes of host %s were not pushed: %s", host.name, error)
        return False
    capabilities = {**host.capabilities, "router": msgspec.to_builtins(status)}
    RuntimeHost.objects.filter(pk=host.pk).update(capabilities=capabilities)
    host.capabilities = capabilities
    return True


def push_after(project: Project) -> None:
    """After an operation or a change of the pooler's settings: its host's table follows the
    project, pushed by a task of its own, so neither the operation's task nor a web request
    waits on the agent. Call it once the change is committed."""
    host_id = Project.objects.filter(pk=project.pk).values_list("host_id", flat=True).first()
    if host_id is not None:
        django_q.tasks.async_task("operations.tasks.push_host_routes", host_id, group="routes")


def push_host(host_id: int) -> bool:
    """The task `push_after` queues: best effort, never raising (`push_all` repairs a failure)."""
    host = RuntimeHost.objects.filter(pk=host_id).first()
    if host is None:
        return False
    try:
        return push_routes(host)
    except Exception:
        log.exception("routes of host %s were not pushed", host.name)
        return False


def push_all() -> int:
    """Every host with projects, BERTH_HOST_THREADS at a time; how many took their table."""
    stop_at = time.monotonic() + settings.BERTH_OPERATION_DEADLINE - settings.BERTH_AGENT_CALL_DEADLINE
    hosts = {host.pk: host for host in RuntimeHost.objects.filter(pk__in=Project.objects.live().values("host"))}

    def push(host) -> int:
        return int(time.monotonic() < stop_at and push_routes(host))

    return for_each_host(hosts, push)
