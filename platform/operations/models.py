"""The operation state machine, kept on its model (as NetBox keeps a job's on `Job`).

    queued --claim--> running --settle--> succeeded | failed | timed_out
    queued | running --cut_off--> timed_out (the reaper) | failed (staff) | cancelled (staff)

A worker owns an operation only while its row says `running`. Every transition is one
conditional UPDATE on the state the writer believes the row is in, which must touch exactly
one row: a late worker never overwrites the reaper's or staff's verdict, and two workers
never both claim. Each transition moves the project's observed status with it, through the
project's status gate and in the same transaction, so the two never disagree.

What an operation found and did is kept in typed columns (NetBox keeps a job's `status`,
`error` and `data` on `Job`): the status it replaced when claimed, the desired state its
request replaced, whether it restarted the runtime, its result and conflicting paths.
Everything that decides reads those; `OperationEvent` is the timeline people read.
"""

from dataclasses import dataclass
from datetime import timedelta

import django_q.tasks
from django.conf import settings
from django.db import models, transaction
from django.db.models import Case, OuterRef, Q, Subquery, Value, When
from django.utils import timezone

from projects.models import TRANSITIONAL_STATUSES, DesiredState, Project, Status, StatusCause
from telemetry import record as telemetry


class Kind(models.TextChoices):
    PROVISION = "provision"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    RESYNC = "resync", "re-sync"
    DELETE = "delete"
    # Postgres major upgrades (operations.upgrades): to a newer major, back to the kept old
    # one, or removing the kept old one.
    UPGRADE = "upgrade", "Postgres upgrade"
    UPGRADE_ROLLBACK = "upgrade_rollback", "Postgres upgrade rollback"
    UPGRADE_DISCARD = "upgrade_discard", "discard of an old Postgres cluster"
    # Backups (operations.protection): set a runtime to archive into its repository; a base
    # backup now (then pruning past the retention); a restore in place to a point in time;
    # a new project from another's backups; a restore test into a scratch cluster.
    PROTECT = "protect", "backup set-up"
    BACKUP = "backup"
    RESTORE = "restore", "point-in-time restore"
    CLONE = "clone"
    VERIFY = "verify", "restore test"


class State(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out", "timed out"
    CANCELLED = "cancelled"


UNFINISHED_STATES = (State.QUEUED, State.RUNNING)


@dataclass(frozen=True)
class KindRules:
    """What an operation of one kind means to its project."""

    # The observed status while it runs; None: it works beside a serving runtime and moves
    # no status (its claim, settle and cut-off leave the project's as it is).
    running: str | None
    # The desired state its request sets; None leaves the desired state as it is.
    desired: str | None
    # It acts on the runtime a provisioning put on a host, so it is refused before one.
    needs_runtime: bool = True
    # Where the project goes when it ends without success: never a transitional status.
    failed: str = Status.UNKNOWN
    # A forced end stops the runtime it brought up, which nobody has seen healthy.
    stop_after_cut_off: bool = False
    # It waits on an agent's backup job, whose time grows with the database: it gets
    # BERTH_BACKUP_DEADLINE, not BERTH_OPERATION_DEADLINE.
    backup_job: bool = False


# Every kind's rules; a new kind adds its entry here, its steps to operations.runner.STEPS.
KINDS = {
    Kind.PROVISION: KindRules(
        Status.COMING_UP, DesiredState.RUNNING, needs_runtime=False, failed=Status.INIT_FAILED, stop_after_cut_off=True
    ),
    Kind.START: KindRules(Status.COMING_UP, DesiredState.RUNNING, stop_after_cut_off=True),
    Kind.RESTART: KindRules(Status.RESTARTING, DesiredState.RUNNING),
    Kind.RESYNC: KindRules(Status.UPGRADING, None),
    Kind.STOP: KindRules(Status.GOING_DOWN, DesiredState.STOPPED),
    Kind.DELETE: KindRules(Status.GOING_DOWN, DesiredState.DELETED, needs_runtime=False),
    Kind.UPGRADE: KindRules(Status.UPGRADING, None),
    Kind.UPGRADE_ROLLBACK: KindRules(Status.UPGRADING, None),
    Kind.UPGRADE_DISCARD: KindRules(Status.UPGRADING, None),
    Kind.PROTECT: KindRules(Status.RESTARTING, None),
    Kind.BACKUP: KindRules(None, None, backup_job=True),
    # A cut-off restore is put back by its cleanup: the old data serves, or the fully restored.
    Kind.RESTORE: KindRules(Status.RESTORING, None, backup_job=True),
    # Runs on the new project, as its provisioning (from the source's backups).
    Kind.CLONE: KindRules(
        Status.COMING_UP,
        DesiredState.RUNNING,
        needs_runtime=False,
        failed=Status.INIT_FAILED,
        stop_after_cut_off=True,
        backup_job=True,
    ),
    Kind.VERIFY: KindRules(None, None, backup_job=True),
}
UPGRADE_KINDS = (Kind.UPGRADE, Kind.UPGRADE_ROLLBACK, Kind.UPGRADE_DISCARD)
BACKUP_JOB_KINDS = tuple(kind for kind, rules in KINDS.items() if rules.backup_job)
BACKUP_KINDS = (Kind.PROTECT, Kind.BACKUP, Kind.RESTORE, Kind.CLONE, Kind.VERIFY)


class Outcome(models.TextChoices):
    """What happened to a project's files: an operation's `result` and a rollout entry's
    `outcome`, one vocabulary for both (and for re-sync results)."""

    PENDING = "pending"
    RUNNING = "running"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    CONFLICTED = "conflicted"
    RESOLVED = "resolved"
    FAILED = "failed"
    SKIPPED = "skipped"


# Outcomes that leave a project where the rollout wanted it.
DONE_OUTCOMES = (Outcome.UPDATED, Outcome.UNCHANGED, Outcome.RESOLVED)
SETTLED_OUTCOMES = (*DONE_OUTCOMES, Outcome.CONFLICTED, Outcome.FAILED, Outcome.SKIPPED)
# Typed columns a settle may write (Operation.settle), besides its state and error.
OUTCOME_FIELDS = ("result", "result_message", "conflict_paths")


class OperationQuerySet(models.QuerySet):
    def unfinished(self):
        return self.filter(state__in=UNFINISHED_STATES)

    def claim(self, operation_id: int) -> "Operation | None":
        """Move a queued operation to running; None when another worker (or the reaper) got there first.

        The project's status and reason as the claim found them are kept on the operation
        (`status_before`), so a step that changed nothing (a re-sync stopped by a conflict)
        can give them back."""
        now = timezone.now()
        project = Project.objects.filter(pk=OuterRef("project_id"))
        with transaction.atomic():
            claimed = self.filter(pk=operation_id, state=State.QUEUED, deadline__gt=now).update(
                state=State.RUNNING,
                started_at=now,
                heartbeat_at=now,
                deadline=Case(
                    When(
                        kind__in=BACKUP_JOB_KINDS, then=Value(now + timedelta(seconds=settings.BERTH_BACKUP_DEADLINE))
                    ),
                    default=Value(now + timedelta(seconds=settings.BERTH_OPERATION_DEADLINE)),
                ),
                status_before=Subquery(project.values("status")),
                status_reason_before=Subquery(project.values("status_reason")),
            )
            if claimed != 1:
                return None
            operation = self.select_related("project", "project__host", "project__template_version").get(
                pk=operation_id
            )
            running = KINDS[operation.kind].running
            if running is not None:
                operation.project.move_status(running, cause=StatusCause.CLAIMED, operation_id=operation.pk)
            OperationEvent.objects.create(operation=operation, step="claimed", message="A worker started the operation")
        return operation


class Operation(models.Model):
    """The record of truth for one piece of background work on one project."""

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="operations")
    kind = models.CharField(max_length=16, choices=Kind)
    state = models.CharField(max_length=16, choices=State, default=State.QUEUED)
    attempt = models.PositiveIntegerField(default=1)
    params = models.JSONField(default=dict, blank=True)
    # Past this moment the reaper fails the operation as timed out, whatever the worker does.
    deadline = models.DateTimeField()
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    task_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # What the operation found and did (typed; decisions read these, never the events).
    # The desired state its request replaced: a cancel gives it back.
    desired_before = models.CharField(max_length=16, choices=DesiredState, blank=True)
    # The project's status and reason when it was claimed: given back by a step that changed nothing.
    status_before = models.CharField(max_length=32, choices=Status, blank=True)
    status_reason_before = models.TextField(blank=True)
    # Whether it restarted the runtime (a rollout's health gate holds only those).
    restarted = models.BooleanField(default=False)
    # What happened to the project's files (re-sync: updated, unchanged, resolved, conflicted),
    # in words, and the paths a conflict stopped at.
    result = models.CharField(max_length=16, choices=Outcome, blank=True)
    result_message = models.TextField(blank=True)
    conflict_paths = models.JSONField(default=list, blank=True)

    objects = OperationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(state__in=UNFINISHED_STATES),
                name="one_unfinished_operation_per_project",
                violation_error_message="This project already has an operation in progress.",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "deadline"]),
            # The operations list is keyset-paged newest first (id breaking ties), alone or
            # filtered by state or kind: each is one index range scan.
            models.Index(fields=["created_at", "id"], name="operation_created_idx"),
            models.Index(fields=["state", "created_at", "id"], name="operation_state_created_idx"),
            models.Index(fields=["kind", "created_at", "id"], name="operation_kind_created_idx"),
        ]

    def __str__(self):
        return f"{self.kind} #{self.pk} ({self.state})"

    @property
    def is_finished(self) -> bool:
        return self.state not in UNFINISHED_STATES

    def settle(
        self,
        state: str,
        *,
        status: str | None,
        reason: str = "",
        error_code: str = "",
        error_message: str = "",
        data: dict | None = None,
        **outcome,
    ) -> bool:
        """Finish this running operation, with its outcome (OUTCOME_FIELDS), and move its
        project's status (None: a kind that moves none leaves it): all or nothing.

        Returns False when the operation was no longer running (the reaper or staff ended it).
        """
        unknown = set(outcome) - set(OUTCOME_FIELDS)
        if unknown:
            raise TypeError(f"not an outcome of an operation: {', '.join(sorted(unknown))}")
        now = timezone.now()
        with transaction.atomic():
            settled = Operation.objects.filter(pk=self.pk, state=State.RUNNING).update(
                state=state,
                finished_at=now,
                heartbeat_at=now,
                error_code=error_code,
                error_message=error_message,
                **outcome,
            )
            if settled != 1:
                return False
            if status is not None:
                self.project.move_status(status, reason, cause=StatusCause.SETTLED, operation_id=self.pk)
            level = OperationEvent.Level.INFO if state == State.SUCCEEDED else OperationEvent.Level.ERROR
            OperationEvent.objects.create(
                operation=self,
                step="finished",
                level=level,
                message=error_message or f"Operation {state}",
                data=data or {},
            )
        self.state = state
        for name, value in outcome.items():
            setattr(self, name, value)
        count_finished(self, state, now)
        return True

    def cut_off(
        self, state: str, *, error_code: str, error_message: str, reason: str, condition: Q | None = None
    ) -> str | None:
        """End this operation now from outside its worker, if it is unfinished (and matches
        `condition`): the reaper at its deadline, staff marking it failed or cancelling it.
        Returns the state it was in (queued or running), or None when it had already ended.

        Its project leaves any transitional status (with `reason`), since no worker will move
        it now; a running operation's work on the host is stopped by a task queued on commit
        (operations.cleanup). Call it inside the transaction that records why.
        """
        with transaction.atomic():
            # The project row first, in the order request_operation takes its locks.
            project = self.project
            project.__class__.objects.select_for_update().filter(pk=project.pk).values_list("pk").first()
            was = (
                Operation.objects.select_for_update()
                .filter(condition or Q(), pk=self.pk, state__in=UNFINISHED_STATES)
                .values_list("state", flat=True)
                .first()
            )
            if was is None:
                return None
            now = timezone.now()
            Operation.objects.filter(pk=self.pk, state=was).update(
                state=state, finished_at=now, error_code=error_code, error_message=error_message
            )
            project.refresh_from_db(fields=["status", "status_reason"])
            moved_it = was == State.RUNNING and KINDS[self.kind].running is not None
            if moved_it or project.status in TRANSITIONAL_STATUSES:
                project.move_status(KINDS[self.kind].failed, reason, cause=StatusCause.CUT_OFF, operation_id=self.pk)
            if was == State.RUNNING:
                transaction.on_commit(self._enqueue_cleanup)
        self.state = state
        count_finished(self, state, now)
        return was

    def _enqueue_cleanup(self) -> None:
        django_q.tasks.async_task(
            "operations.tasks.clean_up", self.pk, task_name=f"cleanup-{self.pk}", group="operations"
        )


def count_finished(operation: Operation, state: str, now) -> None:
    """For /metrics: one more operation of its kind ended in `state`, and, if it ran, how long."""
    telemetry.count("berth_operations_finished_total", kind=operation.kind, state=state)
    if operation.started_at is not None:
        seconds = (now - operation.started_at).total_seconds()
        telemetry.observe("berth_operation_duration_seconds", seconds, telemetry.OPERATION_BUCKETS, kind=operation.kind)


class OperationEvent(models.Model):
    class Level(models.TextChoices):
        INFO = "info"
        WARNING = "warning"
        ERROR = "error"

    operation = models.ForeignKey(Operation, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    step = models.CharField(max_length=32)
    level = models.CharField(max_length=8, choices=Level, default=Level.INFO)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self):
        return f"{self.step}: {self.message}"


class Rollout(models.Model):
    """Moving projects of one template to a revision, wave by wave, with a health gate between waves.

    The driver (operations.rollouts.advance) moves it one small step at a time; each
    project's re-sync is a normal `resync` Operation, so single-flight per project holds.
    """

    class State(models.TextChoices):
        RUNNING = "running"
        PAUSED = "paused"
        HALTED = "halted"
        FINISHED = "finished"
        CANCELLED = "cancelled"

    template = models.CharField(max_length=63)
    # The revision projects move to; a rollback moves each project to its own `target_version`.
    target = models.ForeignKey("templating.TemplateVersion", on_delete=models.PROTECT, related_name="rollouts")
    # Set: the rollout upgrades its projects' Postgres to this major (an `upgrade` operation
    # each) and `target` is only the template's revision when it started; its rollback
    # returns each to its kept old major. None: a rollout of template revision `target`.
    target_major = models.PositiveSmallIntegerField(null=True, blank=True)
    rollback_of = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="rollbacks")
    state = models.CharField(max_length=16, choices=State, default=State.RUNNING)
    canary = models.PositiveIntegerField(default=1)
    wave_size = models.PositiveIntegerField(default=5)
    # Failed projects (since the last resume) that halt the rollout.
    max_failures = models.PositiveIntegerField(default=1)
    concurrency = models.PositiveIntegerField(default=2)
    restart = models.BooleanField(default=True, help_text="Restart running projects whose files changed")
    fail_on_conflict = models.BooleanField(default=False, help_text="Count conflicts against the failure budget")
    wave = models.PositiveIntegerField(default=0, help_text="The wave being rolled out (0: the canary)")
    wave_started_at = models.DateTimeField(null=True, blank=True)
    # Failures finished since this moment count against the budget (the start, or the last resume).
    budget_from = models.DateTimeField(null=True, blank=True)
    # Bumped by every step: a step is claimed by a conditional UPDATE on it, so two drivers never both act.
    step = models.PositiveIntegerField(default=0)
    reason = models.TextField(blank=True, help_text="Why it halted, paused or was cancelled")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(wave_size__gte=1), name="rollout_wave_size_positive"),
            models.CheckConstraint(condition=Q(concurrency__gte=1), name="rollout_concurrency_positive"),
            models.CheckConstraint(condition=Q(max_failures__gte=1), name="rollout_max_failures_positive"),
        ]

    def __str__(self):
        kind = "rollback" if self.rollback_of_id else "rollout"
        if self.upgrades_postgres:
            to = f"Postgres {self.target_major}" if self.target_major else "their earlier Postgres"
            return f"Postgres {kind} #{self.pk} of {self.template} to {to} ({self.state})"
        return f"{kind} #{self.pk} of {self.template} to r{self.target.revision} ({self.state})"

    @property
    def upgrades_postgres(self) -> bool:
        """A major upgrade rollout, or the rollback of one."""
        return self.target_major is not None or (
            self.rollback_of_id is not None and self.rollback_of.target_major is not None
        )

    @property
    def is_running(self) -> bool:
        return self.state == self.State.RUNNING


class RolloutProject(models.Model):
    """One project of a rollout: its place, the revision it came from and goes to, and what happened."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="projects")
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="rollouts")
    position = models.PositiveIntegerField()
    wave = models.PositiveIntegerField()
    from_version = models.ForeignKey("templating.TemplateVersion", on_delete=models.PROTECT, related_name="+")
    target_version = models.ForeignKey("templating.TemplateVersion", on_delete=models.PROTECT, related_name="+")
    outcome = models.CharField(max_length=16, choices=Outcome, default=Outcome.PENDING)
    # The project's latest operation for this rollout (its re-sync, or a conflict resolution).
    operation = models.ForeignKey(Operation, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # Whether the project's operation restarted it; only those are held to the wave's health gate.
    restarted = models.BooleanField(default=False)
    # Set when a resume tries a failed project again: it is restarted even if its files are in place.
    retry = models.BooleanField(default=False)
    message = models.TextField(blank=True)
    conflicts = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "project"], name="one_entry_per_project_per_rollout"),
            models.UniqueConstraint(fields=["rollout", "position"], name="one_project_per_rollout_position"),
        ]
        indexes = [models.Index(fields=["rollout", "wave", "outcome"])]

    def __str__(self):
        return f"{self.project.ref} in rollout #{self.rollout_id}: {self.outcome}"
