"""Major upgrades of a project's Postgres: whether one can be done, requesting it, its status.

The agent builds the new cluster beside the serving one and switches the project's port
to it (agent.drivers.upgrade); this module judges eligibility from what the control plane
knows (the project's state, the template's majors, what its host runs) and what the agent
reads from the cluster, in the Supabase platform's shapes (`/v1/projects/{ref}/upgrade/...`).

Invariants:
- Eligibility changes nothing and asks the agent within the deadline it is given; an agent
  that does not answer makes the project ineligible with that reason, never eligible.
- Only a target the template supports on the project's host, newer than the project's
  major, is ever offered or accepted.
"""

from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agent import api
from agent.client import AgentError
from audit.actions import record
from audit.models import Action
from backups.models import Protection
from hosts import agents
from operations.actions import OperationRefused, request_operation
from operations.models import UNFINISHED_STATES, Kind, Operation, State
from projects.models import Project, Status
from templating.versions import supported_majors

# Berth's own "app version" of a project's Postgres, in the platform's field (Supabase names
# its images there, e.g. supabase-postgres-15.8.1.085).
APP_VERSION = "berth-postgres-{major}"
RELEASE_CHANNEL = "ga"
# The platform's DatabaseUpgradeStatus.status values.
UPGRADING, UPGRADED, FAILED = 0, 1, 2
# The operation's steps as the platform's `progress` ("N_name"), in the order they happen.
PROGRESS = {
    "queued": "0_requested",
    "claimed": "1_started",
    "backup": "2_backup_point",
    "check": "3_checked",
    "prepare": "4_prepared_new_cluster",
    "copy": "5_copying_data",
    "copied": "6_copied_data",
    "switch": "7_switched_over",
    "files": "8_recorded_new_major",
    "health": "9_completed_upgrade",
}
# For duration_estimate_hours: what a copy moves per second on a modest host (the bench's
# figures are well above it).
COPY_BYTES_PER_S = 20 << 20


@dataclass
class Eligibility:
    """The platform's ProjectUpgradeEligibilityResponse, with the method Berth would use per target."""

    current_major: int
    targets: list[int] = field(default_factory=list)  # eligible targets, newest last
    methods: dict[int, str] = field(default_factory=dict)  # target -> method the upgrade uses
    errors: list[dict] = field(default_factory=list)  # validation_errors
    warnings: list[dict] = field(default_factory=list)
    data_bytes: int = 0

    @property
    def eligible(self) -> bool:
        return bool(self.targets)

    def refusal(self, target: int) -> str | None:
        """Why `target` cannot be had now, or None when it can."""
        if target in self.targets:
            return None
        reasons = [error["message"] for error in self.errors if error.get("target_version") in (None, str(target))]
        if not reasons:
            offered = ", ".join(str(t) for t in self.targets) or "none"
            reasons = [f"PostgreSQL {target} is not offered for this project (eligible targets: {offered})"]
        return "; ".join(reasons)

    def as_platform(self) -> dict:
        latest = max([self.current_major, *self.targets])
        return {
            "eligible": self.eligible,
            "current_app_version": APP_VERSION.format(major=self.current_major),
            "current_app_version_release_channel": RELEASE_CHANNEL,
            "latest_app_version": APP_VERSION.format(major=latest),
            "target_upgrade_versions": [
                {
                    "postgres_version": str(target),
                    "release_channel": RELEASE_CHANNEL,
                    "app_version": APP_VERSION.format(major=target),
                    "method": self.methods[target],
                }
                for target in self.targets
            ],
            "duration_estimate_hours": round(self.data_bytes / COPY_BYTES_PER_S / 3600, 4),
            "legacy_auth_custom_roles": [],
            "objects_to_be_dropped": [],
            "unsupported_extensions": sorted(
                {e["extension_name"] for e in self.errors if e["type"] == "unsupported_extension"}
            ),
            "user_defined_objects_in_internal_schemas": [],
            "validation_errors": self.errors,
            "warnings": self.warnings,
        }


def candidate_targets(project: Project) -> list[int]:
    """Majors newer than the project's that its template supports on its host."""
    if project.host is None:
        return []
    return [m for m in supported_majors(project.template_version, project.host) if m > project.postgres_major]


def eligibility(project: Project, *, deadline: float) -> Eligibility:
    """What an upgrade of `project` can be, judged now; asks its agent once per candidate
    target, each call within `deadline` seconds."""
    found = Eligibility(current_major=project.postgres_major)

    def refuse(kind: str, message: str, target: int | None = None, **fields) -> Eligibility:
        error = {"type": kind, "message": message, **fields}
        if target is not None:
            error["target_version"] = str(target)
        found.errors.append(error)
        return found

    if project.host is None:
        return refuse("project_not_provisioned", "the project has no runtime yet")
    if project.status != Status.ACTIVE_HEALTHY:
        return refuse(
            "project_not_healthy", f"the project is {project.status}; an upgrade starts from a healthy project"
        )
    if project.operations.unfinished().exists():
        return refuse("operation_in_progress", "another operation of this project is queued or running")
    targets = candidate_targets(project)
    if not targets:
        runs = ", ".join(str(m) for m in project.host.postgres_versions) or "none"
        return refuse(
            "no_newer_version",
            f"no major newer than {project.postgres_major} is offered for template {project.template_version.name} "
            f"on host {project.host.name} (it runs {runs})",
        )
    client = agents.client_for(project.host, deadline=deadline)
    for target in targets:
        try:
            check = client.upgrade_check(project.ref, target)
        except AgentError as error:
            return refuse("agent_unreachable", f"the host's agent did not answer: {error}")
        found.data_bytes = check.data_bytes or found.data_bytes
        _record(found, target, check)
    return found


def _record(found: Eligibility, target: int, check: api.UpgradeCheck) -> None:
    for blocker in check.blockers:
        error = {"type": blocker.kind, "message": blocker.message, "target_version": str(target)}
        if blocker.kind == "unsupported_extension":
            error["extension_name"] = blocker.subject
        found.errors.append(error)
    if check.blockers or not check.methods:
        return
    found.targets.append(target)
    found.methods[target] = check.methods[0]
    for warning in check.warnings:
        found.warnings.append({"type": "downtime_grows_with_data", "message": warning, "target_version": str(target)})


class UpgradeRefused(Exception):
    """An upgrade request that cannot be carried out; the message names the reason. Nothing started."""

    code = "upgrade_refused"


def request_upgrade(project: Project, target_major: int, *, actor=None, label: str | None = None) -> Operation:
    """Queue an `upgrade` operation to `target_major` after judging eligibility now (one agent
    call per candidate within BERTH_AGENT_PAGE_DEADLINE). Raises UpgradeRefused naming the
    reason, or OperationRefused; nothing is queued then."""
    found = eligibility(project, deadline=settings.BERTH_AGENT_PAGE_DEADLINE)
    refusal = found.refusal(target_major)
    if refusal:
        raise UpgradeRefused(f"{project.ref} cannot be upgraded to PostgreSQL {target_major}: {refusal}")
    # The operation checks again when it runs and takes the method that applies then.
    return request_operation(project, Kind.UPGRADE, actor=actor, label=label, params={"target_major": target_major})


def upgrade_status(project: Project) -> dict:
    """The platform's DatabaseUpgradeStatusResponse for the project's latest upgrade."""
    operation = project.operations.filter(kind=Kind.UPGRADE).order_by("-created_at").first()
    if operation is None:
        return {"databaseUpgradeStatus": None}
    steps = list(operation.events.order_by("at", "pk").values_list("step", "at"))
    reached = [step for step, _ in steps if step in PROGRESS]
    status = {
        "initiated_at": operation.created_at.isoformat(),
        "latest_status_at": (steps[-1][1] if steps else operation.created_at).isoformat(),
        "target_version": operation.params.get("target_major"),
        "status": UPGRADING if operation.state in UNFINISHED_STATES else UPGRADED,
        "progress": PROGRESS[reached[-1]] if reached else PROGRESS["queued"],
    }
    if operation.state not in UNFINISHED_STATES and operation.state != State.SUCCEEDED:
        status.update(status=FAILED, error=operation.error_message or operation.state)
    return {"databaseUpgradeStatus": status}


def request_upgrade_rollback(project: Project, *, actor=None, label: str | None = None) -> Operation:
    """Queue the return to the old major kept by the last upgrade (its writes since are lost)."""
    if project.previous_postgres_major is None:
        raise UpgradeRefused(f"{project.ref} keeps no earlier major to roll back to")
    return request_operation(project, Kind.UPGRADE_ROLLBACK, actor=actor, label=label)


def request_upgrade_discard(project: Project, *, actor=None, label: str | None = None) -> Operation:
    """Queue the removal of the old cluster kept by the last upgrade."""
    if project.previous_postgres_major is None:
        raise UpgradeRefused(f"{project.ref} keeps no earlier cluster to discard")
    return request_operation(project, Kind.UPGRADE_DISCARD, actor=actor, label=label)


@transaction.atomic
def record_upgraded(project: Project, target: int, source: int, *, operation: Operation) -> None:
    """The project serves `target` now; its `source` cluster is kept for the keep period."""
    kept_until = timezone.now() + timedelta(days=settings.BERTH_UPGRADE_KEEP_DAYS)
    Project.objects.filter(pk=project.pk).update(
        postgres_major=target, previous_postgres_major=source, previous_kept_until=kept_until, updated_at=timezone.now()
    )
    project.postgres_major, project.previous_postgres_major, project.previous_kept_until = target, source, kept_until
    backup_the_new_cluster_next(project)
    detail = {"operation": operation.pk, "from": source, "to": target}
    record(None, Action.PROJECT_POSTGRES_UPGRADED, project=project, detail=detail, label=f"operation {operation.pk}")


def record_rolled_back(project: Project, major: int, *, operation: Operation) -> None:
    """The kept old cluster serves again; none is kept any more."""
    _record_major(project, major, operation, Action.PROJECT_POSTGRES_ROLLED_BACK)
    backup_the_new_cluster_next(project)


def backup_the_new_cluster_next(project: Project) -> None:
    """Another cluster serves the project now, archiving into a WAL folder of its own
    (agent.repository.wal_key): nothing restores it until its first base backup, which the
    backup pass takes next (within minutes), not a whole schedule later."""
    Protection.objects.filter(project=project).update(last_backup_at=None)


def record_discarded(project: Project, *, operation: Operation) -> None:
    """The kept old cluster is gone; the project keeps serving its major."""
    _record_major(project, project.postgres_major, operation, Action.PROJECT_POSTGRES_DISCARDED)


@transaction.atomic
def _record_major(project: Project, major: int, operation: Operation, action: str) -> None:
    Project.objects.filter(pk=project.pk).update(
        postgres_major=major, previous_postgres_major=None, previous_kept_until=None, updated_at=timezone.now()
    )
    project.postgres_major, project.previous_postgres_major, project.previous_kept_until = major, None, None
    detail = {"operation": operation.pk, "major": major}
    record(None, action, project=project, detail=detail, label=f"operation {operation.pk}")


def discard_expired() -> int:
    """Queue the discard of every old cluster kept past its keep period; returns how many.
    A project busy with another operation is left for the next pass."""
    queued = 0
    due = Project.objects.live().filter(previous_kept_until__lte=timezone.now()).exclude(previous_postgres_major=None)
    for project in due:
        try:
            request_operation(project, Kind.UPGRADE_DISCARD, label=f"kept {settings.BERTH_UPGRADE_KEEP_DAYS} days")
        except OperationRefused:
            continue
        queued += 1
    return queued
