"""Choosing a host for a project: it must accept projects, run the requested Postgres major,
have a free port block, and have an agent that answers now."""

from django.db import transaction
from django.db.models import Count

from hosts.actions import refresh_host
from hosts.models import RuntimeHost
from projects.models import Project


def candidates(project: Project) -> list[RuntimeHost]:
    """Hosts that could take the project, most free port blocks first."""
    from ports.models import BlockState, PortBlock

    # A host whose agent never reported is a candidate too: placement asks it before use.
    hosts = [
        h
        for h in RuntimeHost.objects.filter(accepts_projects=True)
        if not h.capabilities or project.postgres_major in h.postgres_versions
    ]
    free = dict(
        PortBlock.objects.filter(host__in=hosts, state=BlockState.FREE)
        .values("host")
        .annotate(n=Count("pk"))
        .values_list("host", "n")
    )
    return sorted(hosts, key=lambda h: (-free.get(h.pk, 0), h.name))


def place_project(project: Project, *, deadline: float) -> RuntimeHost:
    """Put the project on the first candidate whose agent answers; idempotent once placed."""
    from operations.runner import StepFailed

    reasons = []
    for host in candidates(project):
        if not refresh_host(host, deadline=deadline):
            reasons.append(f"{host.name}: agent unreachable ({host.last_error})")
            continue
        if project.postgres_major not in host.postgres_versions:
            reasons.append(f"{host.name}: no longer runs Postgres {project.postgres_major}")
            continue
        with transaction.atomic():
            placed = Project.objects.filter(pk=project.pk, host__isnull=True).update(host=host)
        if not placed:
            project.refresh_from_db(fields=["host"])
            return project.host
        return host
    detail = "; ".join(reasons) or f"no host accepts projects that run Postgres {project.postgres_major}"
    raise StepFailed("no_host", f"No host can take {project.ref}: {detail}")
