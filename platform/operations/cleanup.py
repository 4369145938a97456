"""After a running operation was cut off (reaped, marked failed, cancelled): stop its work
and record what really runs on the host.

Runs as a django-q task queued on commit of the forced end, never in a web request. Every
agent call is bounded by BERTH_AGENT_CALL_DEADLINE. Steps:

1. Ask the agent to cancel the operation: it kills that operation's command (its process
   group), if one still runs, and refuses any later command of it. Commands of other
   operations are never touched.
2. Provision and start brought up a runtime nobody has seen healthy: stop it (data and
   ports kept). An upgrade is undone: the new cluster it was building is removed, or, when
   it had switched but not recorded the new major, the old cluster serves again. Restart
   and re-sync ran on a runtime that was meant to run, and stop and delete were taking it
   down: those are left as they are (a health wait that ran out is no
   reason to take a database offline).
3. Read the runtime's state and record it: as the status (or, for a provisioning, in the
   INIT_FAILED reason), so a project never reads "failed" while its Postgres runs unseen.
   A backup or restore test works beside the serving runtime: its job is stopped and
   recorded, and the status is left alone. A cut-off restore ends with the old data (the
   agent puts it back when its job is cancelled) or, if the job had finished, the restored.

Nothing is done when a later operation exists for the project: the runtime is then that
operation's business. Status writes are conditional on the project being idle and still in
the status the forced end left, so they never overwrite what came after.
"""

import logging

from django.conf import settings

from agent.client import AgentError
from hosts import agents
from operations import protection
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
    if operation.kind == Kind.BACKUP:
        protection.fail_running_backups(operation, ending(operation))
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
        if operation.kind == Kind.UPGRADE and not superseded(operation):
            undo_upgrade(client, operation)
        if operation.kind == Kind.RESTORE:
            settle_restore(client, operation)
        if KINDS[operation.kind].running is None:
            return False  # it worked beside the serving runtime: its status was never moved
        state = client.status(project.ref)
    except AgentError as error:
        note(operation, f"Could not stop or read the runtime: {error}", OperationEvent.Level.WARNING)
        if KINDS[operation.kind].running is not None:
            record(operation, left_status, f"{ending(operation)}; the agent did not answer, so it may still run")
        return False
    status, reason = observed(operation, state.state, state.detail)
    record(operation, left_status, reason, status)
    note(operation, f"The runtime is {state.state}: {state.detail}")
    return True


def undo_upgrade(client, operation: Operation) -> None:
    """An upgrade cut off before it recorded the new major leaves the old one serving: a new
    cluster still being built is dropped, one already switched to is switched back from."""
    project = Project.objects.get(pk=operation.project_id)
    state = client.upgrade_state(project.ref)
    if state.phase == "switched" and state.current_major != project.postgres_major:
        client.upgrade_step(project.ref, "rollback")
        note(operation, f"Switched back to PostgreSQL {project.postgres_major}, which the project still records")
    elif state.phase in ("preparing", "copying", "ready", "failed"):
        client.upgrade_step(project.ref, "abort")
        note(operation, f"Removed the PostgreSQL {state.target_major} cluster it was building; the old one serves")


def settle_restore(client, operation: Operation) -> None:
    """A cut-off restore, once the cancel ended its job: it either had finished (the project
    serves the restored data, recorded as such) or was undone by the agent (the old data)."""
    job = client.backup_job(operation.project.ref)
    if job.operation == str(operation.pk) and job.state == "succeeded":
        project = Project.objects.get(pk=operation.project_id)
        protection.record_restored(project, operation.params.get("target", "latest"), operation=operation)
        note(operation, "The restore had finished before the end: the project serves the restored data")
    else:
        note(operation, "The restore did not finish: the agent put the old data back")


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
