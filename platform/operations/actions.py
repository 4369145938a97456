"""Verbs that start, cancel and settle operations.

Each verb runs in one transaction, writes an audit row, and enqueues work only on
commit, so a task never sees a row its request did not commit.
"""

from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.actions import record
from operations.models import UPGRADE_KINDS, Kind, Operation, OperationEvent, State
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

# What each kind asks the project to become.
DESIRED_AFTER = {
    Kind.PROVISION: DesiredState.RUNNING,
    Kind.START: DesiredState.RUNNING,
    Kind.RESTART: DesiredState.RUNNING,
    Kind.STOP: DesiredState.STOPPED,
    Kind.DELETE: DesiredState.DELETED,
}


def _enqueue(operation: Operation) -> None:
    from django_q.tasks import async_task

    task_id = async_task(
        "operations.tasks.run_operation",
        operation.pk,
        task_name=f"op-{operation.pk}-{operation.kind}-{operation.project.ref}",
        group="operations",
    )
    Operation.objects.filter(pk=operation.pk).update(task_id=str(task_id or ""))


def _refusal(project: Project, kind: str) -> str | None:
    if project.status == Status.REMOVED:
        return f"{project.ref} is removed"
    if project.desired_state == DesiredState.DELETED and kind != Kind.DELETE:
        return f"{project.ref} is being deleted"
    if kind in (Kind.START, Kind.STOP, Kind.RESTART, Kind.RESYNC, *UPGRADE_KINDS) and project.host_id is None:
        return f"{project.ref} has never been provisioned; retry its provisioning instead"
    return None


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
        reason = _refusal(project, kind)
        if reason:
            raise OperationRefused(reason)
        try:
            with transaction.atomic():
                operation = Operation.objects.create(
                    project=project,
                    kind=kind,
                    params=params or {},
                    attempt=attempt,
                    deadline=timezone.now() + timedelta(seconds=settings.BERTH_QUEUE_DEADLINE),
                    requested_by=actor if getattr(actor, "is_authenticated", False) else None,
                )
        except IntegrityError:
            # The partial unique index on unfinished operations said no: the database is the judge.
            raise OperationInProgress(project) from None
        # Kept on the queued event so a cancel can give the project back the state it wanted before.
        desired_before = project.desired_state
        project.last_activity_at = operation.created_at
        changed = ["last_activity_at", "updated_at"]
        if kind in DESIRED_AFTER and project.desired_state != DESIRED_AFTER[kind]:
            project.desired_state = DESIRED_AFTER[kind]
            changed.append("desired_state")
        project.save(update_fields=changed)
        OperationEvent.objects.create(
            operation=operation,
            step="queued",
            message=f"{kind.label} requested",
            data={"desired_before": desired_before},
        )
        record(actor, f"operation.{kind}", project=project, detail={"operation": operation.pk}, label=label)
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
            "operation.cancel",
            project=operation.project,
            detail={"operation": operation.pk, "state_before": was},
            label=label,
        )
    return True


def _restore_desired_state(operation: Operation) -> None:
    """Undo the desired state a never-run request set, unless something changed it since."""
    queued = operation.events.filter(step="queued").values_list("data", flat=True).first() or {}
    before = queued.get("desired_before")
    if before and operation.kind in DESIRED_AFTER:
        Project.objects.filter(pk=operation.project_id, desired_state=DESIRED_AFTER[operation.kind]).update(
            desired_state=before, updated_at=timezone.now()
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
            "operation.mark_failed",
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
    if action == "retry":
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
