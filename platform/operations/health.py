"""Health probes of project runtimes, run by each host's agent where they can reach them.

Observed status follows the probes with hysteresis: a healthy project turns
ACTIVE_UNHEALTHY only after BERTH_UNHEALTHY_AFTER consecutive failed refreshes, and
nothing here ever stops or removes a runtime.
"""

import logging
import random
import time
from dataclasses import dataclass, field

import msgspec
from django.conf import settings

from agent import api
from agent.client import AgentError
from hosts import agents
from hosts.models import RuntimeHost
from operations.fanout import for_each_host
from projects.models import DesiredState, Project, Status, StatusCause, StatusMove
from templating.manifest import manifest_of
from templating.models import TemplateVersion

log = logging.getLogger(__name__)

PASS, FAIL, MISCONFIGURED = "pass", "fail", "misconfigured"


@dataclass
class ProbeOutcome:
    results: list[dict] = field(default_factory=list)

    @property
    def misconfigured(self) -> bool:
        return any(r["status"] == MISCONFIGURED for r in self.results)

    @property
    def healthy(self) -> bool:
        return bool(self.results) and all(r["status"] == PASS for r in self.results)

    @property
    def summary(self) -> str:
        failing = [f"{r['name']}: {r['status']} ({r.get('detail', '')})" for r in self.results if r["status"] != PASS]
        return "; ".join(failing) or "all probes pass"

    def as_data(self) -> list[dict]:
        return self.results


def probe_requests(project: Project) -> list[api.Probe]:
    """The agent probes for one project's template probes, on its leased ports."""
    manifest = manifest_of(project.template_version)
    first_port = project.port_block.first_port
    override = project.host.probe_host_override or None
    requests = []
    for probe in manifest.probes:
        request = api.Probe(probe.name, probe.kind, first_port + manifest.ports[probe.slot], host=override)
        if probe.kind == "http":
            request = msgspec.structs.replace(request, path=probe.path, expect_status=probe.expect_status)
        elif probe.kind == "postgres":
            request = msgspec.structs.replace(
                request,
                user="postgres",
                password=project.secrets["postgres_password"],
                dbname="postgres",
                expect_major=project.postgres_major,
            )
        requests.append(request)
    return requests


def _judge(project: Project, replies: list[dict]) -> list[dict]:
    """Agent results, with the Postgres major checked here too: a wrong major is never healthy."""
    results = []
    for reply in replies:
        result = dict(reply)
        major = result.get("server_major")
        if result["status"] == PASS and major is not None and int(major) != project.postgres_major:
            result["status"] = FAIL
            result["detail"] = f"server runs Postgres {major}, project asked for {project.postgres_major}"
        results.append(result)
    return results


def probe_project(project: Project, *, deadline: float) -> ProbeOutcome:
    reply = agents.client_for(project.host, deadline=deadline).health(
        probe_requests(project), deadline_s=deadline * 0.8
    )
    return ProbeOutcome(_judge(project, [r.as_dict() for r in reply]))


# What a refresh reads of a project's own row: its ref, the keys of its host and version
# (each loaded once, apart), its probes' password and Postgres major, and the status it may move.
REFRESH_FIELDS = (
    "ref",
    "host",
    "template_version",
    "postgres_major",
    "secrets",
    "status",
    "status_reason",
    "probe_failures",
)


def refreshable_projects():
    """Running projects with settled status and no operation in flight, with their port blocks.

    Only the fields a refresh reads are loaded (REFRESH_FIELDS and the block's first port):
    the rest of a row is most of its loading cost, and reading a field left out would cost
    a query per project.
    """
    return (
        Project.objects.idle()
        .filter(
            desired_state=DesiredState.RUNNING,
            status__in=[Status.ACTIVE_HEALTHY, Status.ACTIVE_UNHEALTHY, Status.UNKNOWN],
            host__isnull=False,
            port_block__isnull=False,
        )
        .select_related("port_block")
        .only(*REFRESH_FIELDS, "port_block__first_port")
    )


def host_projects(host) -> list[Project]:
    """The host's refreshable projects, sharing the host and their template versions: versions
    are few, each is loaded once rather than joined into every row (its files, once per
    project, were most of a large fleet's refresh)."""
    projects = list(refreshable_projects().filter(host=host))
    versions = TemplateVersion.objects.in_bulk({p.template_version_id for p in projects})
    for project in projects:
        project.host, project.template_version = host, versions[project.template_version_id]
    return projects


def status_move(project: Project, outcome: ProbeOutcome) -> StatusMove | None:
    """Where one refresh moves the project (its status, reason and count of failed refreshes),
    or None when there is nothing to record."""
    if outcome.misconfigured:
        return StatusMove(project.status, f"probe misconfigured: {outcome.summary}")
    if outcome.healthy:
        if project.status == Status.ACTIVE_HEALTHY and not project.probe_failures and not project.status_reason:
            return None  # nothing to record: a healthy fleet's refresh writes nothing
        return StatusMove(Status.ACTIVE_HEALTHY, "", probe_failures=0)
    failures = project.probe_failures + 1
    if failures >= settings.BERTH_UNHEALTHY_AFTER and project.status != Status.ACTIVE_UNHEALTHY:
        return StatusMove(Status.ACTIVE_UNHEALTHY, outcome.summary, probe_failures=failures)
    return StatusMove(project.status, outcome.summary, probe_failures=failures)


def apply_outcomes(outcomes: list[tuple[Project, ProbeOutcome]]) -> None:
    """Move the projects' observed status after one refresh, each unless an operation started
    on it meanwhile or its status moved since it was read.

    One status gate call for all the projects read with the same status (one UPDATE, each row
    its own values), so a batch costs a few statements, never one per project.
    """
    by_status: dict[str, dict[int, StatusMove]] = {}
    for project, outcome in outcomes:
        move = status_move(project, outcome)
        if move is not None:
            by_status.setdefault(project.status, {})[project.pk] = move
    for status, moves in by_status.items():
        Project.objects.idle().filter(status=status).move_status(moves, cause=StatusCause.HEALTH)


def _batches(prepared: list[tuple[Project, list[api.Probe]]]):
    """Projects grouped so no agent call carries more probes than the agent takes at once
    (api.MAX_PROBES); one project's probes always travel together."""
    batch, size = [], 0
    for project, requests in prepared:
        if batch and size + len(requests) > api.MAX_PROBES:
            yield batch
            batch, size = [], 0
        batch.append((project, requests))
        size += len(requests)
    if batch:
        yield batch


def refresh_host_projects(host, projects: list[Project]) -> None:
    """All of a host's projects in as few agent calls as the agent's probe limit allows."""
    for batch in _batches([(project, probe_requests(project)) for project in projects]):
        _refresh_batch(host, batch)


def _refresh_batch(host, batch: list[tuple[Project, list[api.Probe]]]) -> None:
    requests, owner = [], {}
    for project, project_requests in batch:
        for request in project_requests:
            named = msgspec.structs.replace(request, name=f"{project.ref}:{request.name}")
            owner[named.name] = project
            requests.append(named)
    deadline = settings.BERTH_AGENT_CALL_DEADLINE
    try:
        replies = agents.client_for(host, deadline=deadline).health(requests, deadline_s=deadline * 0.8)
    except AgentError as error:
        # No answer says nothing about the projects: their status stays as it is.
        log.warning("health refresh of host %s failed: %s", host.name, error)
        return
    by_project: dict[int, list[dict]] = {}
    for reply in replies:
        result = reply.as_dict()
        project = owner.get(result["name"])
        if project is None:  # a name we never sent: the agent is confused, not the project
            log.warning("host %s answered a probe nobody asked for: %s", host.name, result["name"])
            continue
        result["name"] = result["name"].split(":", 1)[1]
        by_project.setdefault(project.pk, []).append(result)
    apply_outcomes([(project, ProbeOutcome(_judge(project, by_project.get(project.pk, [])))) for project, _ in batch])


def refresh_all() -> int:
    """Refresh every refreshable project, batched per host, BERTH_HOST_THREADS hosts at once.
    Returns how many were probed.

    Each host's thread loads that host's projects itself, so a pass holds a few hosts'
    projects at a time, not the fleet's, and its cost per project stays flat as the fleet
    grows. No agent call starts past BERTH_OPERATION_DEADLINE less one call deadline, so the
    task ends inside django-q2's timeout however many agents are unreachable; hosts start in
    random order, so when time runs out no host is always the one left out.
    """
    hosts = list(RuntimeHost.objects.filter(pk__in=refreshable_projects().values("host")))
    random.shuffle(hosts)
    stop_at = time.monotonic() + settings.BERTH_OPERATION_DEADLINE - settings.BERTH_AGENT_CALL_DEADLINE

    def refresh(host) -> int:
        if time.monotonic() > stop_at:
            log.warning("health refresh out of time; host %s waits for the next run", host.name)
            return 0
        projects = host_projects(host)
        refresh_host_projects(host, projects)
        return len(projects)

    return for_each_host({host.pk: host for host in hosts}, refresh)
