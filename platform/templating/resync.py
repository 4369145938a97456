"""Three-way re-sync plan for one project's runtime files. Pure: no database, no agent.

For every managed file, three digests meet: the base (what the project's current
version rendered and was pushed, as recorded), the host (what the agent reports now)
and the new rendering.

| host vs base | new vs base | action                                               |
|--------------|-------------|------------------------------------------------------|
| same         | same        | unchanged                                            |
| same         | changed     | write (replace)                                      |
| changed      | same        | keep (the local edit stays)                          |
| changed      | changed     | conflict, unless the host already holds the new file |

A file with no base (new in the template, or never pushed) is added when absent on the
host, unchanged when the host already has exactly it, and a conflict otherwise. Seed
files are written only when new to the template and absent on the host; user paths
are never read, written or removed. A managed file the new version drops is removed
only when the host still holds what Berth wrote; an edited one is kept.

Any conflict makes the whole plan unappliable: a runtime is never left half on one
version and half on another.
"""

import dataclasses
import difflib
import fnmatch
from dataclasses import dataclass, field

from templating.manifest import manifest_of
from templating.render import RenderedRuntime, render_project
from templating.secrets import redact

UNCHANGED = "unchanged"
WRITE = "write"
ADD = "add"
KEEP = "keep"
CONFLICT = "conflict"
REMOVE = "remove"
KEEP_DROPPED_EDITED = "keep-dropped-edited"
SKIP_SEED = "skip-seed"
SKIP_USER = "skip-user"

# Actions that send a file to the host.
PUSHING = (WRITE, ADD)


@dataclass(frozen=True)
class FileAction:
    path: str
    action: str
    reason: str
    # What the template changed that could not be applied (conflicts whose base is known).
    diff: str | None = None


@dataclass
class Plan:
    actions: list[FileAction] = field(default_factory=list)
    # Managed digests to record once the plan is applied: the new rendering, the next base.
    new_digests: dict[str, str] = field(default_factory=dict)

    def _with(self, *actions) -> list[FileAction]:
        return [a for a in self.actions if a.action in actions]

    @property
    def conflicts(self) -> list[FileAction]:
        return self._with(CONFLICT)

    @property
    def pushes(self) -> list[str]:
        return [a.path for a in self._with(*PUSHING)]

    @property
    def removals(self) -> list[str]:
        return [a.path for a in self._with(REMOVE)]

    @property
    def changes_files(self) -> bool:
        return bool(self.pushes or self.removals)


def unified_diff(path: str, old: bytes, new: bytes, old_label: str, new_label: str) -> str:
    try:
        old_lines = old.decode("utf-8").splitlines(keepends=True)
        new_lines = new.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return f"Binary file {path} differs\n"
    return "".join(difflib.unified_diff(old_lines, new_lines, f"{path} ({old_label})", f"{path} ({new_label})"))


def plan_resync(
    old: RenderedRuntime | None,
    recorded: dict[str, str],
    host: dict[str, str | None],
    new: RenderedRuntime,
    *,
    old_label: str = "current",
    new_label: str = "target",
) -> Plan:
    """The per-file actions that take a host from `old` to `new`.

    `old` is the current version rendered now (for its policies and conflict diffs;
    None when it cannot be rendered), `recorded` the managed digests pushed with it
    (the base), `host` the agent's digests (None: absent) for every path involved.
    """
    plan = Plan()
    old_policies = old.policies if old else {}
    paths = sorted(set(new.files) | set(recorded) | set(old_policies))

    def add(path, action, reason, diff=None):
        plan.actions.append(FileAction(path, action, reason, diff))

    for path in paths:
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in new.user_paths):
            add(path, SKIP_USER, "user path: never touched")
            continue
        on_host = host.get(path)
        base = recorded.get(path) if old_policies.get(path, "managed") == "managed" else None
        policy = new.policies.get(path)

        if policy == "seed":
            if path not in old_policies and on_host is None:
                add(path, ADD, "new seed file")
            else:
                add(path, SKIP_SEED, "seed file: the user's once written")
            continue

        if policy is None:  # dropped by the new version (or recorded but never part of it)
            if old_policies.get(path) == "seed":
                add(path, SKIP_SEED, "seed file the template dropped: the user's")
            elif on_host is None:
                add(path, UNCHANGED, "dropped by the template, already absent")
            elif on_host == base:
                add(path, REMOVE, "dropped by the template, unchanged on the host")
            else:
                add(path, KEEP_DROPPED_EDITED, "dropped by the template, but edited on the host: kept")
            continue

        rendered = new.digests[path]
        plan.new_digests[path] = rendered
        if base is None:
            if on_host is None:
                add(path, ADD, "new in the template")
            elif on_host == rendered:
                add(path, UNCHANGED, "the host already holds the new file")
            else:
                add(path, CONFLICT, "the host holds a file Berth never wrote at this path")
        elif on_host == base:
            if rendered == base:
                add(path, UNCHANGED, "unchanged")
            else:
                add(path, WRITE, "changed in the template, unchanged on the host")
        elif rendered == base:
            add(path, KEEP, "edited on the host, unchanged in the template: kept")
        elif on_host == rendered:
            add(path, UNCHANGED, "the host already holds the new file")
        else:
            diff = None
            if old is not None and path in old.files:
                diff = unified_diff(path, old.files[path], new.files[path], old_label, new_label)
            where = "deleted" if on_host is None else "edited"
            add(path, CONFLICT, f"{where} on the host and changed in the template", diff)
    return plan


def _redacted(plan: Plan, project) -> Plan:
    """The plan with secret values in its diffs replaced by their names (.env files hold them)."""
    actions = [dataclasses.replace(a, diff=redact(a.diff, project.secrets)) if a.diff else a for a in plan.actions]
    return Plan(actions=actions, new_digests=plan.new_digests)


def plan_project_resync(project, target, host: dict[str, str | None]) -> tuple[Plan, RenderedRuntime]:
    """The three-way plan from the project's current version to `target` (a TemplateVersion),
    given the host's digests."""
    current = project.template_version
    old = render_project(project, current)
    new = render_project(project, target)
    plan = plan_resync(old, project.file_digests, host, new, old_label=str(current), new_label=str(target))
    return _redacted(plan, project), new


def paths_to_check(project, target) -> list[str]:
    """Every path whose host digest the merge needs: old and new rendered files and recorded ones."""
    new = manifest_of(target)
    old = manifest_of(project.template_version)
    paths = set(new.files) | set(old.files) | set(project.file_digests)
    return sorted(p for p in paths if not new.is_user_path(p))
