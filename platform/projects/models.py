import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models, transaction
from django.db.models import Case, F, Value, When
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
    # A restore to a point in time, in place (operations.protection); Supabase's word for it.
    RESTORING = "RESTORING"
    REMOVED = "REMOVED"


TRANSITIONAL_STATUSES = {
    Status.COMING_UP,
    Status.RESTARTING,
    Status.GOING_DOWN,
    Status.UPGRADING,
    Status.RESTORING,
}

# What the health refresh, or the cleanup after a forced end, may read off a runtime that runs
# or ran without an operation: these statuses move among themselves (and to INACTIVE, a
# runtime found stopped) with no operation in flight.
OBSERVED_STATUSES = {Status.UNKNOWN, Status.ACTIVE_HEALTHY, Status.ACTIVE_UNHEALTHY}

# The state machine of observed status: which status may follow which. Every status write
# goes through ProjectQuerySet.move_status, which refuses any other move.
# - An operation's claim moves any live status to its kind's transitional status (a project
#   left transitional with no operation, which the reaper frees, included).
# - A transitional status ends when its operation does: in whatever the operation found or
#   gave back; REMOVED only after GOING_DOWN (a delete), and nothing ever leaves REMOVED.
# - INACTIVE and INIT_FAILED change only through an operation; the observed statuses also
#   follow what the health refresh and the cleanup read off the runtime.
# Writing a status again (the same one) changes only its reason, and is always allowed
# except on REMOVED.
STATUS_MOVES: dict[str, frozenset[str]] = {
    Status.UNKNOWN: frozenset({*TRANSITIONAL_STATUSES, *OBSERVED_STATUSES, Status.INACTIVE}),
    Status.ACTIVE_HEALTHY: frozenset({*TRANSITIONAL_STATUSES, *OBSERVED_STATUSES, Status.INACTIVE}),
    Status.ACTIVE_UNHEALTHY: frozenset({*TRANSITIONAL_STATUSES, *OBSERVED_STATUSES, Status.INACTIVE}),
    Status.INACTIVE: frozenset(TRANSITIONAL_STATUSES),
    Status.INIT_FAILED: frozenset(TRANSITIONAL_STATUSES),
    Status.COMING_UP: frozenset(set(Status) - {Status.REMOVED}),
    Status.RESTARTING: frozenset(set(Status) - {Status.REMOVED}),
    Status.UPGRADING: frozenset(set(Status) - {Status.REMOVED}),
    Status.RESTORING: frozenset(set(Status) - {Status.REMOVED}),
    Status.GOING_DOWN: frozenset(Status),
    Status.REMOVED: frozenset(),
}


class StatusMoveRefused(Exception):
    """A status write the state machine does not allow (STATUS_MOVES): a bug in its caller,
    never a race, which a conditional write meets as "not moved"."""


def check_status_move(old: str, new: str) -> None:
    if new not in STATUS_MOVES[old] and not (new == old and old != Status.REMOVED):
        raise StatusMoveRefused(f"a project's status never moves from {old} to {new}")


class StatusCause(models.TextChoices):
    """What moved a project's status: the typed cause on each StatusChange."""

    CLAIMED = "claimed", "an operation started"
    SETTLED = "settled", "an operation ended"
    CUT_OFF = "cut_off", "an operation was ended from outside (reaper, staff)"
    HEALTH = "health", "the health refresh"
    STUCK = "stuck", "the reaper (transitional with no operation)"
    CLEANUP = "cleanup", "what runs after a forced end"


@dataclass(frozen=True)
class StatusMove:
    """One project's status write: the status it moves to and why, and (the health refresh's
    count of consecutive failed refreshes) `probe_failures`, written with it when given."""

    to: str
    reason: str = ""
    probe_failures: int | None = None


class DesiredState(models.TextChoices):
    RUNNING = "running"
    STOPPED = "stopped"
    DELETED = "deleted"


# Bounds of the endpoint's limits, as the agent's route table accepts them (agent.api.RouteSpec).
POOL_SIZE_MAX = 10_000
CLIENT_CONN_MAX = 100_000


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

    def move_status(
        self, moves: StatusMove | Mapping[int, StatusMove], *, cause: str, operation_id: int | None = None
    ) -> dict[int, str]:
        """The one writer of observed status: move each project of this queryset (its
        conditions: the status the caller read, `idle()`, ...) as `moves` says, one move for
        them all or one per project id. Returns {id: status before} of the projects moved;
        one that no longer matches the conditions is left alone (a race, not an error).

        The rows are locked and read first, so every move is checked against the state
        machine from the status it really leaves (StatusMoveRefused, and nothing is written,
        for one it does not allow) and each status that changes gets its StatusChange row,
        all in one transaction: a locked read, one UPDATE (each row its own values) and one
        INSERT, however many projects.
        """
        single = isinstance(moves, StatusMove)
        rows = self if single else self.filter(pk__in=list(moves))
        now = timezone.now()
        with transaction.atomic():
            before = dict(rows.select_for_update().order_by("pk").values_list("pk", "status"))
            if not before:
                return {}
            move_of = {pk: moves if single else moves[pk] for pk in before}
            for pk, old in before.items():
                check_status_move(old, move_of[pk].to)
            changes = {}
            for pk, move in move_of.items():
                change = {"status": move.to, "status_reason": move.reason, "updated_at": now}
                if move.to != before[pk]:
                    change["status_changed_at"] = now
                if move.probe_failures is not None:
                    change["probe_failures"] = move.probe_failures
                changes[pk] = change
            Project.objects.filter(pk__in=list(before)).update(**per_row(changes))
            StatusChange.objects.bulk_create(
                StatusChange(
                    project_id=pk,
                    at=now,
                    old=before[pk],
                    new=move.to,
                    reason=move.reason,
                    cause=cause,
                    operation_id=operation_id,
                )
                for pk, move in move_of.items()
                if move.to != before[pk]
            )
        return before


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
    # The database endpoint's limits (config/database/pooler): PgBouncer's server connections
    # for the project, and the client connections its host's router holds for it at once.
    pool_size = models.PositiveIntegerField(
        "pooler pool size", default=15, validators=[MinValueValidator(1), MaxValueValidator(POOL_SIZE_MAX)]
    )
    max_client_conn = models.PositiveIntegerField(
        "most client connections", default=200, validators=[MinValueValidator(1), MaxValueValidator(CLIENT_CONN_MAX)]
    )

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

    def move_status(self, to: str, reason: str = "", *, cause: str, operation_id: int | None = None) -> bool:
        """This project through the status gate (ProjectQuerySet.move_status), from whatever
        status its row holds; callers own the project (an operation's claim, settle or cut-off)."""
        moved = Project.objects.filter(pk=self.pk).move_status(
            StatusMove(to, reason), cause=cause, operation_id=operation_id
        )
        if moved:
            self.status, self.status_reason = to, reason
        return bool(moved)

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance._loaded_ref = instance.__dict__.get("ref")
        return instance


class StatusChange(models.Model):
    """One move of a project's observed status (healthchecks' `Flip`): what it was, what it
    became, why, and what moved it. Written only by the status gate (ProjectQuerySet.move_status),
    in the transaction of the move; the project page's history and metrics read it."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="status_changes")
    at = models.DateTimeField(default=timezone.now)
    old = models.CharField(max_length=32, choices=Status)
    new = models.CharField(max_length=32, choices=Status)
    reason = models.TextField(blank=True)
    cause = models.CharField(max_length=16, choices=StatusCause)
    # The operation whose claim, settle or cut-off moved it: a plain id, since projects sits
    # below operations (no foreign key up the layers).
    operation_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["project", "-at", "-id"], name="statuschange_project_newest")]

    def __str__(self):
        return f"{self.project_id}: {self.old} -> {self.new} ({self.cause})"


def per_row(changes: dict[int, dict]) -> dict:
    """UPDATE values that give each project (by pk) its own changes; a project whose changes
    leave a field out keeps its value. A value every project gets alike is set as it is."""
    values = {}
    for name in {name for change in changes.values() for name in change}:
        given = {pk: change[name] for pk, change in changes.items() if name in change}
        alike = set(given.values())
        if len(given) == len(changes) and len(alike) == 1:
            values[name] = alike.pop()
        else:
            field = Project._meta.get_field(name)
            whens = [When(pk=pk, then=Value(value, output_field=field)) for pk, value in given.items()]
            values[name] = Case(*whens, default=F(name), output_field=field)
    return values


class LoginRole(models.Model):
    """A temporary role the Supabase CLI logs in with (`cli/login-role`), in the project's database.

    One row per role name per project: a new request resets that role's password and TTL.
    The role's own VALID UNTIL stops logins at `expires_at`; the reaper drops it after
    (operations.login_roles), so none outlives its TTL by more than a reaper interval."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="login_roles")
    role = models.CharField(max_length=63)
    read_only = models.BooleanField(default=False)
    expires_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "role"], name="login_role_once_per_project")]

    def __str__(self):
        return f"{self.role} on {self.project_id} until {self.expires_at:%Y-%m-%d %H:%M:%S}"


def _every_ipv4() -> list[str]:
    return ["0.0.0.0/0"]


def _every_ipv6() -> list[str]:
    return ["::/0"]


class DatabaseSettings(models.Model):
    """A project's database settings as its team set them (Management API, project page), and
    what its server reported when they were last applied (operations.dbsettings).

    The rows say what is wanted; `applied` says whether the server runs it. A change stores
    what is wanted, then the agent applies the whole document; a value PostgreSQL refuses puts
    the rows back as they were (the old settings still run), one the agent never confirmed
    leaves `applied` false with the reason, for the next change or the page to show."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, primary_key=True, related_name="dbsettings")
    # Postgres parameters set by the team, as the API takes them (projects.postgres_config).
    postgres_config = models.JSONField(default=dict, blank=True)
    # Parameters the server reported waiting for a restart at the last apply.
    pending_restart = models.JSONField(default=list, blank=True)
    # The parameters' values as the server showed them after the last apply (`SHOW`).
    running_values = models.JSONField(default=dict, blank=True)
    ssl_enforced = models.BooleanField(default=False)
    # Network restrictions: the client ranges allowed to reach the database (this host's own
    # connections always are), and the ranges before the last change until it is applied.
    allowed_cidrs = models.JSONField(default=_every_ipv4, blank=True)
    allowed_cidrs_v6 = models.JSONField(default=_every_ipv6, blank=True)
    old_allowed_cidrs = models.JSONField(null=True, blank=True)
    old_allowed_cidrs_v6 = models.JSONField(null=True, blank=True)
    applied = models.BooleanField(default=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    apply_error = models.TextField(blank=True)
    # Set while a change is being applied: another change is refused until it ends (or, for a
    # worker that died, until the settings deadline has passed since).
    applying_since = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "database settings"

    def __str__(self):
        return f"database settings of {self.project_id}"

    @property
    def restrictions_status(self) -> str:
        """The Management API's network restrictions status: applied, or stale (not yet)."""
        return "applied" if self.applied else "stale"
