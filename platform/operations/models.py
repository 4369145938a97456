"""The operation state machine, kept on its model (as NetBox keeps a job's on `Job`).

    queued --claim--> running --settle--> succeeded | failed | timed_out
    queued | running --cut_off--> timed_out (the reaper) | failed (staff) | cancelled (staff)

A worker owns an operation only while its row says `running`. Every transition is one
conditional UPDATE on the state the writer believes the row is in, which must touch exactly
one row: a late worker never overwrites the reaper's or staff's verdict, and two workers
never both claim. Each transition moves the project's observed status with it, in the same
transaction, so the two never disagree.
"""

from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from projects.models import TRANSITIONAL_STATUSES, Status
from telemetry import record as telemetry


class Kind(models.TextChoices):
    PROVISION = "provision"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    RESYNC = "resync", "re-sync"
    DELETE = "delete"


class State(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out", "timed out"
    CANCELLED = "cancelled"


UNFINISHED_STATES = (State.QUEUED, State.RUNNING)


# Observed status while an operation of each kind runs.
STATUS_WHILE_RUNNING = {
    Kind.PROVISION: Status.COMING_UP,
    Kind.START: Status.COMING_UP,
    Kind.RESTART: Status.RESTARTING,
    Kind.RESYNC: Status.UPGRADING,
    Kind.STOP: Status.GOING_DOWN,
    Kind.DELETE: Status.GOING_DOWN,
}


class OperationQuerySet(models.QuerySet):
    def unfinished(self):
        return self.filter(state__in=UNFINISHED_STATES)

    def claim(self, operation_id: int) -> "Operation | None":
        """Move a queued operation to running; None when another worker (or the reaper) got there first."""
        now = timezone.now()
        with transaction.atomic():
            claimed = self.filter(pk=operation_id, state=State.QUEUED, deadline__gt=now).update(
                state=State.RUNNING,
                started_at=now,
                heartbeat_at=now,
                deadline=now + timedelta(seconds=settings.BERTH_OPERATION_DEADLINE),
            )
            if claimed != 1:
                return None
            operation = self.select_related("project", "project__host", "project__template_version").get(
                pk=operation_id
            )
            project = operation.project
            # Kept so a step that changed nothing (a re-sync stopped by a conflict) can give it back.
            before = {"status_before": project.status, "status_reason_before": project.status_reason}
            project.set_status(STATUS_WHILE_RUNNING[operation.kind])
            OperationEvent.objects.create(
                operation=operation, step="claimed", message="A worker started the operation", data=before
            )
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
    ) -> bool:
        """Finish this running operation and set its project's status, both or neither.

        Returns False when the operation was no longer running (the reaper or staff ended it).
        """
        now = timezone.now()
        with transaction.atomic():
            settled = Operation.objects.filter(pk=self.pk, state=State.RUNNING).update(
                state=state, finished_at=now, heartbeat_at=now, error_code=error_code, error_message=error_message
            )
            if settled != 1:
                return False
            if status is not None:
                self.project.set_status(status, reason)
            level = OperationEvent.Level.INFO if state == State.SUCCEEDED else OperationEvent.Level.ERROR
            OperationEvent.objects.create(
                operation=self,
                step="finished",
                level=level,
                message=error_message or f"Operation {state}",
                data=data or {},
            )
        self.state = state
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
            if was == State.RUNNING or project.status in TRANSITIONAL_STATUSES:
                project.set_status(self.status_after_cut_off(), reason)
            if was == State.RUNNING:
                transaction.on_commit(self._enqueue_cleanup)
        self.state = state
        count_finished(self, state, now)
        return was

    def status_after_cut_off(self) -> str:
        """Where the project goes when this operation ends without success: never a transitional status."""
        if self.kind == Kind.PROVISION:
            return Status.INIT_FAILED
        return Status.UNKNOWN

    def _enqueue_cleanup(self) -> None:
        # django_q.tasks imports django_q's models, which cannot load while apps load.
        from django_q.tasks import async_task

        async_task("operations.tasks.clean_up", self.pk, task_name=f"cleanup-{self.pk}", group="operations")


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
        return f"{kind} #{self.pk} of {self.template} to r{self.target.revision} ({self.state})"

    @property
    def is_running(self) -> bool:
        return self.state == self.State.RUNNING


class Outcome(models.TextChoices):
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
