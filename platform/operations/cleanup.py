"""After a running operation was cut off (reaped, marked failed, cancelled): stop its work
and record what really runs on the host.

Runs as a django-q task queued on commit of the forced end, never in a web request. Every
agent call is bounded by BERTH_AGENT_CALL_DEADLINE. Steps:

1. Ask the agent to cancel the operation: it kills that operation's command (its process
   group), if one still runs, and refuses any later command of it. Commands of other
   operations are never touched.
2. Provision and start brought up a runtime nobody has seen healthy: stop it (data and
   ports kept). Restart and re-sync ran on a runtime that was meant to run, and stop and
   delete were taking it down: those are left as they are (a health wait that ran out is no
   reason to take a database offline).
3. Read the runtime's state and record it: as the status (or, for a provisioning, in the
   INIT_FAILED reason), so a project never reads "failed" while its Postgres runs unseen.

Nothing is done when a later operation exists for the project: the runtime is then that
operation's business. Status writes are conditional on the project being idle and still in
the status the forced end left, so they never overwrite what came after.
"""

import logging

from django.conf import settings

from agent.client import AgentError
from hosts import agents
from operations.models import KINDS, Kind, Operation, OperationEvent
from projects.models import Project, Status, StatusCause, StatusMove

log = logging.getLogger(__name__)

# How long the agent waits for the cancelled command to end before answering.
CANCEL_WAIT_S = 5.0


def stop_what_it_started(operation_id: int) -> bool:
    """Returns whether the runtime's state was read and recorded."""
    operation = Operation.objects.select_related("project", "project__host").get(pk=operation_id)
    project = operation.project
    if project.host is None:
        return False
    left_status = project.status
    if superseded(operation):
        note(operation, "A later operation owns the runtime now; left as it is")
        return False
    client = agents.client_for(project.host, deadline=settings.BERTH_AGENT_CALL_DEADLINE)
    try:
        cancel = client.cancel(project.ref, str(operation.pk), wait_s=CANCEL_WAIT_S)
        if cancel.cancelled:
            note(operation, "The agent killed the operation's running command")
        if KINDS[operation.kind].stop_after_cut_off and not superseded(operation):
            client.down(project.ref)
            note(operation, "Stopped the runtime it had started (data and ports kept)")
        state = client.status(project.ref)
    except AgentError as error:
        note(operation, f"Could not stop or read the runtime: {error}", OperationEvent.Level.WARNING)
        record(operation, left_status, f"{ending(operation)}; the agent did not answer, so it may still run")
        return False
    status, reason = observed(operation, state.state, state.detail)
    record(operation, left_status, reason, status)
    note(operation, f"The runtime is {state.state}: {state.detail}")
    return True


def superseded(operation: Operation) -> bool:
    return Operation.objects.filter(project_id=operation.project_id, pk__gt=operation.pk).exists()


def observed(operation: Operation, state: str, detail: str) -> tuple[str, str]:
    """(status, reason) for what the agent reports after the forced end."""
    cause = ending(operation)
    if operation.kind == Kind.PROVISION:
        # It never finished: INIT_FAILED stays, its reason says what runs.
        what = {"running": f"its runtime is still running ({detail})", "stopped": "its runtime is stopped"}
        return Status.INIT_FAILED, f"{cause}; {what.get(state, 'no runtime on the host')}"
    if state == "running":
        # The health refresh takes UNKNOWN projects that are meant to run and judges them.
        return Status.UNKNOWN, f"{cause}; the runtime is running ({detail}), health not yet known"
    if state == "stopped":
        return Status.INACTIVE, f"{cause}; the runtime is stopped"
    return Status.UNKNOWN, f"{cause}; no runtime on the host"


def ending(operation: Operation) -> str:
    """How the operation ended, from its row: the same text however often this task runs."""
    return f"{operation.get_kind_display()} {operation.get_state_display()}: {operation.error_message}"


def record(operation: Operation, left_status: str, reason: str, status: str | None = None) -> None:
    """The project's status (else the one the forced end left) with `reason`, unless it moved since."""
    Project.objects.idle().filter(pk=operation.project_id, status=left_status).move_status(
        StatusMove(status or left_status, reason), cause=StatusCause.CLEANUP, operation_id=operation.pk
    )


def note(operation: Operation, message: str, level: str = OperationEvent.Level.INFO) -> None:
    OperationEvent.objects.create(operation=operation, step="cleanup", level=level, message=message)
