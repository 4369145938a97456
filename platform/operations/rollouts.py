"""Rollouts: moving a template's projects to a revision in waves, with a health gate between waves.

A `Rollout` row is the record of truth; the driver (`advance`) moves it one small step at a
time, and every step is claimed by a conditional UPDATE of the rollout's `step` counter that
must touch exactly one row, so two drivers (two workers, or a worker and the sweep) never
both act on one state. Steps:

1. settle: a project whose operation finished takes its outcome from the operation
   (updated, unchanged, resolved, conflicted or failed). Done in any state, so a
   resolution requested after a rollout finished is still recorded.
2. budget: failures since the rollout started or last resumed (conflicts too, with
   `fail_on_conflict`) reaching `max_failures` halt it, the cause named.
3. wave deadline: a wave not settled within its deadline halts it.
4. start: while fewer than `concurrency` projects of the current wave have an operation
   in flight, the next pending one gets a `resync` operation (request_operation, so
   single-flight per project holds). A project that is not running gets its files and no
   restart; one never provisioned has its revision recorded (nothing is on a host yet).
5. gate: once every project of the wave has settled, each one its operation restarted
   must be ACTIVE_HEALTHY now; then the next wave starts, or the rollout finishes.

The driver runs in the worker: `drive` after the rollout starts or resumes, after each of
its operations ends (operations.tasks.run_operation), and on a schedule as a sweep for
what those miss (an operation the reaper settled, a wave deadline).
"""

import logging
import math
from datetime import timedelta

import django_q.tasks
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.actions import record
from audit.models import Action
from operations.actions import OperationInProgress, OperationRefused, cancel_operation, request_operation
from operations.conflicts import RESOLUTIONS
from operations.models import (
    DONE_OUTCOMES,
    SETTLED_OUTCOMES,
    UNFINISHED_STATES,
    Kind,
    Operation,
    Outcome,
    Rollout,
    RolloutProject,
    State,
)
from operations.resync import resync_project
from operations.runtime_files import AgentRuntimeFiles
from projects.models import DesiredState, Project, Status
from templating.models import TemplateVersion

log = logging.getLogger(__name__)

UNFINISHED_ROLLOUT_STATES = (Rollout.State.RUNNING, Rollout.State.PAUSED, Rollout.State.HALTED)
# Statuses of a runtime that runs now, and so is restarted when its files change.
RUNNING_STATUSES = (Status.ACTIVE_HEALTHY, Status.ACTIVE_UNHEALTHY)
# Bounds one drive call: a step's work is small, so this is only a guard against a loop.
MAX_STEPS_PER_DRIVE = 10_000


class RolloutRefused(Exception):
    """A rollout request that cannot be carried out; the message says why, for staff."""


# --- starting ---------------------------------------------------------------------------


def projects_behind(target: TemplateVersion, refs: list[str] | None = None):
    """Live projects of `target`'s template on another revision, in rollout order (by ref)."""
    projects = (
        Project.objects.live()
        .filter(template=target.name)
        .exclude(desired_state=DesiredState.DELETED)
        .select_related("template_version", "host")
        .order_by("ref")
    )
    if refs:
        projects = projects.filter(ref__in=refs)
        unknown = sorted(set(refs) - set(projects.values_list("ref", flat=True)))
        if unknown:
            raise RolloutRefused(f"no live {target.name} project with ref: {', '.join(unknown)}")
    return projects.exclude(template_version=target)


def wave_of(position: int, canary: int, wave_size: int) -> int:
    """Wave 0 holds the first `canary` projects (none when canary is 0), then waves of `wave_size`."""
    if position < canary:
        return 0
    return (1 if canary else 0) + (position - canary) // wave_size


def start_rollout(
    target: TemplateVersion,
    *,
    refs: list[str] | None = None,
    canary: int = 1,
    wave_size: int = 5,
    max_failures: int = 1,
    concurrency: int = 2,
    restart: bool = True,
    fail_on_conflict: bool = False,
    actor=None,
    label: str | None = None,
) -> Rollout:
    """Create a rollout of every project behind `target` (or those of `refs`) and start driving it.

    Refused when the template already has an unfinished rollout, or no project is behind.
    """
    with transaction.atomic():
        projects = list(projects_behind(target, refs).select_for_update(of=("self",)))
        return _create(
            target,
            [(project, target) for project in projects],
            canary=canary,
            wave_size=wave_size,
            max_failures=max_failures,
            concurrency=concurrency,
            restart=restart,
            fail_on_conflict=fail_on_conflict,
            actor=actor,
            label=label,
        )


def _create(target, moves, *, rollback_of=None, actor, label, **options) -> Rollout:
    if options["wave_size"] < 1 or options["concurrency"] < 1 or options["max_failures"] < 1:
        raise RolloutRefused("wave size, concurrency and max failures must each be at least 1")
    if options["canary"] < 0:
        raise RolloutRefused("the canary wave cannot be negative")
    if not moves:
        raise RolloutRefused(f"no {target.name} project to move: all are on their target revision")
    # Serialises rollouts of one template: the latest version row is the template's lock.
    TemplateVersion.objects.select_for_update().filter(name=target.name).order_by("-revision").first()
    busy = Rollout.objects.filter(template=target.name, state__in=UNFINISHED_ROLLOUT_STATES).first()
    if busy is not None:
        raise RolloutRefused(f"{busy} is unfinished; finish, resume or cancel it first")
    now = timezone.now()
    rollout = Rollout.objects.create(
        template=target.name,
        target=target,
        rollback_of=rollback_of,
        wave_started_at=now,
        budget_from=now,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
        **options,
    )
    RolloutProject.objects.bulk_create(
        RolloutProject(
            rollout=rollout,
            project=project,
            position=position,
            wave=wave_of(position, options["canary"], options["wave_size"]),
            from_version_id=project.template_version_id,
            target_version=version,
        )
        for position, (project, version) in enumerate(moves)
    )
    action = Action.ROLLOUT_ROLLBACK if rollback_of else Action.ROLLOUT_START
    detail = {"rollout": rollout.pk, "template": target.name, "to": target.revision, "projects": len(moves)}
    record(actor, action, detail={**detail, **options}, label=label)
    transaction.on_commit(lambda: enqueue_drive(rollout.pk))
    return rollout


def rollback(
    rollout: Rollout, *, refs: list[str] | None = None, actor=None, label: str | None = None, **options
) -> Rollout:
    """A new rollout taking the projects `rollout` moved (or those of `refs`) back to the revision
    each came from, through the same waves and gates. Projects it never moved are left alone.
    An unfinished rollout (typically halted by a bad canary) is cancelled first."""
    with transaction.atomic():
        if rollout.state in UNFINISHED_ROLLOUT_STATES:
            cancel(rollout, actor=actor, label=label)
        entries = rollout.projects.select_related("project", "from_version").filter(outcome__in=DONE_OUTCOMES)
        entries = entries.filter(project__template_version=F("target_version")).order_by("position")
        if refs:
            entries = entries.filter(project__ref__in=refs)
        moves = [(entry.project, entry.from_version) for entry in entries]
        defaults = {"canary": rollout.canary, "wave_size": rollout.wave_size, "max_failures": rollout.max_failures}
        defaults.update(concurrency=rollout.concurrency, restart=rollout.restart, fail_on_conflict=False)
        defaults.update(options)
        # A rollback's `target` names the revision it came from for the canary (the first move).
        target = moves[0][1] if moves else rollout.target
        return _create(target, moves, rollback_of=rollout, actor=actor, label=label, **defaults)


def enqueue_drive(rollout_id: int) -> None:
    django_q.tasks.async_task(
        "operations.tasks.drive_rollout", rollout_id, task_name=f"rollout-{rollout_id}", group="rollouts"
    )


# --- staff controls ----------------------------------------------------------------------


# The audit action of each state staff move a rollout to.
_MOVED_TO = {
    Rollout.State.PAUSED: Action.ROLLOUT_PAUSED,
    Rollout.State.RUNNING: Action.ROLLOUT_RESUMED,
    Rollout.State.CANCELLED: Action.ROLLOUT_CANCELLED,
}


def _move(rollout: Rollout, allowed, state, *, actor, label, reason="", **fields) -> bool:
    now = timezone.now()
    with transaction.atomic():
        moved = Rollout.objects.filter(pk=rollout.pk, state__in=allowed).update(
            state=state, reason=reason, step=F("step") + 1, **fields
        )
        if not moved:
            return False
        record(actor, _MOVED_TO[state], detail={"rollout": rollout.pk, "reason": reason}, label=label)
        if state == Rollout.State.RUNNING:
            transaction.on_commit(lambda: enqueue_drive(rollout.pk))
        if state == Rollout.State.CANCELLED:
            _cancel_pending(rollout, now, actor=actor, label=label)
    rollout.refresh_from_db()
    return True


def pause(rollout: Rollout, *, actor=None, label: str | None = None) -> bool:
    """Stop starting operations; those in flight finish and are recorded. False unless it was running."""
    return _move(rollout, [Rollout.State.RUNNING], Rollout.State.PAUSED, actor=actor, label=label, reason="paused")


def resume(rollout: Rollout, *, actor=None, label: str | None = None) -> bool:
    """Go on from where a paused or halted rollout stopped. Its failed projects are tried again
    (restarted even when their files are already in place); the failure budget counts afresh."""
    now = timezone.now()
    with transaction.atomic():
        if not Rollout.objects.select_for_update().filter(pk=rollout.pk, state__in=_RESUMABLE).exists():
            return False
        rollout.projects.filter(outcome=Outcome.FAILED).update(outcome=Outcome.PENDING, retry=True, finished_at=None)
        return _move(
            rollout, _RESUMABLE, Rollout.State.RUNNING, actor=actor, label=label, wave_started_at=now, budget_from=now
        )


_RESUMABLE = (Rollout.State.PAUSED, Rollout.State.HALTED)


def cancel(rollout: Rollout, *, actor=None, label: str | None = None) -> bool:
    """End an unfinished rollout: pending projects are skipped and queued operations cancelled;
    one already running finishes and is recorded. False when it had already ended."""
    return _move(
        rollout,
        UNFINISHED_ROLLOUT_STATES,
        Rollout.State.CANCELLED,
        actor=actor,
        label=label,
        reason="cancelled",
        finished_at=timezone.now(),
    )


def _cancel_pending(rollout: Rollout, now, *, actor, label) -> None:
    rollout.projects.filter(outcome=Outcome.PENDING).update(
        outcome=Outcome.SKIPPED, message="rollout cancelled", finished_at=now
    )
    queued = Operation.objects.filter(
        pk__in=rollout.projects.filter(outcome=Outcome.RUNNING).values("operation"), state=State.QUEUED
    )
    for operation in queued.select_related("project"):
        if cancel_operation(operation, actor=actor, label=label):
            rollout.projects.filter(operation=operation, outcome=Outcome.RUNNING).update(
                outcome=Outcome.SKIPPED, message="rollout cancelled before its re-sync started", finished_at=now
            )


def resolve(entry: RolloutProject, how: str, *, actor=None, label: str | None = None) -> Operation:
    """Queue the resolution of a conflicted project's re-sync (operations.conflicts): a `resync`
    operation to the entry's target with `resolve`. Raises OperationRefused or RolloutRefused."""
    if how not in RESOLUTIONS:
        raise RolloutRefused(f"unknown resolution {how!r}; use one of {', '.join(RESOLUTIONS)}")
    with transaction.atomic():
        entry = RolloutProject.objects.select_for_update().select_related("project").get(pk=entry.pk)
        if entry.outcome != Outcome.CONFLICTED:
            raise RolloutRefused(f"{entry.project.ref} is {entry.outcome} in this rollout, not conflicted")
        params = {"template_version": entry.target_version_id, "resolve": how}
        if not entry.rollout.restart:
            params["restart"] = "never"
        operation = request_operation(entry.project, Kind.RESYNC, actor=actor, label=label, params=params)
        RolloutProject.objects.filter(pk=entry.pk).update(
            outcome=Outcome.RUNNING, operation=operation, message=f"resolving: {how}", finished_at=None
        )
    return operation


def resolve_all(rollout: Rollout, how: str, *, actor=None, label: str | None = None) -> dict[str, str]:
    """Resolve every conflicted project of a rollout the same way; returns ref -> what happened."""
    done = {}
    for entry in rollout.projects.filter(outcome=Outcome.CONFLICTED).select_related("project"):
        try:
            operation = resolve(entry, how, actor=actor, label=label)
        except (OperationRefused, RolloutRefused) as refusal:
            done[entry.project.ref] = f"refused: {refusal}"
        else:
            done[entry.project.ref] = f"operation {operation.pk} queued"
    return done


def latest_conflict(project: Project) -> RolloutProject | None:
    """The project's most recent conflicted rollout entry, which a resolution applies to."""
    return (
        RolloutProject.objects.filter(project=project, outcome=Outcome.CONFLICTED)
        .select_related("rollout", "target_version")
        .order_by("-rollout__created_at")
        .first()
    )


# --- the driver ----------------------------------------------------------------------------


def drive(rollout_id: int) -> int:
    """Advance a rollout until it has nothing to do now; returns the number of steps taken."""
    steps = 0
    while steps < MAX_STEPS_PER_DRIVE and advance(rollout_id):
        steps += 1
    return steps


def drive_all() -> int:
    """The sweep: drive every rollout that is running or has an operation in flight."""
    ids = Rollout.objects.filter(Q(state=Rollout.State.RUNNING) | Q(projects__outcome=Outcome.RUNNING)).values_list(
        "pk", flat=True
    )
    return sum(drive(rollout_id) for rollout_id in set(ids))


def advance(rollout_id: int) -> bool:
    """Take one step of a rollout; False when there is nothing to do now."""
    rollout = Rollout.objects.select_related("target").get(pk=rollout_id)
    if _settle_one(rollout):
        return True
    if rollout.state != Rollout.State.RUNNING:
        return False
    for step in (_check_budget, _check_deadline, _start_next, _pass_gate):
        with transaction.atomic():
            # The claim: this step acts on the rollout as read, or not at all.
            claimed = Rollout.objects.filter(pk=rollout.pk, step=rollout.step, state=Rollout.State.RUNNING).update(
                step=F("step") + 1
            )
            if claimed != 1:
                return True  # another driver moved it on; read it afresh
            if step(rollout):
                return True
            transaction.set_rollback(True)
    return False


def _settle_one(rollout: Rollout) -> bool:
    """Record the outcome of one project whose operation finished. Conditional on the entry still
    waiting on that operation, so two drivers record it once."""
    entry = (
        rollout.projects.filter(outcome=Outcome.RUNNING, operation__state__in=_FINISHED_STATES)
        .select_related("operation", "project")
        .order_by("position")
        .first()
    )
    if entry is None:
        return False
    operation = entry.operation
    outcome, message, conflicts = _outcome_of(operation)
    with transaction.atomic():
        RolloutProject.objects.filter(pk=entry.pk, outcome=Outcome.RUNNING, operation=operation).update(
            outcome=outcome,
            message=message,
            conflicts=conflicts,
            restarted=operation.restarted,
            finished_at=operation.finished_at or timezone.now(),
        )
    return True


_FINISHED_STATES = [state for state in State.values if state not in UNFINISHED_STATES]


def _outcome_of(operation: Operation) -> tuple[str, str, list[str]]:
    """The entry's outcome, message and conflicting paths, from its finished re-sync's typed result."""
    if operation.state == State.SUCCEEDED:
        return operation.result, operation.result_message, []
    if operation.result == Outcome.CONFLICTED:
        return Outcome.CONFLICTED, operation.error_message, operation.conflict_paths
    return Outcome.FAILED, operation.error_message or f"operation {operation.state}", []


def _wave(rollout: Rollout):
    return rollout.projects.filter(wave=rollout.wave)


def _check_budget(rollout: Rollout) -> bool:
    counted = [Outcome.FAILED, Outcome.CONFLICTED] if rollout.fail_on_conflict else [Outcome.FAILED]
    failures = rollout.projects.filter(outcome__in=counted, finished_at__gte=rollout.budget_from).select_related(
        "project"
    )
    failures = list(failures.order_by("finished_at")[: rollout.max_failures])
    if len(failures) < rollout.max_failures:
        return False
    causes = "; ".join(f"{entry.project.ref}: {entry.message}" for entry in failures)
    _halt(rollout, f"{len(failures)} project(s) failed (budget {rollout.max_failures}): {causes}")
    return True


def wave_deadline(rollout: Rollout) -> timedelta:
    """How long one wave may take: its operations, `concurrency` at a time, each within its
    queue and running deadlines. A backstop; each operation's own deadline acts first."""
    size = rollout.projects.filter(wave=rollout.wave).count()
    rounds = max(1, math.ceil(size / rollout.concurrency))
    return timedelta(seconds=rounds * (settings.BERTH_QUEUE_DEADLINE + settings.BERTH_OPERATION_DEADLINE))


def _check_deadline(rollout: Rollout) -> bool:
    if timezone.now() < rollout.wave_started_at + wave_deadline(rollout):
        return False
    if not _wave(rollout).exclude(outcome__in=SETTLED_OUTCOMES).exists():
        return False
    _halt(rollout, f"wave {rollout.wave} did not settle within {wave_deadline(rollout)}")
    return True


def _start_next(rollout: Rollout) -> bool:
    wave = _wave(rollout)
    if wave.filter(outcome=Outcome.RUNNING).count() >= rollout.concurrency:
        return False
    for entry in wave.filter(outcome=Outcome.PENDING).select_related("project", "target_version").order_by("position"):
        project = Project.objects.select_related("template_version", "host").get(pk=entry.project_id)
        now = timezone.now()
        if project.host_id is None:
            # Never provisioned: nothing on a host; its provisioning will render the target.
            try:
                label = f"rollout {rollout.pk}"
                result = resync_project(project, entry.target_version, AgentRuntimeFiles(), label=label)
            except Exception as error:  # recorded as this project's failure, never a crashed driver
                _finish(entry, Outcome.FAILED, str(error), now)
            else:
                _finish(entry, Outcome.UPDATED, result.message, now)
            return True
        running = project.desired_state == DesiredState.RUNNING and project.status in RUNNING_STATUSES
        if not rollout.restart or not running:
            restart = "never"
        else:
            restart = "always" if entry.retry else "changed"
        params = {"template_version": entry.target_version_id, "restart": restart}
        try:
            with transaction.atomic():
                operation = request_operation(project, Kind.RESYNC, label=f"rollout {rollout.pk}", params=params)
        except OperationInProgress:
            continue  # busy with another operation: tried again on a later step, until the wave deadline
        except OperationRefused as refusal:
            _finish(entry, Outcome.FAILED, str(refusal), now)
            return True
        RolloutProject.objects.filter(pk=entry.pk).update(
            outcome=Outcome.RUNNING, operation=operation, started_at=now, message=f"re-sync queued ({restart} restart)"
        )
        return True
    return False


def _finish(entry: RolloutProject, outcome: str, message: str, now) -> None:
    RolloutProject.objects.filter(pk=entry.pk).update(outcome=outcome, message=message, started_at=now, finished_at=now)


def _pass_gate(rollout: Rollout) -> bool:
    wave = _wave(rollout)
    if wave.exclude(outcome__in=SETTLED_OUTCOMES).exists():
        return False
    restarted = wave.filter(restarted=True, outcome__in=DONE_OUTCOMES)
    sick = list(restarted.exclude(project__status=Status.ACTIVE_HEALTHY).values_list("project__ref", flat=True))
    if sick:
        _halt(rollout, f"wave {rollout.wave}: not healthy after restart: {', '.join(sick)}")
        return True
    now = timezone.now()
    if not rollout.projects.filter(wave__gt=rollout.wave).exists():
        Rollout.objects.filter(pk=rollout.pk).update(state=Rollout.State.FINISHED, finished_at=now)
        record(None, Action.ROLLOUT_FINISHED, detail={"rollout": rollout.pk}, label=f"rollout {rollout.pk}")
        return True
    next_wave = rollout.projects.filter(wave__gt=rollout.wave).order_by("wave").values_list("wave", flat=True)[0]
    Rollout.objects.filter(pk=rollout.pk).update(wave=next_wave, wave_started_at=now)
    return True


def _halt(rollout: Rollout, reason: str) -> None:
    Rollout.objects.filter(pk=rollout.pk).update(state=Rollout.State.HALTED, reason=reason)
    record(None, Action.ROLLOUT_HALTED, detail={"rollout": rollout.pk, "reason": reason}, label=f"rollout {rollout.pk}")
    log.warning("rollout %s halted: %s", rollout.pk, reason)


def on_operation_finished(operation: Operation) -> None:
    """Drive the rollout an operation belonged to, now that it has ended."""
    for rollout_id in set(RolloutProject.objects.filter(operation=operation).values_list("rollout_id", flat=True)):
        drive(rollout_id)


# --- reading -----------------------------------------------------------------------------


def summary(rollout: Rollout) -> dict:
    """Counts by outcome and by wave, for progress bars and pages."""
    by_outcome = dict.fromkeys(Outcome.values, 0)
    waves: dict[int, dict[str, int]] = {}
    for wave, outcome in rollout.projects.values_list("wave", "outcome"):
        by_outcome[outcome] += 1
        waves.setdefault(wave, dict.fromkeys(Outcome.values, 0))[outcome] += 1
    total = sum(by_outcome.values())
    settled = sum(by_outcome[o] for o in SETTLED_OUTCOMES)
    return {"total": total, "settled": settled, "outcomes": by_outcome, "waves": waves}


def as_json(rollout: Rollout) -> dict:
    """The machine-readable record of a rollout: its settings, state and every project's outcome."""
    entries = rollout.projects.select_related("project", "from_version", "target_version", "operation")
    return {
        "rollout": rollout.pk,
        "template": rollout.template,
        "target_revision": rollout.target.revision,
        "rollback_of": rollout.rollback_of_id,
        "state": rollout.state,
        "reason": rollout.reason,
        "settings": {
            "canary": rollout.canary,
            "wave_size": rollout.wave_size,
            "max_failures": rollout.max_failures,
            "concurrency": rollout.concurrency,
            "restart": rollout.restart,
            "fail_on_conflict": rollout.fail_on_conflict,
        },
        "summary": summary(rollout)["outcomes"],
        "projects": [
            {
                "ref": entry.project.ref,
                "wave": entry.wave,
                "from_revision": entry.from_version.revision,
                "to_revision": entry.target_version.revision,
                "outcome": entry.outcome,
                "restarted": entry.restarted,
                "message": entry.message,
                "conflicts": entry.conflicts,
                "operation": entry.operation_id,
                "started_at": entry.started_at.isoformat() if entry.started_at else None,
                "finished_at": entry.finished_at.isoformat() if entry.finished_at else None,
            }
            for entry in entries
        ],
    }
