"""Choosing a host for a project: it must accept projects, run the requested Postgres major,
have a free port block, and have an agent that answers now."""

from hosts.actions import refresh_host
from hosts.models import RuntimeHost
from projects.models import Project


def can_run(version, major: int, host: RuntimeHost) -> bool:
    """The host's driver runs the template version with that Postgres major (the rule creation checks)."""
    from templating.versions import supported_majors

    return major in supported_majors(version, host)


def candidates(project: Project) -> list[RuntimeHost]:
    """Hosts that could take the project and have a free port block, most free blocks first."""
    from ports.report import host_report

    # A host whose agent never reported is a candidate too: placement asks it before use.
    accepting = RuntimeHost.objects.filter(accepts_projects=True)
    if project.region:
        accepting = accepting.filter(region__in=["", project.region])
    hosts = [h for h in accepting if not h.capabilities or can_run(project.template_version, project.postgres_major, h)]
    reports = {h.pk: host_report(h) for h in hosts}
    # Blocks not laid out yet are free too: the first lease on a host creates them.
    free = {pk: r.counts.free + r.unlaid for pk, r in reports.items()}
    return sorted((h for h in hosts if free[h.pk] > 0), key=lambda h: (-free[h.pk], h.name))


def place_project(project: Project, *, deadline: float) -> RuntimeHost:
    """Put the project on the first candidate whose agent answers; idempotent once placed."""
    from operations.runner import StepFailed

    reasons = []
    for host in candidates(project):
        if not refresh_host(host, deadline=deadline):
            reasons.append(f"{host.name}: agent unreachable ({host.last_error})")
            continue
        if not can_run(project.template_version, project.postgres_major, host):
            reasons.append(
                f"{host.name}: its {host.driver} driver cannot run Postgres {project.postgres_major} of this template"
            )
            continue
        placed = Project.objects.filter(pk=project.pk, host__isnull=True).update(host=host)
        if not placed:
            project.refresh_from_db(fields=["host"])
            return project.host
        return host
    detail = "; ".join(reasons) or (
        f"no host that accepts projects, runs {project.template} with Postgres {project.postgres_major} "
        "and has a free port block"
    )
    raise StepFailed("no_host", f"No host can take {project.ref}: {detail}")
