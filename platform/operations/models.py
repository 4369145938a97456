from django.conf import settings
from django.db import models
from django.db.models import Q


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


class OperationQuerySet(models.QuerySet):
    def unfinished(self):
        return self.filter(state__in=UNFINISHED_STATES)


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
