"""The reaper: ends every unfinished operation past its deadline as timed_out, and moves any
project that no operation will move out of a transitional status.

One operation at a time, each by Operation.cut_off, so a worker finishing at the same moment
either settles first (and the reaper skips it) or loses its claim.
"""

from datetime import timedelta

from django.conf import settings
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
    # A running operation's worker writes a heartbeat with every event, and no step goes
    # longer than one command's budget (at most BERTH_OPERATION_DEADLINE) without one. Past
    # that and a call's deadline, its worker is gone: this ends a backup kind, whose own
    # deadline is hours away, as soon as any other kind would end.
    silent_since = now - timedelta(seconds=settings.BERTH_OPERATION_DEADLINE + settings.BERTH_AGENT_CALL_DEADLINE)
    past_deadline = Q(deadline__lte=now)
    silent = Q(state=State.RUNNING, heartbeat_at__lte=silent_since)
    for operation in Operation.objects.unfinished().filter(past_deadline | silent).select_related("project"):
        if operation.state == State.QUEUED:
            cause = "no worker picked it up before its deadline"
        elif operation.deadline <= now:
            cause = "the worker did not finish before the deadline (stalled, killed or waiting on an agent)"
        else:
            cause = f"the worker was not heard from after {operation.heartbeat_at:%H:%M:%S} UTC (killed or stalled)"
        with transaction.atomic():
            was = operation.cut_off(
                State.TIMED_OUT,
                error_code="deadline",
                error_message=f"Timed out: {cause}",
                reason=f"{operation.kind} timed out: {cause}",
                condition=(past_deadline | silent) & Q(state=operation.state),
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
