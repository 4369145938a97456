"""What protects each project's data: the repositories backups go to, each project's
protection (WAL archiving and base backups, as its agent last reported them), and its base
backups. The operations that take, restore, clone and verify them are operations.protection's.

Invariants:
- A repository's credentials are encrypted at rest (berth.crypto) and never part of its
  display, its admin list or any event: `Repository.location()` is the only way to them.
- Every backup row names the repository it went to: a host given a repository of its own
  later still restores its projects from where their backups are.
- The restorable window is what the agent last read from the repository (its earliest
  base backup's end, its latest archived WAL); a restore outside it is refused.
"""

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models
from django.utils import timezone

from berth.crypto import EncryptedJSONField
from berth.env import RepositoryURL, parse_repository_url
from projects.models import DesiredState, Status

DEFAULT_REPOSITORY = "default"
# How a failed set-up of WAL archiving begins in Protection.backup_error (operations.protection).
SETUP_FAILED = "WAL archiving could not be turned on"


class RepositoryQuerySet(models.QuerySet):
    def default(self) -> "Repository":
        """The repository of BERTH_BACKUP_URL, its row kept as the setting says."""
        location = settings.BERTH_BACKUP_URL
        repository, _ = self.update_or_create(name=DEFAULT_REPOSITORY, defaults=Repository.fields_of(location))
        return repository

    def for_host(self, host) -> "Repository":
        """Where the projects of `host` keep their backups: its own repository, else the default."""
        own = self.filter(host=host).first() if host is not None else None
        return own or self.default()


class Repository(models.Model):
    """An S3-compatible bucket (and prefix) or a folder shared by the hosts."""

    name = models.SlugField(max_length=63, unique=True)
    # Without credentials: s3://bucket/prefix or file:///path.
    url = models.CharField(max_length=500, help_text="s3://bucket/prefix or file:///absolute/path (a shared mount)")
    endpoint = models.CharField(max_length=255, blank=True, help_text="S3 endpoint, e.g. https://s3.example.com")
    region = models.CharField(max_length=64, blank=True)
    # {"access_key": ..., "secret_key": ...}; encrypted at rest.
    credentials = EncryptedJSONField(default=dict, editable=False)
    # Set: the repository of this host's projects instead of BERTH_BACKUP_URL's.
    host = models.OneToOneField(
        "hosts.RuntimeHost", on_delete=models.CASCADE, null=True, blank=True, related_name="backup_repository"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = RepositoryQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "repositories"

    def __str__(self):
        return f"{self.name} ({self.location().display})"

    @staticmethod
    def fields_of(location: RepositoryURL) -> dict:
        where = f"file://{location.path}" if location.scheme == "file" else f"s3://{location.bucket}/{location.prefix}"
        credentials = {}
        if location.access_key:
            credentials = {"access_key": location.access_key, "secret_key": location.secret_key}
        return {
            "url": where.rstrip("/"),
            "endpoint": location.endpoint,
            "region": location.region,
            "credentials": credentials,
        }

    def location(self) -> RepositoryURL:
        """The parsed repository with its credentials, for the agent call that needs them."""
        parsed = parse_repository_url(self.url, name=f"repository {self.name}")
        return RepositoryURL(
            parsed.scheme,
            bucket=parsed.bucket,
            prefix=parsed.prefix,
            path=parsed.path,
            endpoint=self.endpoint,
            region=self.region,
            access_key=self.credentials.get("access_key", ""),
            secret_key=self.credentials.get("secret_key", ""),
        )

    def clean(self):
        try:
            parsed = parse_repository_url(self.url, name="url")
        except ImproperlyConfigured as error:
            raise ValidationError({"url": str(error)}) from None
        if parsed.access_key:
            raise ValidationError({"url": "Give the credentials in their own fields, not in the URL."})
        if parsed.scheme == "s3" and not self.endpoint and not self.region:
            raise ValidationError({"endpoint": "An S3 repository needs its endpoint (or at least its region)."})


class ProtectionQuerySet(models.QuerySet):
    def failing(self):
        """Protections of live projects whose last backup, WAL archiving or verification failed."""
        return self.filter(enabled=True).exclude(failure="").exclude(project__status=Status.REMOVED)

    def live(self, *, configured: bool = True):
        """Enabled protections, with their project, of projects neither removed nor being
        deleted: those whose WAL archiving was set up (`configured`), or those never set up."""
        return (
            self.filter(enabled=True, configured_at__isnull=not configured)
            .exclude(project__status=Status.REMOVED)
            .exclude(project__desired_state=DesiredState.DELETED)
            .select_related("project")
        )


class Protection(models.Model):
    """One project's continuous protection: WAL archived into its repository, base backups on
    schedule, restores verified. Kept as its operations and the status pass last found it."""

    project = models.OneToOneField("projects.Project", on_delete=models.CASCADE, related_name="protection")
    repository = models.ForeignKey(Repository, on_delete=models.PROTECT, related_name="protections")
    enabled = models.BooleanField(default=True)
    # When the runtime was last set to archive into `repository` (None: not yet; a protect
    # or provisioning operation does it).
    configured_at = models.DateTimeField(null=True, blank=True)
    # WAL archiving as PostgreSQL reports it (pg_stat_archiver) when the agent last read it.
    archived_count = models.BigIntegerField(default=0)
    last_archived_wal = models.CharField(max_length=64, blank=True)
    last_archived_at = models.DateTimeField(null=True, blank=True)
    failed_count = models.BigIntegerField(default=0)
    last_failed_wal = models.CharField(max_length=64, blank=True)
    last_failed_at = models.DateTimeField(null=True, blank=True)
    # PostgreSQL's own reason for the last failed archive (its log line), when failing.
    archive_error = models.TextField(blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    # The restorable window: from the end of the earliest kept base backup to the latest archived WAL.
    earliest_restorable_at = models.DateTimeField(null=True, blank=True)
    latest_restorable_at = models.DateTimeField(null=True, blank=True)
    last_backup_at = models.DateTimeField(null=True, blank=True)
    # Why the last base backup failed (repository unreachable, full, ...); empty once one succeeds.
    backup_error = models.TextField(blank=True)
    # The last verified restore (a scratch cluster from the repository): when, and whether it held.
    last_verified_at = models.DateTimeField(null=True, blank=True)
    last_verify_ok = models.BooleanField(null=True, blank=True)
    last_verify_message = models.TextField(blank=True)
    # Why protection is failing now, in words (empty: it is not): the first of a failed
    # backup, failing archiving, a failed verification. The fleet view and the alert read it.
    failure = models.TextField(blank=True)
    failure_since = models.DateTimeField(null=True, blank=True)

    objects = ProtectionQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["enabled", "failure"], name="protection_failing_idx")]

    def __str__(self):
        return f"protection of {self.project_id}"

    @property
    def archiving_failing(self) -> bool:
        return self.last_failed_at is not None and (
            self.last_archived_at is None or self.last_failed_at > self.last_archived_at
        )

    @property
    def window(self) -> tuple | None:
        if self.earliest_restorable_at is None or self.latest_restorable_at is None:
            return None
        return self.earliest_restorable_at, self.latest_restorable_at

    def window_text(self) -> str:
        if self.window is None:
            return "no restorable point yet (no completed base backup)"
        earliest, latest = self.window
        return f"{earliest:%Y-%m-%d %H:%M:%S} UTC to {latest:%Y-%m-%d %H:%M:%S} UTC"

    def judge(self, now=None) -> None:
        """Set `failure` (and since when) from what failed last: a base backup, WAL archiving
        (with PostgreSQL's reason), a restore test. Call before saving."""
        reasons = []
        if self.backup_error.startswith(SETUP_FAILED):
            reasons.append(self.backup_error)
        elif self.backup_error:
            reasons.append(f"the last base backup failed: {self.backup_error}")
        if self.archiving_failing:
            why = self.archive_error or "PostgreSQL gave no reason"
            reasons.append(
                f"WAL archiving is failing (segment {self.last_failed_wal or '?'} since "
                f"{self.last_failed_at:%Y-%m-%d %H:%M:%S} UTC): {why}"
            )
        if self.last_verify_ok is False:
            reasons.append(f"the last restore test failed: {self.last_verify_message}")
        failure = "; ".join(reasons)
        if failure and not self.failure:
            self.failure_since = now or timezone.now()
        elif not failure:
            self.failure_since = None
        self.failure = failure

    def backup_due(self, now=None) -> bool:
        now = now or timezone.now()
        every = timedelta(minutes=settings.BERTH_BACKUP_SCHEDULE_MINUTES)
        return self.last_backup_at is None or self.last_backup_at <= now - every

    def verify_due(self, now=None) -> bool:
        now = now or timezone.now()
        return self.last_verified_at is None or self.last_verified_at <= now - timedelta(
            days=settings.BERTH_BACKUP_VERIFY_DAYS
        )


class BackupKind(models.TextChoices):
    # A physical base backup (pg_basebackup); with the WAL archived after it, any point after its end.
    BASE = "base", "base backup"


class BackupTrigger(models.TextChoices):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    # Taken before a major upgrade (operations.upgrades.backup_point).
    UPGRADE = "upgrade", "before an upgrade"
    # The first one, right after the runtime was set to archive.
    PROTECT = "protect", "when protection began"


class BackupStatus(models.TextChoices):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    # Pruned from the repository: older than the retention period.
    EXPIRED = "expired"


class Backup(models.Model):
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="backups")
    repository = models.ForeignKey(Repository, on_delete=models.PROTECT, related_name="backups")
    # The operation that took it (an id: backups sits below operations).
    operation_id = models.BigIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=16, choices=BackupKind, default=BackupKind.BASE)
    trigger = models.CharField(max_length=16, choices=BackupTrigger)
    status = models.CharField(max_length=16, choices=BackupStatus, default=BackupStatus.RUNNING)
    # The backup's name in the repository, as the agent reports it.
    label = models.CharField(max_length=128, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The first point it restores to (its end: the cluster is consistent from there).
    consistent_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-pk"]
        indexes = [models.Index(fields=["project", "-started_at", "-id"], name="backup_project_newest")]

    def __str__(self):
        return f"{self.kind} backup {self.label or self.pk} of {self.project_id} ({self.status})"
