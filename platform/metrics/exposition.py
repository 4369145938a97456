"""Berth's own metrics in Prometheus's text format (prometheus_client), for /metrics.

Every number comes from the database, so any web process answers the same whatever
process did the work (see docs/architecture.md, "Metrics"): live state by bounded queries
(unfinished operations, hosts with their block counts rows, rollouts), the fleet's project
counts from the last metrics pass (FleetCount), and events as the counters processes flush
(telemetry.Counter) or that the API's rate windows keep. No query reads the whole fleet.
"""

import json
import math
from collections import defaultdict

from django.apps import apps
from django.db.models import Count, Min, Sum
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from backups.models import Protection
from hosts.models import RuntimeHost
from metrics.models import FleetCount, ProjectSample
from operations.models import UNFINISHED_STATES, Operation, Rollout, State
from ports.models import free_blocks, with_block_counts
from telemetry.models import Counter

HOST_FIELDS = (
    "name",
    "last_error",
    "last_seen_at",
    "accepts_projects",
    "port_range_start",
    "port_range_end",
    "block_size",
)
HISTOGRAMS = ("berth_agent_call_duration_seconds", "berth_operation_duration_seconds")
HELP = {
    "berth_operations_finished_total": "Operations that ended, by kind and final state.",
    "berth_reaper_actions_total": (
        "What the reaper did: operations timed out, projects moved out of a transitional status."
    ),
    "berth_agent_call_errors_total": "Agent calls that failed, by host, route and error.",
    "berth_agent_call_duration_seconds": "Agent call latency by host and route.",
    "berth_operation_duration_seconds": "How long operations ran (claim to end), by kind.",
}


def render_berth() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BerthCollector())
    return generate_latest(registry)


class BerthCollector:
    def collect(self):
        now = timezone.now()
        yield from projects()
        yield from operations(now)
        yield from hosts()
        yield from rollouts()
        yield from api_requests()
        yield from counters()
        yield from protection()


def projects():
    family = GaugeMetricFamily(
        "berth_projects",
        "Live projects by status and template revision (at the last metrics pass).",
        labels=["status", "template", "revision"],
    )
    counted_at = None
    for row in FleetCount.objects.order_by("status", "template", "revision"):
        family.add_metric([row.status, row.template, str(row.revision)], row.count)
        counted_at = row.at
    yield family
    if counted_at is not None:
        yield GaugeMetricFamily(
            "berth_projects_counted_timestamp_seconds",
            "When the last metrics pass counted the projects.",
            value=counted_at.timestamp(),
        )


def protection():
    """Projects whose backups, WAL archiving or restore test are failing (the alert rule's set;
    a bounded query on the failing index)."""
    yield GaugeMetricFamily(
        "berth_projects_protection_failing",
        "Live projects whose last base backup, WAL archiving or restore test failed.",
        value=Protection.objects.failing().count(),
    )


def operations(now):
    unfinished = GaugeMetricFamily(
        "berth_operations", "Unfinished operations by kind and state.", labels=["kind", "state"]
    )
    for row in (
        Operation.objects.filter(state__in=UNFINISHED_STATES).values("kind", "state").annotate(n=Count("pk")).order_by()
    ):
        unfinished.add_metric([row["kind"], row["state"]], row["n"])
    yield unfinished
    queued = Operation.objects.filter(state=State.QUEUED).aggregate(n=Count("pk"), oldest=Min("created_at"))
    yield GaugeMetricFamily("berth_queue_depth", "Operations waiting for a worker.", value=queued["n"])
    oldest = 0.0 if queued["oldest"] is None else (now - queued["oldest"]).total_seconds()
    yield GaugeMetricFamily(
        "berth_queue_oldest_age_seconds", "How long the oldest queued operation has waited (0: none).", value=oldest
    )


def hosts():
    state = GaugeMetricFamily(
        "berth_hosts",
        "Hosts by state: up (last contact answered), unreachable, unknown (never reported), and draining.",
        labels=["state"],
    )
    up = GaugeMetricFamily("berth_host_up", "1 when the host's agent answered its last contact.", labels=["host"])
    blocks = GaugeMetricFamily(
        "berth_host_port_blocks", "Port blocks by state (free: can be leased now).", labels=["host", "state"]
    )
    by_state = dict.fromkeys(("up", "unreachable", "unknown", "draining"), 0)
    # Only what is shown: a whole row would decrypt the agent token and parse the capabilities.
    shown = RuntimeHost.objects.only(*HOST_FIELDS).order_by("name")
    for host in with_block_counts(shown):
        reached = "unreachable" if host.last_error else ("up" if host.last_seen_at else "unknown")
        by_state[reached] += 1
        by_state["draining"] += not host.accepts_projects
        up.add_metric([host.name], 1 if reached == "up" else 0)
        for name, value in (
            ("free", free_blocks(host)),
            ("leased", host.leased_blocks),
            ("cooling", host.cooling_blocks),
            ("blocked", host.blocked_blocks),
        ):
            blocks.add_metric([host.name, name], value)
    for name, value in by_state.items():
        state.add_metric([name], value)
    yield state
    yield up
    yield blocks


def rollouts():
    family = GaugeMetricFamily("berth_rollouts", "Rollouts by state.", labels=["state"])
    counted = dict(Rollout.objects.values("state").annotate(n=Count("pk")).order_by().values_list("state", "n"))
    for value in Rollout.State.values:
        family.add_metric([value], counted.get(value, 0))
    yield family


def api_requests():
    # The api app (a front end above this one) keeps the totals on its rate windows: read
    # through the app registry, not an import, as projects reaches operations.
    rate_window = apps.get_model("api", "RateWindow")
    totals = rate_window.objects.aggregate(total=Sum("total"), refused=Sum("refused"))
    yield CounterMetricFamily(
        "berth_api_requests", "Authenticated Management API requests.", value=totals["total"] or 0
    )
    yield CounterMetricFamily(
        "berth_api_throttled", "Management API requests refused with 429.", value=totals["refused"] or 0
    )


def counters():
    """The event counters and histograms every process flushed (telemetry.record)."""
    plain: dict[str, list] = defaultdict(list)
    parts: dict[str, dict[str, dict]] = defaultdict(lambda: defaultdict(lambda: {"buckets": {}, "sum": 0.0}))
    for name, labels, value in Counter.objects.order_by("name", "labels").values_list("name", "labels", "value"):
        labels = json.loads(labels)
        histogram = next((h for h in HISTOGRAMS if name.startswith(h + "_")), None)
        if histogram is None:
            plain[name].append((labels, value))
            continue
        le = labels.pop("le", None)
        series = parts[histogram][json.dumps(labels, sort_keys=True)]
        suffix = name[len(histogram) + 1 :]
        if suffix == "bucket":
            series["buckets"][le] = value
        elif suffix == "sum":
            series["sum"] = value
    for name, rows in plain.items():
        names = sorted({key for labels, _ in rows for key in labels})
        family = CounterMetricFamily(name, HELP.get(name, name), labels=names)
        for labels, value in rows:
            family.add_metric([labels.get(key, "") for key in names], value)
        yield family
    for name, series in parts.items():
        first = json.loads(next(iter(series)))
        family = HistogramMetricFamily(name, HELP.get(name, name), labels=sorted(first))
        for key, data in series.items():
            labels = json.loads(key)
            buckets = sorted(
                data["buckets"].items(), key=lambda item: math.inf if item[0] == "+Inf" else float(item[0])
            )
            family.add_metric([labels[k] for k in sorted(labels)], buckets, data["sum"])
        yield family


PROJECT_GAUGES = (
    ("database_size_bytes", "database_bytes", "Size of the project's databases."),
    ("transactions_per_second", "tps", "Commits and rollbacks per second since the previous sample."),
    ("rows_read_per_second", "rows_read_per_s", "Rows fetched per second since the previous sample."),
    ("rows_written_per_second", "rows_written_per_s", "Rows inserted, updated and deleted per second."),
    ("cache_hit_ratio", "cache_hit_ratio", "Buffer cache hits over all block reads since statistics were reset."),
    ("longest_transaction_seconds", "longest_transaction_s", "Age of the oldest open transaction."),
    ("replication_lag_bytes", "replication_lag_bytes", "How far the furthest replica is behind."),
    ("last_archived_wal_age_seconds", "last_archived_age_s", "Age of the last WAL segment archived."),
)
PROJECT_COUNTERS = (
    ("transactions", "xact_total", "Commits and rollbacks since statistics were reset."),
    ("rows_read", "rows_read_total", "Rows fetched since statistics were reset."),
    ("rows_written", "rows_written_total", "Rows inserted, updated and deleted since statistics were reset."),
    ("wal_archived", "wal_archived_total", "WAL segments archived."),
    ("wal_archive_failed", "wal_archive_failed_total", "WAL archiving attempts that failed."),
)


def latest_sample(project) -> ProjectSample | None:
    return ProjectSample.objects.filter(project=project).order_by("-at").first()


def render_project(project, sample: ProjectSample | None) -> bytes:
    """One project's database metrics from its latest sample (none yet: only the age, -1)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProjectCollector(project, sample))
    return generate_latest(registry)


class ProjectCollector:
    def __init__(self, project, sample):
        self.project, self.sample = project, sample

    def collect(self):
        ref, sample = self.project.ref, self.sample
        age = -1.0 if sample is None else (timezone.now() - sample.at).total_seconds()
        yield _gauge(
            "berth_project_sample_age_seconds", "Age of the sample these metrics come from (-1: none yet).", ref, age
        )
        yield from project_protection(self.project)
        if sample is None:
            return
        connections = GaugeMetricFamily(
            "berth_project_connections", "Client connections by state.", labels=["ref", "state"]
        )
        for state, n in sorted(sample.connections_by_state.items()):
            connections.add_metric([ref, state], n)
        yield connections
        for name, field, text in PROJECT_GAUGES:
            value = getattr(sample, field)
            if value is not None:
                yield _gauge(f"berth_project_{name}", text, ref, value)
        for name, field, text in PROJECT_COUNTERS:
            value = getattr(sample, field)
            if value is not None:
                family = CounterMetricFamily(f"berth_project_{name}", text, labels=["ref"])
                family.add_metric([ref], value)
                yield family


def project_protection(project):
    """The project's backups as its protection was last recorded; nothing when unprotected."""
    found = Protection.objects.filter(project=project, enabled=True).first()
    if found is None:
        return
    ref = project.ref
    yield _gauge(
        "berth_project_protection_failing",
        "1 when its backups, WAL archiving or restore test fail.",
        ref,
        int(bool(found.failure)),
    )
    yield _gauge(
        "berth_project_wal_archive_failing",
        "1 when PostgreSQL's last WAL archive attempt failed.",
        ref,
        int(found.archiving_failing),
    )
    if found.last_backup_at is not None:
        yield _gauge(
            "berth_project_last_backup_timestamp_seconds",
            "When its last base backup finished.",
            ref,
            found.last_backup_at.timestamp(),
        )
    if found.last_archived_at is not None:
        yield _gauge(
            "berth_project_last_archived_timestamp_seconds",
            "When its last WAL segment was archived.",
            ref,
            found.last_archived_at.timestamp(),
        )
    if found.window is not None:
        yield _gauge(
            "berth_project_restorable_earliest_timestamp_seconds",
            "The earliest point it can be restored to.",
            ref,
            found.window[0].timestamp(),
        )


def _gauge(name, text, ref, value):
    family = GaugeMetricFamily(name, text, labels=["ref"])
    family.add_metric([ref], value)
    return family
