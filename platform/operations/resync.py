"""Taking projects to another template version: one project's re-sync (a three-way merge
planned by templating.resync, pushed through the runtime files gateway so tests can replace
the agent), and the dry-run plan of a rollout's preview. Moving many projects is a
rollout (operations.rollouts), one re-sync operation per project.
"""

import logging
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.actions import record
from audit.models import Action
from operations.models import Outcome
from operations.runtime_files import RuntimeFiles
from projects.actions import record_drift
from projects.models import Project
from templating.models import TemplateVersion
from templating.resync import Plan, paths_to_check, plan_project_resync
from templating.versions import check_postgres_major

log = logging.getLogger(__name__)


class ResyncRefused(Exception):
    """A project that cannot be re-synced now; the message says why (never a secret)."""

    code = "resync"


# --- re-sync of one project --------------------------------------------------------------


@dataclass
class ResyncResult:
    ref: str
    # Outcome.UPDATED, UNCHANGED or CONFLICTED (FAILED: a preview that could not plan).
    status: str
    from_revision: int
    to_revision: int
    message: str = ""
    plan: Plan | None = None


def resync_project(
    project: Project,
    target: TemplateVersion,
    files: RuntimeFiles,
    *,
    dry_run: bool = False,
    actor=None,
    label: str | None = None,
) -> ResyncResult:
    """Take one project's runtime files to `target`; on success record the version and digests.

    Returns updated (files written or removed), unchanged (nothing to write; the new
    version is still recorded), or conflicted (nothing changed). Raises ResyncRefused,
    UnsupportedPostgresVersion, RenderError or agent errors, which callers report as failed.
    A dry run computes the same plan from the host's real digests and changes nothing.
    """
    current = project.template_version
    result = ResyncResult(project.ref, Outcome.UNCHANGED, current.revision, target.revision)
    if target.name != project.template:
        raise ResyncRefused(f"{project.ref} runs template {project.template}, not {target.name}")
    if current.pk == target.pk:
        result.message = f"already on r{target.revision}"
        return result
    check_postgres_major(target, project.postgres_major, host=project.host)

    if project.host_id is None:
        # Never provisioned: nothing on any host yet; provisioning will render the target.
        result.status, result.message = Outcome.UPDATED, "not provisioned yet: version recorded, no files pushed"
        if not dry_run:
            record_version(project, current, target, {}, plan=None, actor=actor, label=label)
        return result

    host = files.digests(project, paths_to_check(project, target))
    plan, rendered = plan_project_resync(project, target, host)
    result.plan = plan
    if plan.conflicts:
        result.status = Outcome.CONFLICTED
        result.message = "conflict: " + ", ".join(a.path for a in plan.conflicts)
        if not dry_run:
            record_drift(project, host, actor=actor, label=label)
        return result
    result.status = Outcome.UPDATED if plan.changes_files else Outcome.UNCHANGED
    result.message = f"{len(plan.pushes)} written, {len(plan.removals)} removed"
    if dry_run:
        return result

    if plan.changes_files:
        pushed = files.push(project, rendered, plan.pushes, plan.removals)
        host = {**host, **pushed, **dict.fromkeys(plan.removals)}
    record_version(project, current, target, plan.new_digests, plan=plan, actor=actor, label=label)
    # Judged against the new base: kept local edits stay drifted, replaced files no longer are.
    record_drift(project, host, actor=actor, label=label)
    return result


def record_version(project, current, target, digests, *, plan: Plan | None, actor, label) -> None:
    """Record that the project's host holds `target`'s rendering (its managed files' `digests`),
    with an audit row; conditional on the version the plan was made from."""
    with transaction.atomic():
        # Conditional on the version we planned from: a concurrent re-sync makes this one fail, not overwrite.
        moved = Project.objects.filter(pk=project.pk, template_version=current).update(
            template_version=target, file_digests=digests, updated_at=timezone.now()
        )
        if not moved:
            raise ResyncRefused(f"{project.ref} changed version while re-syncing; run again")
        detail = {"from": current.revision, "to": target.revision, "template": target.name}
        if plan is not None:
            detail.update(written=plan.pushes, removed=plan.removals)
        record(actor, Action.PROJECT_RESYNC, project=project, detail=detail, label=label)
    project.template_version, project.file_digests = target, digests


def plan_migration(project: Project, target: TemplateVersion, files: RuntimeFiles, *, label: str) -> ResyncResult:
    """The dry-run plan of moving one project to `target`, for a rollout's preview.

    Every failure is returned as a failed result, so one project never stops the preview.
    """
    try:
        if project.operations.unfinished().exists():
            raise ResyncRefused(f"{project.ref} has an operation in progress; run again once it finishes")
        return resync_project(project, target, files, dry_run=True, label=label)
    except Exception as error:  # each project's failure is reported in its row, never stops the batch
        # The type only: messages are for the operator's table, and logs never risk holding file content.
        log.warning("re-sync plan of %s to %s failed: %s", project.ref, target, type(error).__name__)
        message = "; ".join(error.messages) if isinstance(error, ValidationError) else str(error)
        return ResyncResult(project.ref, Outcome.FAILED, project.template_version.revision, target.revision, message)
