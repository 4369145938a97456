"""Read-side queries for the dashboard pages.

Every list here costs the same number of queries whatever its length: related rows come
through select_related/prefetch_related, and per-row facts (last operation, latest
template revision, block counts, whether work is in flight) are correlated subqueries,
evaluated only for the rows of the page shown; counts of a fleet's projects stop at
COUNT_CAP (live_project_counts).
"""

from dataclasses import dataclass

from django.db import connection
from django.db.models import (
    BooleanField,
    Exists,
    ExpressionWrapper,
    F,
    Func,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    Subquery,
)

from hosts.models import RuntimeHost
from operations.models import UNFINISHED_STATES, Operation, OperationEvent, Rollout
from ports.models import block_capacity, free_blocks, with_block_counts
from projects.models import TRANSITIONAL_STATUSES, Project
from templating.models import TemplateVersion


def count_of(queryset):
    """COUNT(*) of `queryset` as a correlated subquery (joining several to-many relations
    in one query would multiply rows instead)."""
    # A plain Func, not the Count aggregate, so the ORM adds no GROUP BY: one row, even when empty.
    counted = queryset.order_by().annotate(n=Func(F("pk"), function="COUNT")).values("n")
    return Subquery(counted, output_field=IntegerField())


def in_flight_expression():
    """True while something may still change the project: a transitional status or unfinished work."""
    unfinished = Operation.objects.filter(project=OuterRef("pk"), state__in=UNFINISHED_STATES)
    return ExpressionWrapper(Q(status__in=TRANSITIONAL_STATUSES) | Exists(unfinished), output_field=BooleanField())


def project_table():
    """Live projects with everything a row of the projects table shows, in one query."""
    last = Operation.objects.filter(project=OuterRef("pk")).order_by("-created_at", "-pk")
    latest_revision = (
        TemplateVersion.objects.filter(name=OuterRef("template")).order_by("-revision").values("revision")[:1]
    )
    return (
        Project.objects.live()
        .select_related("host", "template_version")
        .annotate(
            last_op_kind=Subquery(last.values("kind")[:1]),
            last_op_state=Subquery(last.values("state")[:1]),
            last_op_at=Subquery(last.values("created_at")[:1]),
            latest_revision=Subquery(latest_revision, output_field=IntegerField()),
            update_available=ExpressionWrapper(
                Q(template_version__revision__lt=F("latest_revision")), output_field=BooleanField()
            ),
            in_flight=in_flight_expression(),
        )
    )


def project_page(ref: str):
    """One project with its organization, host, template version and port block."""
    return (
        Project.objects.select_related("organization", "host", "template_version", "port_block")
        .annotate(in_flight=in_flight_expression())
        .filter(ref=ref)
    )


def recent_operations(project, limit: int = 10):
    """The project's latest operations, newest first, each with its events in time order."""
    return list(
        project.operations.select_related("requested_by")
        .prefetch_related(Prefetch("events", queryset=OperationEvent.objects.order_by("at", "pk")))
        .order_by("-created_at", "-pk")[:limit]
    )


def status_history(project, limit: int = 10):
    """The project's latest status changes (the status gate's typed rows), newest first."""
    return list(project.status_changes.order_by("-at", "-pk")[:limit])


def hosts_with_capacity():
    """Hosts with their port blocks counted per state (a counts row each, never their blocks)."""
    return with_block_counts(RuntimeHost.objects.all()).order_by("name")


def with_capacity(hosts) -> list:
    """The hosts, each with `block_capacity` (whole blocks its range holds), `free_blocks`
    and `project_count` (its live projects, counted up to the cap: a host's block counts
    are bounded by its range, its projects only by the fleet).

    Free counts blocks not yet materialised as rows too: every block not leased, cooling
    or blocked can be handed out.
    """
    hosts = list(hosts)
    projects = live_project_counts("host", [host.pk for host in hosts])
    for host in hosts:
        host.project_count = projects[host.pk]
        host.block_capacity = block_capacity(host)
        host.free_blocks = free_blocks(host)
    return hosts


# Pages that count a fleet's projects (per template revision, host or organization) stop
# at this many: each count reads at most COUNT_CAP + 1 rows, so the page costs the same
# for a fleet of any size. Exact figures are the projects list's (filtered, keyset-paged).
COUNT_CAP = 1000


@dataclass(frozen=True)
class CappedCount:
    """A count that stopped at COUNT_CAP: shown as "1,000+" once it reached it."""

    value: int
    capped: bool

    @classmethod
    def of(cls, counted: int) -> "CappedCount":
        return cls(min(counted, COUNT_CAP), counted > COUNT_CAP)

    def __add__(self, other: "CappedCount") -> "CappedCount":
        return CappedCount(self.value + other.value, self.capped or other.capped)

    def __bool__(self) -> bool:
        return self.value > 0

    def __str__(self) -> str:
        return f"{self.value:,}+" if self.capped else f"{self.value:,}"


def live_project_counts(field: str, values) -> dict:
    """{value: CappedCount} of the live projects whose `field` is each value, each counted up
    to COUNT_CAP + 1 rows, in one query.

    Each count is a scalar subquery with its value written in, so the planner plans it for
    that value: an index scan for one that few rows hold, a short sequential scan for one
    that most do. A correlated subquery gets one generic plan for all, and for a template
    version no project runs that plan read the whole projects table."""
    values = list(values)
    if not values:
        return {}
    parts, params = [], []
    for value in values:
        # Only the filtered column is read: an index on it (and the live filter's status,
        # as the host's is) answers the count from the index alone.
        rows = Project.objects.live().filter(**{field: value}).order_by().values(field)[: COUNT_CAP + 1]
        sql, row_params = rows.query.sql_with_params()
        parts.append(f"(SELECT COUNT(*) FROM ({sql}) counted)")
        params.extend(row_params)
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(parts), params)
        counted = cursor.fetchone()
    return {value: CappedCount.of(n) for value, n in zip(values, counted, strict=True)}


def template_versions() -> list[TemplateVersion]:
    """Every template version, grouped by name, newest first, each with `project_count`:
    its live projects counted up to the cap (live_project_counts)."""
    versions = list(TemplateVersion.objects.order_by("name", "-revision"))
    counts = live_project_counts("template_version", [v.pk for v in versions])
    for version in versions:
        version.project_count = counts[version.pk]
    return versions


def migration_progress(name: str, versions: list[TemplateVersion]) -> dict:
    """How many live projects of template `name` are on its latest version (`versions[0]`)
    and on older ones, from the versions' capped counts (`template_versions`), and the
    template's latest rollout."""
    counts = [version.project_count for version in versions]
    return {
        "on_latest": counts[0],
        "behind": sum(counts[1:], CappedCount(0, False)),
        "total": sum(counts, CappedCount(0, False)),
        "rollout": Rollout.objects.filter(template=name).select_related("target").first(),
    }


# Newest first, the id breaking ties; each list has an index on these columns (keyset pages).
PROJECT_ORDERING = ["-created_at", "-pk"]
OPERATION_ORDERING = ["-created_at", "-pk"]


def operation_table():
    return Operation.objects.select_related("project", "project__host", "requested_by")
