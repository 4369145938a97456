"""What the metrics pass keeps: per-project database samples, per-host capacity samples,
and the fleet's project counts (see metrics/collection.py). Samples older than
BERTH_METRICS_RETENTION_HOURS are deleted by the pass."""

from django.db import models


class ProjectSample(models.Model):
    """One collection of a project's database statistics, as its host's agent read them.

    Totals (`*_total`) are PostgreSQL's counters since its statistics were last reset;
    rates are per second since the project's previous sample, None for its first one or
    when a total went down (a restart or reset in between).
    """

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField()
    connections = models.IntegerField()
    connections_by_state = models.JSONField(default=dict)
    database_bytes = models.BigIntegerField()
    xact_total = models.BigIntegerField()
    rows_read_total = models.BigIntegerField()
    rows_written_total = models.BigIntegerField()
    tps = models.FloatField(null=True)
    rows_read_per_s = models.FloatField(null=True)
    rows_written_per_s = models.FloatField(null=True)
    cache_hit_ratio = models.FloatField(null=True)
    longest_transaction_s = models.FloatField(null=True)
    replication_lag_bytes = models.BigIntegerField(null=True)
    wal_archived_total = models.BigIntegerField(null=True)
    wal_archive_failed_total = models.BigIntegerField(null=True)
    last_archived_age_s = models.FloatField(null=True)

    class Meta:
        indexes = [
            models.Index(fields=["project", "at"], name="project_sample_idx"),
            models.Index(fields=["at"], name="project_sample_at_idx"),
        ]

    def __str__(self):
        return f"{self.project_id} at {self.at:%Y-%m-%d %H:%M}"


class HostSample(models.Model):
    """A host's live projects and free port blocks at one metrics pass (the hosts page's chart)."""

    host = models.ForeignKey("hosts.RuntimeHost", on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField()
    projects = models.IntegerField()
    free_blocks = models.IntegerField()

    class Meta:
        indexes = [
            models.Index(fields=["host", "at"], name="host_sample_idx"),
            models.Index(fields=["at"], name="host_sample_at_idx"),
        ]

    def __str__(self):
        return f"{self.host_id} at {self.at:%Y-%m-%d %H:%M}"


class FleetCount(models.Model):
    """Live projects by status and template revision, counted by the last metrics pass.

    Counting 100,000 projects on every scrape would make /metrics cost what the fleet
    weighs; the pass counts once per interval in the worker and /metrics reads these rows.
    """

    status = models.CharField(max_length=32)
    template = models.CharField(max_length=100)
    revision = models.IntegerField()
    count = models.IntegerField()
    at = models.DateTimeField()

    def __str__(self):
        return f"{self.status} {self.template} r{self.revision}: {self.count}"
