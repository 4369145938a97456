"""Resolving a project's re-sync conflicts, and the three-way view of them.

A conflict is a managed file edited on the host that the template changed too; re-sync
never overwrites it (templating.resync). Staff resolve it one of two ways, each applied
with the rest of the plan in one push and recorded on the target revision:

- take-template: the new rendering is written; the host's version is first copied beside
  it as `<path>.backup-<UTC stamp>` by the agent, in the same locked request.
- keep-local: the host's file stays; the project is recorded on the target with the new
  rendering as the base, so the file shows as locally modified and the next template
  change to it is a conflict again.

Both run inside a `resync` operation (params `resolve`), so they are single-flight per
project and restart the runtime like any re-sync. Secrets are masked in every diff.
"""

from dataclasses import dataclass

from django.utils import timezone

from audit.actions import record
from audit.models import Action
from operations.resync import ResyncRefused, record_version
from operations.runtime_files import AgentRuntimeFiles, RuntimeFiles
from projects.actions import record_drift
from projects.models import Project
from templating.models import TemplateVersion
from templating.render import render_project
from templating.resync import paths_to_check, plan_project_resync, unified_diff
from templating.secrets import redact
from templating.versions import check_postgres_major

TAKE_TEMPLATE, KEEP_LOCAL = "take-template", "keep-local"
RESOLUTIONS = (TAKE_TEMPLATE, KEEP_LOCAL)


@dataclass(frozen=True)
class Resolution:
    message: str
    changed: bool  # files were written or removed on the host
    backups: list[str]


def resolve_project(
    project: Project, target: TemplateVersion, how: str, files: RuntimeFiles, *, label: str
) -> Resolution:
    """Apply the re-sync plan to `target` with its conflicts resolved `how`; record the revision.

    Raises ResyncRefused when there is nothing to resolve, FilesMismatch when the agent wrote
    other content.
    """
    if how not in RESOLUTIONS:
        raise ResyncRefused(f"unknown resolution {how!r}; use one of {', '.join(RESOLUTIONS)}")
    current = project.template_version
    if current.pk == target.pk:
        raise ResyncRefused(f"{project.ref} is already on {target}: nothing to resolve")
    if project.host_id is None:
        raise ResyncRefused(f"{project.ref} has never been provisioned: nothing on a host to resolve")
    check_postgres_major(target, project.postgres_major, host=project.host)
    host = files.digests(project, paths_to_check(project, target))
    plan, rendered = plan_project_resync(project, target, host)
    conflicts = [action.path for action in plan.conflicts]
    pushes, backup = list(plan.pushes), []
    if how == TAKE_TEMPLATE:
        pushes += conflicts
        backup = [path for path in conflicts if host.get(path) is not None]
    suffix = "backup-" + timezone.now().strftime("%Y%m%dT%H%M%SZ") if backup else None
    if pushes or plan.removals:
        pushed = files.push(project, rendered, pushes, plan.removals, backup=backup, backup_suffix=suffix)
        host = {**host, **pushed, **dict.fromkeys(plan.removals)}
    record_version(project, current, target, plan.new_digests, plan=plan, actor=None, label=label)
    # keep-local's files differ from the new base, so they are recorded as locally modified.
    record_drift(project, host, label=label)
    backups = [f"{path}.{suffix}" for path in backup]
    record(
        None,
        Action.PROJECT_RESOLVE_CONFLICTS,
        project=project,
        detail={"how": how, "to": target.revision, "conflicts": conflicts, "backups": backups},
        label=label,
    )
    kept = "kept the host's version of" if how == KEEP_LOCAL else "took the template's"
    message = f"{kept} {', '.join(conflicts) or 'no conflicting file'}; {len(pushes)} written"
    if backups:
        message += f"; backup {', '.join(backups)}"
    return Resolution(message, bool(pushes or plan.removals), backups)


@dataclass(frozen=True)
class ThreeWayFile:
    path: str
    reason: str
    pushed: str | None  # what Berth last pushed (the current revision's rendering)
    host: str | None  # what the host holds now
    template: str | None  # what the target revision renders
    host_diff: str  # pushed -> host: the local edit
    template_diff: str  # pushed -> template: the template's change


def three_way(project: Project, target: TemplateVersion, *, deadline: float) -> list[ThreeWayFile]:
    """Every conflicting file of moving `project` to `target`, in three versions, secrets masked.

    One digests call and one contents call to the project's agent, each within `deadline`.
    """
    files = AgentRuntimeFiles(deadline=deadline)
    host_digests = files.digests(project, paths_to_check(project, target))
    plan, new = plan_project_resync(project, target, host_digests)
    conflicts = plan.conflicts
    if not conflicts:
        return []
    old = render_project(project, project.template_version)
    host_files = files.contents(project, [action.path for action in conflicts])
    secrets = project.secrets
    old_label, new_label = str(project.template_version), str(target)

    def text(content: bytes | None) -> str | None:
        if content is None:
            return None
        return redact(content.decode("utf-8", errors="replace"), secrets)

    views = []
    for action in conflicts:
        path = action.path
        pushed, on_host, rendered = old.files.get(path), host_files.get(path), new.files.get(path)
        views.append(
            ThreeWayFile(
                path=path,
                reason=action.reason,
                pushed=text(pushed),
                host=text(on_host),
                template=text(rendered),
                host_diff=redact(unified_diff(path, pushed or b"", on_host or b"", old_label, "host now"), secrets),
                template_diff=redact(unified_diff(path, pushed or b"", rendered or b"", old_label, new_label), secrets),
            )
        )
    return views
