"""Choosing a host for a project: it must accept projects, run the requested Postgres major,
have blocks that hold the template's port slots with one not leased, and have an agent that
answers now.

Placement asks candidates one after another, so it is bounded twice: each agent call by
the time left of the caller's budget, and hosts whose last contact failed are asked last,
so a dead host never delays a placement on a live one.
"""

import time

from django.conf import settings

from hosts.actions import refresh_host
from hosts.models import RuntimeHost
from ports.models import PortBlock
from ports.report import host_report
from projects.models import Project
from templating.manifest import manifest_of


class NoHost(Exception):
    """No host can take the project now; the message says why for each host asked."""

    code = "no_host"


def candidates(project: Project) -> list[RuntimeHost]:
    """Hosts that could take the project and have a block that is not leased: hosts last heard
    from first, then most free blocks first."""
    slots = manifest_of(project.template_version).slots_needed
    # A host whose agent never reported is a candidate too: placement asks it before use.
    accepting = RuntimeHost.objects.filter(accepts_projects=True)
    if project.region:
        accepting = accepting.filter(region__in=["", project.region])
    version, major = project.template_version, project.postgres_major
    hosts = [h for h in accepting if h.holds_slots(slots) and (not h.has_reported or h.can_run(version, major))]
    reports = {h.pk: host_report(h) for h in hosts}
    # Blocks not laid out yet are free too: the first lease on a host creates them. Blocked
    # blocks count as possible: the lease re-checks them before declaring the host full.
    free = {pk: r.counts.free + r.unlaid for pk, r in reports.items()}
    blocked = {pk: r.counts.blocked for pk, r in reports.items()}
    return sorted(
        (h for h in hosts if free[h.pk] + blocked[h.pk] > 0),
        key=lambda h: (bool(h.last_error), -free[h.pk], -blocked[h.pk], h.name),
    )


def place_project(project: Project, *, deadline: float) -> RuntimeHost:
    """Put the project on the first candidate whose agent answers, asking all of them within
    `deadline` seconds in total; idempotent once placed."""
    ends = time.monotonic() + deadline
    reasons = []
    for host in candidates(project):
        left = ends - time.monotonic()
        if left <= 0:
            reasons.append(f"{host.name}: not asked, placement ran out of time")
            continue
        if not refresh_host(host, deadline=min(settings.BERTH_AGENT_CALL_DEADLINE, left)):
            reasons.append(f"{host.name}: agent unreachable ({host.last_error})")
            continue
        if not host.can_run(project.template_version, project.postgres_major):
            reasons.append(
                f"{host.name}: its {host.driver} driver cannot run Postgres {project.postgres_major} of this template"
            )
            continue
        placed = Project.objects.filter(pk=project.pk, host__isnull=True).update(host=host)
        if not placed:
            project.refresh_from_db(fields=["host"])
            return project.host
        return host
    where = f" in region {project.region!r} (or unlabelled)" if project.region else ""
    detail = "; ".join(reasons) or (
        f"no host{where} that accepts projects, runs {project.template} with Postgres {project.postgres_major}, "
        f"has blocks of at least {manifest_of(project.template_version).slots_needed} ports and one of them not leased"
    )
    raise NoHost(f"No host can take {project.ref}: {detail}")


def unplace_if_unfit(project: Project) -> bool:
    """Take a placed project off a host whose blocks cannot hold its template's ports, as long
    as it holds no port block there (so nothing was leased or started). Returns whether it did.

    A provisioning that failed for that reason is then placed anew by its retry, instead of
    failing the same way on the same host forever.
    """
    host = project.host
    if host is None or host.holds_slots(manifest_of(project.template_version).slots_needed):
        return False
    unplaced = (
        Project.objects.filter(pk=project.pk, host=host)
        .exclude(pk__in=PortBlock.objects.filter(project_id=project.pk).values("project_id"))
        .update(host=None)
    )
    if unplaced:
        project.host = None
    return bool(unplaced)
