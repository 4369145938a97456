"""Verbs that start, cancel and settle operations.

Each verb runs in one transaction, writes an audit row, and enqueues work only on
commit, so a task never sees a row its request did not commit.
"""

from dataclasses import dataclass, field
from datetime import timedelta

import django_q.tasks
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.actions import record
from audit.models import Action
from operations.models import KINDS, Kind, Operation, OperationEvent, State
from projects.models import DesiredState, Project, Status
from templating.models import TemplateVersion


class OperationRefused(Exception):
    """A request that cannot become an operation; the message says why, for staff."""

    code = "refused"
    # Set by act_on_projects, so a bulk caller can name the project (None for an unknown ref).
    project = None

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class OperationInProgress(OperationRefused):
    code = "in_progress"

    def __init__(self, project: Project):
        super().__init__(f"{project.ref}: an operation is already in progress")


@dataclass
class BulkOutcome:
    queued: list[Operation] = field(default_factory=list)
    refused: list[OperationRefused] = field(default_factory=list)


RETRYABLE_STATES = (State.FAILED, State.TIMED_OUT)

# The staff actions on a project, as pages and commands name them: operation kinds, and retry.
RETRY = "retry"
STAFF_ACTIONS = (Kind.START, Kind.STOP, Kind.RESTART, RETRY, Kind.RESYNC, Kind.DELETE)


def _enqueue(operation: Operation) -> None:
    task_id = django_q.tasks.async_task(
        "operations.tasks.run_operation",
        operation.pk,
        task_name=f"op-{operation.pk}-{operation.kind}-{operation.project.ref}",
        group="operations",
    )
    Operation.objects.filter(pk=operation.pk).update(task_id=str(task_id or ""))


def refusal(project: Project, kind: str) -> str | None:
    """Why the project, in its status and desired state, refuses an operation of `kind`, to be
    read after its ref ("is removed"); None when it takes one. The one statement of which
    requests a project's state allows: request_operation refuses with it, and pages leave out
    what it refuses (unavailable_actions)."""
    if project.status == Status.REMOVED:
        return "is removed"
    if project.desired_state == DesiredState.DELETED and kind != Kind.DELETE:
        return "is being deleted"
    if KINDS[kind].needs_runtime and project.host_id is None:
        return "has never been provisioned; retry its provisioning instead"
    # A start of a project seen running, or a stop of one seen stopped, would change nothing
    # (the Management API's restore and pause answer 400 for them, as the platform's do).
    if kind == Kind.START and (project.desired_state, project.status) == (DesiredState.RUNNING, Status.ACTIVE_HEALTHY):
        return "already running"
    if kind == Kind.STOP and (project.desired_state, project.status) == (DesiredState.STOPPED, Status.INACTIVE):
        return "already stopped"
    return None


def unavailable_actions(project: Project, *, last: Operation | None, in_progress: bool, update_available: bool):
    """Why each staff action does not apply to the project now, keyed by action; an action
    absent from the result applies. The reasons the verbs refuse with (`refusal`, a retry's
    "nothing failed", re-sync's "on the latest version"), known before asking, plus what an
    action would not change (a restart of a stopped project), so pages offer only what can apply. The
    verbs stay the judge."""
    if in_progress:
        return dict.fromkeys(STAFF_ACTIONS, "an operation is in progress: cancel it or wait for it to end")
    why = {}
    for action in STAFF_ACTIONS:
        if action == RETRY:
            retried = last.kind if last is not None and last.state in RETRYABLE_STATES else None
            reason = refusal(project, retried) if retried else "nothing failed"
        else:
            reason = refusal(project, action)
        if reason:
            why[action] = reason
    if project.host_id is not None and project.status != Status.REMOVED:
        if project.desired_state == DesiredState.STOPPED and project.status == Status.INACTIVE:
            why.setdefault(Kind.RESTART, "stopped: start it instead")
        if not update_available:
            why.setdefault(Kind.RESYNC, "on the latest template version")
    return why


def request_operation(
    project: Project,
    kind: str,
    *,
    actor=None,
    label: str | None = None,
    params: dict | None = None,
    attempt: int = 1,
) -> Operation:
    """Queue one operation for a project. Raises OperationRefused (or OperationInProgress)."""
    kind = Kind(kind)
    with transaction.atomic():
        project = Project.objects.select_for_update().get(pk=project.pk)
        reason = refusal(project, kind)
        if reason:
            raise OperationRefused(f"{project.ref} {reason}")
        try:
            with transaction.atomic():
                operation = Operation.objects.create(
                    project=project,
                    kind=kind,
                    params=params or {},
                    attempt=attempt,
                    deadline=timezone.now() + timedelta(seconds=settings.BERTH_QUEUE_DEADLINE),
                    requested_by=actor if getattr(actor, "is_authenticated", False) else None,
                    # Kept so a cancel can give the project back the state it wanted before.
                    desired_before=project.desired_state,
                )
        except IntegrityError:
            # The partial unique index on unfinished operations said no: the database is the judge.
            raise OperationInProgress(project) from None
        project.last_activity_at = operation.created_at
        changed = ["last_activity_at", "updated_at"]
        desired = KINDS[kind].desired
        if desired is not None and project.desired_state != desired:
            project.desired_state = desired
            changed.append("desired_state")
        project.save(update_fields=changed)
        OperationEvent.objects.create(operation=operation, step="queued", message=f"{kind.label} requested")
        record(actor, Action.requested(kind), project=project, detail={"operation": operation.pk}, label=label)
        transaction.on_commit(lambda: _enqueue(operation))
    return operation


def retry_project(project: Project, *, actor=None, label: str | None = None) -> Operation:
    """Run the project's last failed operation again from a clean state (every step from the start).

    Only a failure is retried: a cancelled operation was stopped on purpose."""
    last = project.operations.order_by("-created_at").first()
    if last is None or last.state not in RETRYABLE_STATES:
        raise OperationRefused(f"{project.ref}: nothing to retry (its last operation did not fail)")
    return request_operation(
        project,
        last.kind,
        actor=actor,
        label=label,
        params={**last.params, "retry_of": last.pk},
        attempt=last.attempt + 1,
    )


def cancel_operation(operation: Operation, *, actor=None, label: str | None = None) -> bool:
    """Cancel an unfinished operation. Returns False when it had already finished.

    Queued: it never ran, and ends here. Running: the row moves to `cancelled` at once (the
    worker's late verdict is dropped, settling needs `running`), the project leaves its
    transitional status as after a timeout, and on commit a task asks the agent to kill the
    operation's command, stops what it started and records what really runs
    (operations.cleanup); no agent is called from this request.

    Either way the desired state the request set goes back to what it was: a cancelled delete
    must not leave the project refusing every other action as "being deleted".
    """
    with transaction.atomic():
        was = operation.cut_off(
            State.CANCELLED,
            error_code="cancelled",
            error_message="cancelled by staff",
            reason=f"{operation.kind} cancelled by staff",
        )
        if was is None:
            return False
        _restore_desired_state(operation)
        if was == State.QUEUED:
            OperationEvent.objects.create(operation=operation, step="cancelled", message="Cancelled before it started")
        else:
            OperationEvent.objects.create(
                operation=operation,
                step="cancelled",
                level=OperationEvent.Level.WARNING,
                message="Cancelled while running; its agent command is being stopped",
            )
        record(
            actor,
            Action.OPERATION_CANCEL,
            project=operation.project,
            detail={"operation": operation.pk, "state_before": was},
            label=label,
        )
    return True


def _restore_desired_state(operation: Operation) -> None:
    """Undo the desired state a never-run request set, unless something changed it since."""
    desired = KINDS[operation.kind].desired
    if operation.desired_before and desired is not None:
        Project.objects.filter(pk=operation.project_id, desired_state=desired).update(
            desired_state=operation.desired_before, updated_at=timezone.now()
        )


def fail_operation(operation: Operation, *, actor, label: str | None = None, reason: str) -> bool:
    """Fail an unfinished operation now, as the reaper would at its deadline: for one staff
    know is dead (its worker gone) before the deadline. Returns False when it had finished.

    The row is locked and must still be queued or running, so a verdict that landed first
    stands, and a worker's later verdict is dropped (settling needs `running`). The project
    leaves any transitional status, as after a timeout, and a running operation's work is
    stopped after commit (operations.cleanup).
    """
    with transaction.atomic():
        was = operation.cut_off(
            State.FAILED,
            error_code="marked_failed",
            error_message=reason,
            reason=f"{operation.kind} marked failed: {reason}",
        )
        if was is None:
            return False
        OperationEvent.objects.create(
            operation=operation, step="marked_failed", level=OperationEvent.Level.ERROR, message=f"Failed: {reason}"
        )
        record(
            actor,
            Action.OPERATION_MARK_FAILED,
            project=operation.project,
            detail={"operation": operation.pk, "state_before": was, "reason": reason},
            label=label,
        )
    return True


def request_resync_to_latest(project: Project, *, actor=None, label: str | None = None):
    """Queue a re-sync operation to the latest version of the project's template.

    Returns the operation, or None when the project is already on the latest version.
    Raises OperationRefused when the project cannot take an operation now.
    """
    latest = TemplateVersion.objects.latest_of(project.template)
    if latest is None or latest.pk == project.template_version_id:
        return None
    return request_operation(project, "resync", actor=actor, label=label, params={"template_version": latest.pk})


def act_on_project(project: Project, action: str, *, actor=None, label: str | None = None, params: dict | None = None):
    """One staff action on one project, as the dashboard, the admin and `manage.py projects` name
    them: a lifecycle kind, "retry" (the last failed operation again) or "resync" (to the
    latest version of the project's template). Raises OperationRefused with the reason."""
    if action == RETRY:
        return retry_project(project, actor=actor, label=label)
    if action == Kind.RESYNC:
        operation = request_resync_to_latest(project, actor=actor, label=label)
        if operation is None:
            raise OperationRefused(
                f"{project.ref} is already on the latest version of {project.template}", code="current"
            )
        return operation
    return request_operation(project, Kind(action), actor=actor, label=label, params=params)


def act_on_projects(
    refs: list[str], action: str, *, actor=None, label: str | None = None, params: dict | None = None
) -> BulkOutcome:
    """`act_on_project` for each named project, each requested on its own: a refusal for one
    project (an unknown ref included) never holds back the others, and each is kept with its reason."""
    found = {p.ref: p for p in Project.objects.filter(ref__in=refs)}
    outcome = BulkOutcome()
    for ref in refs:
        project = found.get(ref)
        try:
            if project is None:
                raise OperationRefused(f"{ref}: no such project", code="not_found")
            outcome.queued.append(act_on_project(project, action, actor=actor, label=label, params=params))
        except OperationRefused as refusal:
            refusal.project = project
            outcome.refused.append(refusal)
    return outcome
