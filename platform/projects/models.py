import re
import secrets
import string

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from berth.crypto import EncryptedJSONField
from orgs.models import default_organization_id

# Refs name a runtime on its host (folder, compose project, database cluster), so they
# are strictly shaped: lowercase letter first, then lowercase letters and digits.
REF_PATTERN = r"^[a-z][a-z0-9]{5,39}$"
ref_validator = RegexValidator(REF_PATTERN, "A ref is 6-40 lowercase letters and digits, starting with a letter.")


# Names show in tables, logs and rendered config files: no control characters (newlines, tabs, escapes).
name_validator = RegexValidator(
    r"[\x00-\x1f\x7f-\x9f]", "A name cannot contain control characters such as line breaks or tabs.", inverse_match=True
)


def new_ref() -> str:
    """A Supabase-style project ref: 20 random lowercase letters."""
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(20))


class Status(models.TextChoices):
    """Observed status, in Supabase's project status vocabulary."""

    UNKNOWN = "UNKNOWN"
    COMING_UP = "COMING_UP"
    ACTIVE_HEALTHY = "ACTIVE_HEALTHY"
    ACTIVE_UNHEALTHY = "ACTIVE_UNHEALTHY"
    INIT_FAILED = "INIT_FAILED"
    RESTARTING = "RESTARTING"
    GOING_DOWN = "GOING_DOWN"
    INACTIVE = "INACTIVE"
    UPGRADING = "UPGRADING"
    REMOVED = "REMOVED"


TRANSITIONAL_STATUSES = {Status.COMING_UP, Status.RESTARTING, Status.GOING_DOWN, Status.UPGRADING}


class DesiredState(models.TextChoices):
    RUNNING = "running"
    STOPPED = "stopped"
    DELETED = "deleted"


# What can begin a ref: a letter, then letters and digits (REF_PATTERN).
REF_PREFIX = re.compile(r"[a-z][a-z0-9]{0,39}")


class ProjectQuerySet(models.QuerySet):
    def live(self):
        return self.exclude(status=Status.REMOVED)

    def search(self, text: str):
        """Projects whose ref starts with `text` or whose name contains it, case-insensitively.

        Refs are lowercase letters and digits: the ref condition is a prefix range on the
        ref's pattern index (Django's `_like` index on PostgreSQL), and text that could not
        begin a ref leaves it out. The name condition uses the trigram index on PostgreSQL
        (migrations 0005_search and 0007_search_costs)."""
        text = text.strip()
        matches = models.Q(name__icontains=text)
        if REF_PREFIX.fullmatch(text.lower()):
            matches |= models.Q(ref__startswith=text.lower())
        return self.filter(matches)

    def idle(self):
        """Projects no queued or running operation is about to change. As a condition of an
        UPDATE it also holds against an operation that started after the rows were read."""
        # The operations app sits above projects: reach its model through the reverse relation.
        operation = self.model._meta.get_field("operations").related_model
        return self.exclude(models.Exists(operation.objects.unfinished().filter(project=models.OuterRef("pk"))))


class Project(models.Model):
    ref = models.CharField(max_length=40, unique=True, default=new_ref, validators=[ref_validator])
    name = models.CharField(max_length=100, validators=[name_validator])
    # Tenancy: who may see and act on the project through the Management API.
    organization = models.ForeignKey(
        "orgs.Organization",
        on_delete=models.PROTECT,
        related_name="projects",
        default=default_organization_id,
    )
    # The region asked for at creation; placement takes hosts labelled with it or unlabelled.
    region = models.CharField(max_length=32, blank=True)
    postgres_major = models.PositiveSmallIntegerField("Postgres major version")
    # The major the last upgrade came from, whose cluster is kept stopped on the host for a
    # rollback until `previous_kept_until` (or a discard); None when no old cluster is kept.
    previous_postgres_major = models.PositiveSmallIntegerField(null=True, blank=True)
    previous_kept_until = models.DateTimeField(null=True, blank=True)
    template = models.CharField(max_length=63, help_text="Name of the runtime template under runtimes/")
    # The template version whose rendering the host was last given (or will be, before the
    # first push), and the sha256 digest of every managed file pushed, keyed by path.
    template_version = models.ForeignKey(
        "templating.TemplateVersion", on_delete=models.PROTECT, related_name="projects"
    )
    file_digests = models.JSONField(default=dict, blank=True)
    # Managed files whose content on the host differed from `file_digests` when last read
    # (edited or deleted there: "locally modified"), and when that was.
    drifted_paths = models.JSONField(default=list, blank=True)
    drift_checked_at = models.DateTimeField(null=True, blank=True)
    host = models.ForeignKey(
        "hosts.RuntimeHost", on_delete=models.PROTECT, null=True, blank=True, related_name="projects"
    )
    desired_state = models.CharField(max_length=16, choices=DesiredState, default=DesiredState.RUNNING)
    status = models.CharField(max_length=32, choices=Status, default=Status.UNKNOWN)
    status_reason = models.TextField(blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    # Consecutive failed health refreshes; a healthy project turns unhealthy only past a threshold.
    probe_failures = models.PositiveIntegerField(default=0)
    # Generated once at creation (passwords, JWT secret, signed keys); encrypted at rest.
    secrets = EncryptedJSONField(default=dict, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # When its latest operation was requested (request_operation writes it with the
    # operation), else when it was created: the projects list sorts by it on an index.
    last_activity_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = ProjectQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status"]),
            models.Index(fields=["host", "status"]),
            # Newest first, for the Management API's listing (and the dashboard's default order):
            # the planner walks the first for callers whose organizations hold most projects, and
            # the second for callers whose organizations hold few of many.
            models.Index(fields=["-created_at", "-id"], name="project_newest_first"),
            models.Index(fields=["organization", "-created_at"], name="project_org_newest_first"),
            # The projects list is keyset-paged newest first (id breaking ties; the index
            # above), alone or filtered by host, status or template: each one index range scan.
            models.Index(fields=["host", "-created_at", "-id"], name="project_host_newest_first"),
            models.Index(fields=["status", "-created_at", "-id"], name="project_status_newest_first"),
            models.Index(fields=["template", "-created_at", "-id"], name="project_template_newest_first"),
            # The list sorted by a column (status and template above serve theirs too; the
            # ref is unique): ties newest first.
            models.Index(fields=["name", "-created_at", "-id"], name="project_name_newest_first"),
            models.Index(fields=["postgres_major", "-created_at", "-id"], name="project_major_newest_first"),
            models.Index(fields=["last_activity_at", "-created_at", "-id"], name="project_activity_newest_first"),
            # Search (ProjectQuerySet.search): a trigram index on the name on PostgreSQL
            # (migrations 0005_search, 0007_search_costs); refs by prefix on their `_like` index.
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(ref__regex=REF_PATTERN), name="project_ref_shape"),
        ]

    def __str__(self):
        return f"{self.name} ({self.ref})"

    def save(self, *args, **kwargs):
        loaded_ref = getattr(self, "_loaded_ref", None)
        if loaded_ref is not None and loaded_ref != self.ref:
            raise ValidationError("A project's ref never changes.")
        super().save(*args, **kwargs)
        self._loaded_ref = self.ref

    def unavailable_actions(self, *, last_op_state: str | None, in_progress: bool, update_available: bool) -> dict:
        """Why each staff action does not apply to the project now, keyed by action; an action
        absent from the result applies. The same reasons the verbs refuse with, known before
        asking, so pages offer only what can apply (the verbs stay the judge)."""
        every = ("start", "stop", "restart", "retry", "resync", "delete")
        if self.status == Status.REMOVED:
            return dict.fromkeys(every, "removed")
        if self.desired_state == DesiredState.DELETED:
            return dict.fromkeys(every, "being deleted")
        if in_progress:
            return dict.fromkeys(every, "an operation is in progress: cancel it or wait for it to end")
        why = {}
        if self.host_id is None:
            for action in ("start", "stop", "restart", "resync"):
                why[action] = "never provisioned (retry its provisioning)"
        else:
            if self.desired_state == DesiredState.RUNNING and self.status == Status.ACTIVE_HEALTHY:
                why["start"] = "already running"
            if self.desired_state == DesiredState.STOPPED and self.status == Status.INACTIVE:
                why["stop"] = "already stopped"
                why["restart"] = "stopped: start it instead"
            if not update_available:
                why["resync"] = "on the latest template version"
        if last_op_state not in ("failed", "timed_out"):
            why["retry"] = "nothing failed"
        return why

    def set_status(self, status: str, reason: str = "") -> None:
        """Write the observed status now, whatever the row holds (callers hold the claim)."""
        now = timezone.now()
        Project.objects.filter(pk=self.pk).update(
            status=status, status_reason=reason, status_changed_at=now, updated_at=now
        )
        self.status, self.status_reason = status, reason

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance._loaded_ref = instance.__dict__.get("ref")
        return instance
