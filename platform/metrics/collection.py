"""The metrics pass (schedule `berth-metrics`, every BERTH_METRICS_COLLECT_MINUTES): each
host's agent reads the database statistics of its running runtimes in one call per host
(MAX_METRICS_TARGETS runtimes a call), kept as ProjectSample rows; each host's live projects
and free blocks as a HostSample; the fleet's projects by status and revision as FleetCount
rows, so /metrics never counts the fleet; and samples past BERTH_METRICS_RETENTION_HOURS go.

Hosts are asked BERTH_HOST_THREADS at once (operations.fanout), each call within
BERTH_AGENT_CALL_DEADLINE: a dead agent costs its host's samples, never the others'. A
runtime the agent could not read gets no sample (its chart shows the gap). Each host's
answer (or silence) is recorded as its last contact, so every host is heard from once per
interval.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, OuterRef, Subquery
from django.utils import timezone

from agent import api
from agent.client import AgentError
from hosts import agents
from hosts.actions import record_contact, refresh_host
from hosts.models import RuntimeHost
from metrics.models import FleetCount, HostSample, ProjectSample
from operations.fanout import for_each_host
from operations.health import host_projects
from ports.models import free_blocks, with_block_counts
from projects.models import Project
from templating.manifest import manifest_of

log = logging.getLogger(__name__)


def collect_all() -> int:
    """One metrics pass; returns how many project samples it recorded."""
    now = timezone.now()
    prune(now)  # first, so no rate is taken over a sample past the retention
    hosts = list(RuntimeHost.objects.order_by("name"))
    recorded = for_each_host({host.pk: host for host in hosts}, collect_host)
    record_host_samples(now)
    record_fleet_counts(now)
    return recorded


def targets(projects: list[Project]) -> dict[str, tuple[Project, api.MetricsTarget]]:
    """What the agent connects to for each project: its database slot (the one its postgres
    probe checks) on its leased block, with its password; projects without one are left out."""
    found = {}
    for project in projects:
        manifest = manifest_of(project.template_version)
        slot = next((probe.slot for probe in manifest.probes if probe.kind == "postgres"), None)
        password = project.secrets.get("postgres_password")
        if slot is None or password is None:
            continue
        port = project.port_block.first_port + manifest.ports[slot]
        target = api.MetricsTarget(project.ref, port, password, host=project.host.probe_host_override or None)
        found[project.ref] = (project, target)
    return found


def collect_host(host: RuntimeHost) -> int:
    """Ask one host's agent for its runtimes' statistics and record them; returns samples kept.

    The call's outcome is the host's contact (hosts.actions.record_contact: the
    host-unreachable alert reads it); a host with nothing to read is asked for its info
    instead, so every host is heard from once per pass.
    """
    wanted = targets(host_projects(host))
    if not wanted:
        refresh_host(host, deadline=settings.BERTH_AGENT_CALL_DEADLINE)
        return 0
    replies, batch = [], list(wanted.values())
    for start in range(0, len(batch), api.MAX_METRICS_TARGETS):
        chunk = [target for _, target in batch[start : start + api.MAX_METRICS_TARGETS]]
        try:
            client = agents.client_for(host, deadline=settings.BERTH_AGENT_CALL_DEADLINE)
            replies.extend(client.metrics(chunk, deadline_s=settings.BERTH_AGENT_CALL_DEADLINE * 0.8))
        except AgentError as exc:
            log.warning("metrics of %s not collected: %s", host.name, exc)
            record_contact(host, exc)
            break
    else:
        record_contact(host, None)
    now = timezone.now()
    readings = [(wanted[r.ref][0], r) for r in replies if r.ref in wanted and r.error is None]
    return record_samples(readings, now)


def record_samples(readings: list[tuple[Project, api.RuntimeMetrics]], now) -> int:
    """Keep one sample per reading, with rates since each project's previous sample."""
    if not readings:
        return 0
    latest = ProjectSample.objects.filter(project=OuterRef("pk")).order_by("-at").values("pk")[:1]
    previous_ids = (
        Project.objects.filter(pk__in=[p.pk for p, _ in readings])
        .annotate(sample=Subquery(latest))
        .values_list("pk", "sample")
    )
    previous = ProjectSample.objects.in_bulk([sample for _, sample in previous_ids if sample is not None])
    by_project = {sample.project_id: sample for sample in previous.values()}
    samples = [sample_of(project, reading, by_project.get(project.pk), now) for project, reading in readings]
    ProjectSample.objects.bulk_create(samples, batch_size=1000)
    return len(samples)


def sample_of(project: Project, reading: api.RuntimeMetrics, before: ProjectSample | None, now) -> ProjectSample:
    hits, reads = reading.blocks_hit_total or 0, reading.blocks_read_total or 0
    sample = ProjectSample(
        project=project,
        at=now,
        connections=sum(reading.connections.values()),
        connections_by_state=reading.connections,
        database_bytes=reading.database_bytes or 0,
        xact_total=reading.xact_total or 0,
        rows_read_total=reading.rows_read_total or 0,
        rows_written_total=reading.rows_written_total or 0,
        cache_hit_ratio=hits / (hits + reads) if hits + reads else None,
        longest_transaction_s=reading.longest_transaction_s,
        replication_lag_bytes=reading.replication_lag_bytes,
        wal_archived_total=reading.wal_archived_total,
        wal_archive_failed_total=reading.wal_archive_failed_total,
        last_archived_age_s=reading.last_archived_age_s,
    )
    if before is not None:
        seconds = (now - before.at).total_seconds()
        sample.tps = _rate(sample.xact_total, before.xact_total, seconds)
        sample.rows_read_per_s = _rate(sample.rows_read_total, before.rows_read_total, seconds)
        sample.rows_written_per_s = _rate(sample.rows_written_total, before.rows_written_total, seconds)
    return sample


def _rate(now_total: int, before_total: int, seconds: float) -> float | None:
    """Per second between two readings of a counter; None when it went down (reset) or no time passed."""
    if seconds <= 0 or now_total < before_total:
        return None
    return (now_total - before_total) / seconds


def record_host_samples(now) -> None:
    """Each host's live projects (exact: one grouped count in the worker) and free blocks."""
    projects = dict(
        Project.objects.live()
        .filter(host__isnull=False)
        .values("host")
        .annotate(n=Count("pk"))
        .values_list("host", "n")
    )
    HostSample.objects.bulk_create(
        HostSample(host=host, at=now, projects=projects.get(host.pk, 0), free_blocks=free_blocks(host))
        for host in with_block_counts(RuntimeHost.objects.all())
    )


def record_fleet_counts(now) -> None:
    """Replace the fleet's counts of live projects by status and template revision."""
    rows = (
        Project.objects.live()
        .values("status", "template_version__name", "template_version__revision")
        .annotate(n=Count("pk"))
        .order_by()
    )
    counts = [
        FleetCount(
            status=row["status"],
            template=row["template_version__name"],
            revision=row["template_version__revision"],
            count=row["n"],
            at=now,
        )
        for row in rows
    ]
    with transaction.atomic():
        FleetCount.objects.all().delete()
        FleetCount.objects.bulk_create(counts)


def prune(now) -> None:
    cutoff = now - timedelta(hours=settings.BERTH_METRICS_RETENTION_HOURS)
    ProjectSample.objects.filter(at__lt=cutoff).delete()
    HostSample.objects.filter(at__lt=cutoff).delete()
