"""The reaper: ends every unfinished operation past its deadline as timed_out, and moves any
project that no operation will move out of a transitional status.

One operation at a time, each by Operation.cut_off, so a worker finishing at the same moment
either settles first (and the reaper skips it) or loses its claim.
"""

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from operations.models import Operation, OperationEvent, State
from projects.models import TRANSITIONAL_STATUSES, Project, Status, StatusCause, StatusMove
from telemetry import record as telemetry


def reap(now=None) -> int:
    """Returns how many operations and projects it changed."""
    now = now or timezone.now()
    reaped = 0
    for operation in Operation.objects.unfinished().filter(deadline__lte=now).select_related("project"):
        cause = (
            "no worker picked it up before its deadline"
            if operation.state == State.QUEUED
            else "the worker did not finish before the deadline (stalled, killed or waiting on an agent)"
        )
        with transaction.atomic():
            was = operation.cut_off(
                State.TIMED_OUT,
                error_code="deadline",
                error_message=f"Timed out: {cause}",
                reason=f"{operation.kind} timed out: {cause}",
                condition=Q(deadline__lte=now, state=operation.state),
            )
            if was is None:
                continue
            OperationEvent.objects.create(
                operation=operation,
                step="reaped",
                level=OperationEvent.Level.ERROR,
                message=f"Timed out: {cause}",
                data={"deadline": operation.deadline.isoformat(), "state_before": was},
            )
            reaped += 1
            telemetry.count("berth_reaper_actions_total", action="timed_out")
    # Conditional on idle: a project whose operation was claimed meanwhile no longer matches.
    freed = StatusMove(Status.UNKNOWN, "left in a transitional status with no operation running")
    moved = len(stuck_projects().move_status(freed, cause=StatusCause.STUCK))
    if moved:
        telemetry.count("berth_reaper_actions_total", moved, action="freed_project")
    return reaped + moved


def stuck_projects():
    """Projects in a transitional status with no unfinished operation: nothing will move them."""
    return Project.objects.idle().filter(status__in=TRANSITIONAL_STATUSES)
