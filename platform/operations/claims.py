"""Claiming and settling operations with conditional updates that must touch one row.

A worker owns an operation only while its row says `running`; the reaper takes that
ownership away by moving the row on. Every write here is conditional on the state the
writer believes the row is in, so a late worker never overwrites the reaper's verdict.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from operations.models import UNFINISHED_STATES, Kind, Operation, OperationEvent, State
from projects.models import TRANSITIONAL_STATUSES, Project, Status

# Observed status while an operation of each kind runs.
STATUS_WHILE_RUNNING = {
    Kind.PROVISION: Status.COMING_UP,
    Kind.START: Status.COMING_UP,
    Kind.RESTART: Status.RESTARTING,
    Kind.RESYNC: Status.UPGRADING,
    Kind.STOP: Status.GOING_DOWN,
    Kind.DELETE: Status.GOING_DOWN,
}


def set_status(project: Project, status: str, reason: str = "") -> None:
    Project.objects.filter(pk=project.pk).update(
        status=status, status_reason=reason, status_changed_at=timezone.now(), updated_at=timezone.now()
    )
    project.status, project.status_reason = status, reason


def claim(operation_id: int) -> Operation | None:
    """Move a queued operation to running; None when another worker (or the reaper) got there first."""
    now = timezone.now()
    with transaction.atomic():
        claimed = Operation.objects.filter(pk=operation_id, state=State.QUEUED, deadline__gt=now).update(
            state=State.RUNNING,
            started_at=now,
            heartbeat_at=now,
            deadline=now + timedelta(seconds=settings.BERTH_OPERATION_DEADLINE),
        )
        if claimed != 1:
            return None
        operation = Operation.objects.select_related("project", "project__host", "project__template_version").get(
            pk=operation_id
        )
        project = operation.project
        # Kept so a step that changed nothing (a re-sync stopped by a conflict) can give it back.
        before = {"status_before": project.status, "status_reason_before": project.status_reason}
        set_status(project, STATUS_WHILE_RUNNING[operation.kind])
        OperationEvent.objects.create(
            operation=operation, step="claimed", message="A worker started the operation", data=before
        )
    return operation


def settle(
    operation: Operation,
    state: str,
    *,
    status: str | None,
    reason: str = "",
    error_code: str = "",
    error_message: str = "",
    data: dict | None = None,
) -> bool:
    """Finish a running operation and set its project's status, both or neither.

    Returns False when the operation was no longer running (the reaper already settled it).
    """
    now = timezone.now()
    with transaction.atomic():
        settled = Operation.objects.filter(pk=operation.pk, state=State.RUNNING).update(
            state=state, finished_at=now, heartbeat_at=now, error_code=error_code, error_message=error_message
        )
        if settled != 1:
            return False
        if status is not None:
            set_status(operation.project, status, reason)
        level = OperationEvent.Level.INFO if state == State.SUCCEEDED else OperationEvent.Level.ERROR
        OperationEvent.objects.create(
            operation=operation,
            step="finished",
            level=level,
            message=error_message or f"Operation {state}",
            data=data or {},
        )
    operation.state = state
    return True


def status_after_timeout(operation: Operation) -> str:
    """Where a project goes when its operation is cut off: never a transitional status."""
    if operation.kind == Kind.PROVISION:
        return Status.INIT_FAILED
    return Status.UNKNOWN


def release_project(operation: Operation, was: str, reason: str) -> None:
    """After `operation` was cut off (reaped, or marked failed by staff) while `was` queued or
    running: its project leaves any transitional status, since no worker will move it now."""
    project = operation.project
    if was == State.RUNNING or project.status in TRANSITIONAL_STATUSES:
        set_status(project, status_after_timeout(operation), reason)


def clean_up_on_commit(operation: Operation) -> None:
    """After a running operation was cut off (reaped, marked failed, cancelled): once that is
    committed, a task stops its agent command and what it started (operations.cleanup)."""
    from django_q.tasks import async_task

    def enqueue():
        async_task("operations.tasks.clean_up", operation.pk, task_name=f"cleanup-{operation.pk}", group="operations")

    transaction.on_commit(enqueue)


def reap(now=None) -> int:
    """Fail every unfinished operation past its deadline as timed_out, and move any project
    that no operation will move out of a transitional status. Returns how many it changed.

    One operation at a time, each by a conditional update, so a worker finishing at the
    same moment either settles first (and the reaper skips it) or loses its claim.
    """
    now = now or timezone.now()
    reaped = 0
    for operation in Operation.objects.filter(state__in=UNFINISHED_STATES, deadline__lte=now).select_related("project"):
        was = operation.state
        cause = (
            "no worker picked it up before its deadline"
            if was == State.QUEUED
            else "the worker did not finish before the deadline (stalled, killed or waiting on an agent)"
        )
        with transaction.atomic():
            updated = Operation.objects.filter(pk=operation.pk, state=was, deadline__lte=now).update(
                state=State.TIMED_OUT, finished_at=now, error_code="deadline", error_message=f"Timed out: {cause}"
            )
            if updated != 1:
                continue
            release_project(operation, was, f"{operation.kind} timed out: {cause}")
            if was == State.RUNNING:
                clean_up_on_commit(operation)
            OperationEvent.objects.create(
                operation=operation,
                step="reaped",
                level=OperationEvent.Level.ERROR,
                message=f"Timed out: {cause}",
                data={"deadline": operation.deadline.isoformat(), "state_before": was},
            )
            reaped += 1
    # One conditional UPDATE: a project whose operation was claimed meanwhile no longer matches.
    reaped += stuck_projects().update(
        status=Status.UNKNOWN,
        status_reason="left in a transitional status with no operation running",
        status_changed_at=now,
        updated_at=now,
    )
    return reaped


def stuck_projects():
    """Projects in a transitional status with no unfinished operation: nothing will move them."""
    return Project.objects.idle().filter(status__in=TRANSITIONAL_STATUSES)
