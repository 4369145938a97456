"""Backups of projects: requesting them, restores to a point in time, clones and restore
tests, and recording what the agent did (backups.models holds the records).

Every project is protected by default: provisioning (and a clone) sets its runtime to
archive its WAL into its host's repository, and the backup pass (`queue_due_backups`, every
5 minutes) takes its first base backup, as it takes one for each project whose last is
older than BERTH_BACKUP_SCHEDULE (and after a restore, whose timeline is new); projects
made before call `protect_project` (`manage.py backups protect`).

Invariants:
- A restore, clone or verification is an operation like the others (single-flight per
  project, deadline, timeline, cancel, audit); requests are refused through
  `operations.actions` before anything is queued, a point outside the restorable window
  with the window in the message.
- A restore in place keeps the current data aside until the restored server is healthy
  and then commits; anything that ends it before (a failure, a cancel, the reaper) makes
  the agent put the old data back (operations.cleanup), so a project holds its old data or
  the fully restored, never half.
- Backups and restore tests work beside the serving runtime and never move its status; a
  failed one is recorded on its protection (`failure`) for the project page, the fleet
  view and the alert rule.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from agent import api
from agent.client import AgentError
from audit.actions import record
from audit.models import Action
from backups.models import SETUP_FAILED, Backup, BackupStatus, BackupTrigger, Protection, Repository
from hosts import agents
from operations.actions import OperationRefused, request_operation
from operations.creation import create_project
from operations.fanout import for_each_host
from operations.models import Kind, Operation
from projects.models import DesiredState, Project, Status


class RestoreRefused(OperationRefused):
    code = "restore_refused"


class BadRestoreTarget(RestoreRefused):
    """A restore target that is not a point in time (nor "latest")."""

    code = "bad_target"


@dataclass(frozen=True)
class RestoreTarget:
    """A point in time to restore to, or None for the latest archived point."""

    at: datetime | None

    @property
    def unix(self) -> int | None:
        return None if self.at is None else int(self.at.timestamp())

    def describe(self) -> str:
        return "the latest archived point" if self.at is None else f"{self.at:%Y-%m-%d %H:%M:%S} UTC"

    @classmethod
    def parse(cls, value) -> "RestoreTarget":
        """`latest`, or seconds since the epoch (as `supabase backups restore --timestamp` sends)."""
        text = str(value).strip()
        if text.lower() == "latest":
            return cls(None)
        try:
            seconds = int(text)
        except ValueError:
            raise BadRestoreTarget(
                f"{value!r} is not a point in time: give seconds since 1970-01-01 UTC (e.g. 1765000000) or 'latest'"
            ) from None
        if seconds <= 0:
            raise BadRestoreTarget(f"{seconds} is not a point in time: seconds since 1970-01-01 UTC are positive")
        try:
            return cls(datetime.fromtimestamp(seconds, tz=UTC))
        except (OverflowError, OSError, ValueError):
            raise BadRestoreTarget(f"{seconds} is too far in the future to be a point in time") from None


def agent_repository(repository: Repository) -> api.Repository:
    """The repository as the agent takes it, credentials included: for agent calls only."""
    location = repository.location()
    return api.Repository(
        url=repository.url,
        endpoint=location.endpoint or None,
        region=location.region or None,
        access_key_id=location.access_key,
        secret_access_key=location.secret_key,
    )


def repository_for(project: Project) -> Repository:
    return Repository.objects.for_host(project.host)


def ensure_protection(project: Project) -> Protection:
    """The project's protection row (enabled, in its host's repository), made if missing."""
    protection, _ = Protection.objects.get_or_create(project=project, defaults={"repository": repository_for(project)})
    return protection


def protection_of(project: Project) -> Protection | None:
    return Protection.objects.filter(project=project).select_related("repository").first()


def protect_project(project: Project, *, actor=None, label: str | None = None) -> Operation:
    """Protect a project made before backups existed, or whose set-up failed: its runtime is
    set to archive into its repository and restarted, and the first base backup follows."""
    with transaction.atomic():
        protection = ensure_protection(project)
        if not protection.enabled:
            Protection.objects.filter(pk=protection.pk).update(enabled=True)
        return request_operation(project, Kind.PROTECT, actor=actor, label=label)


def _protected(project: Project, doing: str) -> Protection:
    protection = protection_of(project)
    if protection is None or not protection.enabled:
        raise OperationRefused(
            f"{project.ref} is not protected, so it has nothing to {doing}; "
            f"protect it first (`manage.py backups protect {project.ref}`)",
            code="not_protected",
        )
    if protection.configured_at is None:
        raise OperationRefused(
            f"{project.ref}: its runtime has not been set to archive yet (its provisioning or backup "
            "set-up has not finished); wait for it or run `manage.py backups protect` again",
            code="not_protected",
        )
    return protection


def _running(project: Project, done: str) -> None:
    if project.desired_state == DesiredState.STOPPED:
        raise OperationRefused(
            f"{project.ref} is stopped and cannot be {done} in place: start it first", code="stopped"
        )


def request_backup(
    project: Project, *, trigger: str = BackupTrigger.MANUAL, actor=None, label: str | None = None
) -> Operation:
    """Queue a base backup now (then pruning past BERTH_BACKUP_RETENTION_DAYS); a base backup
    reads the running server, so a project meant to be stopped is refused."""
    _protected(project, "back up")
    _running(project, "backed up")
    return request_operation(project, Kind.BACKUP, actor=actor, label=label, params={"trigger": trigger})


def check_in_window(project: Project, protection: Protection, target: RestoreTarget) -> None:
    """Refuse a point the repository cannot restore to, naming the window."""
    window = protection.window
    if window is None:
        raise RestoreRefused(
            f"{project.ref} has no restorable point yet: {protection.window_text()}", code="outside_window"
        )
    earliest, latest = window
    if target.at is not None and not earliest <= target.at <= latest:
        side = "before the earliest" if target.at < earliest else "after the latest"
        raise RestoreRefused(
            f"{project.ref} cannot be restored to {target.describe()}: it is {side} restorable point; "
            f"the restorable window is {protection.window_text()}",
            code="outside_window",
        )


def request_restore(
    project: Project, target: RestoreTarget, *, actor=None, label: str | None = None, host=None
) -> Operation:
    """Queue a restore of the project, in place (same ref, same connection string), to `target`.

    With `host` other than its own (its host was lost): the project moves there and is
    restored from the repository. Raises RestoreRefused (outside the window: the window is
    in the message) or OperationRefused (another operation runs, ...); nothing is queued then."""
    protection = _protected(project, "restore")
    check_in_window(project, protection, target)
    if host is None or host.pk == project.host_id:
        _running(project, "restored")
    params = {"target_unix": target.unix, "target": target.describe()}
    if host is not None and host.pk != project.host_id:
        params["host"] = host.pk
    return request_operation(project, Kind.RESTORE, actor=actor, label=label, params=params)


def request_verify(project: Project, *, actor=None, label: str | None = None) -> Operation:
    """Queue a restore test: the latest point restored into a scratch cluster and checked."""
    protection = _protected(project, "verify")
    if protection.window is None:
        raise RestoreRefused(f"{project.ref} has no restorable point to test yet", code="outside_window")
    return request_operation(project, Kind.VERIFY, actor=actor, label=label)


def clone_params(source: Project, target: RestoreTarget) -> dict:
    """The first operation's params of a project cloned from `source` (checked now)."""
    protection = _protected(source, "clone")
    check_in_window(source, protection, target)
    return {
        "source": source.pk,
        "source_ref": source.ref,
        "repository": protection.repository_id,
        "target_unix": target.unix,
        "target": target.describe(),
    }


def clone_project(
    source: Project,
    target: RestoreTarget,
    *,
    name: str,
    host=None,
    actor=None,
    label: str | None = None,
) -> Project:
    """A new project (same template, major and organization) from `source`'s backups as of
    `target`, on `host` or wherever placement puts it; its clone operation is queued with it.
    Raises RestoreRefused (outside the window, not protected) or ValidationError (the name,
    the host), and nothing is made then."""
    params = clone_params(source, target)
    return create_project(
        name=name,
        postgres_major=source.postgres_major,
        template=source.template,
        host=host,
        organization=source.organization,
        region=source.region,
        actor=actor,
        label=label,
        clone=params,
    )


# --- records, written by the operation runner ---------------------------------------------


def record_configured(project: Project, repository: Repository, *, operation: Operation) -> None:
    """The runtime archives into `repository` now; a failed set-up is no longer its failure."""
    with transaction.atomic():
        protection = Protection.objects.select_for_update().get(project=project)
        protection.repository, protection.configured_at = repository, timezone.now()
        if protection.backup_error.startswith(SETUP_FAILED):
            protection.backup_error = ""
        protection.judge()
        protection.save()
        detail = {"operation": operation.pk, "repository": repository.name}
        record(None, Action.PROJECT_PROTECTED, project=project, detail=detail, label=f"operation {operation.pk}")


def record_setup_failed(project: Project, error: str) -> None:
    """Provisioning or a clone could not turn archiving on: the project serves unprotected,
    and its protection says why (`manage.py backups protect` tries again)."""
    with transaction.atomic():
        protection = Protection.objects.select_for_update().filter(project=project).first()
        if protection is None:
            return
        protection.backup_error = f"{SETUP_FAILED}: {error}"
        protection.judge()
        protection.save()


def begin_backup(project: Project, *, operation: Operation, trigger: str) -> Backup:
    protection = protection_of(project)
    return Backup.objects.create(
        project=project, repository=protection.repository, operation_id=operation.pk, trigger=trigger
    )


def record_backup_done(
    backup: Backup, *, label: str, size_bytes: int | None, started_at, finished_at, consistent_at
) -> None:
    """A completed base backup: the project's last backup, and a failed backup no longer its failure."""
    with transaction.atomic():
        Backup.objects.filter(pk=backup.pk).update(
            status=BackupStatus.COMPLETED,
            label=label,
            size_bytes=size_bytes,
            started_at=started_at or backup.started_at,
            finished_at=finished_at or timezone.now(),
            consistent_at=consistent_at or finished_at,
        )
        protection = Protection.objects.select_for_update().get(project_id=backup.project_id)
        protection.last_backup_at = finished_at or timezone.now()
        if protection.earliest_restorable_at is None:
            protection.earliest_restorable_at = consistent_at or protection.last_backup_at
        if protection.latest_restorable_at is None or protection.latest_restorable_at < protection.last_backup_at:
            protection.latest_restorable_at = protection.last_backup_at
        protection.backup_error = ""
        protection.judge()
        protection.save()


def record_backup_failed(backup: Backup, error: str) -> None:
    """A failed base backup (repository unreachable or full, ...): the project keeps serving
    and its protection says why until a backup succeeds."""
    with transaction.atomic():
        Backup.objects.filter(pk=backup.pk, status=BackupStatus.RUNNING).update(
            status=BackupStatus.FAILED, finished_at=timezone.now(), error=error
        )
        protection = Protection.objects.select_for_update().get(project_id=backup.project_id)
        protection.backup_error = error
        protection.judge()
        protection.save()


def fail_running_backups(operation: Operation, error: str) -> int:
    """Backups an operation ended from outside (cut off) left running: failed, with why."""
    backups = list(Backup.objects.filter(operation_id=operation.pk, status=BackupStatus.RUNNING))
    for backup in backups:
        record_backup_failed(backup, error)
    return len(backups)


def record_catalog(project: Project, catalog: api.BackupCatalog, *, pruned: list[str] = ()) -> None:
    """What the repository holds for the project: base backups it pruned are expired, and the
    restorable window is the catalog's."""
    with transaction.atomic():
        if pruned:
            Backup.objects.filter(project=project, label__in=list(pruned), status=BackupStatus.COMPLETED).update(
                status=BackupStatus.EXPIRED
            )
        protection = Protection.objects.select_for_update().get(project=project)
        protection.earliest_restorable_at = moment(catalog.earliest_unix)
        protection.latest_restorable_at = moment(catalog.latest_unix)
        protection.checked_at = timezone.now()
        protection.save()


def moment(unix: float | None) -> datetime | None:
    return None if unix is None else datetime.fromtimestamp(unix, tz=UTC)


def record_archiver(project: Project, found: api.ArchiverStatus) -> None:
    """WAL archiving as PostgreSQL reports it (pg_stat_archiver and its log's reason); the
    latest restorable point follows the last archived segment."""
    if not found.running:
        return  # a stopped server archives nothing and reports nothing new
    with transaction.atomic():
        protection = Protection.objects.select_for_update().filter(project=project).first()
        if protection is None:
            return
        protection.archived_count = found.archived_count or 0
        protection.last_archived_wal = found.last_archived_wal or ""
        protection.last_archived_at = moment(found.last_archived_unix)
        protection.failed_count = found.failed_count or 0
        protection.last_failed_wal = found.last_failed_wal or ""
        protection.last_failed_at = moment(found.last_failed_unix)
        protection.archive_error = found.last_failure or ""
        archived = protection.last_archived_at
        if protection.window is not None and archived is not None and archived > protection.latest_restorable_at:
            protection.latest_restorable_at = archived
        protection.checked_at = timezone.now()
        protection.judge()
        protection.save()


def record_verified(project: Project, *, ok: bool, message: str) -> None:
    with transaction.atomic():
        protection = Protection.objects.select_for_update().get(project=project)
        protection.last_verified_at = timezone.now()
        protection.last_verify_ok = ok
        protection.last_verify_message = message
        protection.judge()
        protection.save()


def record_restored(project: Project, target: str, *, operation: Operation, host=None) -> None:
    """The project serves the restored data (committed: the old data is gone)."""
    with transaction.atomic():
        if host is not None:
            Project.objects.filter(pk=project.pk).update(host=host, updated_at=timezone.now())
            project.host = host
        # A new timeline begins: the backup pass takes its base backup next.
        Protection.objects.filter(project=project).update(last_backup_at=None)
        detail = {"operation": operation.pk, "target": target}
        if host is not None:
            detail["host"] = host.name
        record(None, Action.PROJECT_RESTORED, project=project, detail=detail, label=f"operation {operation.pk}")


# --- schedules ----------------------------------------------------------------------------


def queue_due_backups(now=None) -> int:
    """A base backup for each protected, running project whose last is older than
    BERTH_BACKUP_SCHEDULE; a project busy with another operation waits for the next pass."""
    queued = 0
    for protection in Protection.objects.live().filter(project__desired_state=DesiredState.RUNNING):
        if not protection.backup_due(now):
            continue
        try:
            request_backup(protection.project, trigger=BackupTrigger.SCHEDULE, label="schedule")
        except OperationRefused:
            continue
        queued += 1
    return queued


# How long a project whose WAL archiving could not be turned on waits before the backup pass
# tries again (a repository mounted late, an agent that was down at its provisioning).
PROTECT_RETRY_MINUTES = 60


def queue_due_protects(now=None) -> int:
    """Protection is on by default: a running project whose archiving was never turned on (its
    set-up failed) gets a `protect` again when nothing tried in PROTECT_RETRY_MINUTES; a
    project busy with another operation waits for the next pass."""
    since = (now or timezone.now()) - timedelta(minutes=PROTECT_RETRY_MINUTES)
    tried = Operation.objects.filter(
        project=OuterRef("project"), kind__in=(Kind.PROTECT, Kind.PROVISION, Kind.CLONE), created_at__gte=since
    )
    unset = (
        Protection.objects.live(configured=False)
        .filter(
            project__desired_state=DesiredState.RUNNING,
            # Turning archiving on restarts the server: done unasked only to a healthy one.
            project__status=Status.ACTIVE_HEALTHY,
            project__host__isnull=False,
        )
        .exclude(Exists(tried))
    )
    queued = 0
    for protection in unset:
        try:
            request_operation(protection.project, Kind.PROTECT, label="schedule")
        except OperationRefused:
            continue
        queued += 1
    return queued


def queue_due_verifications(now=None) -> int:
    """A restore test for each protected project not verified for BERTH_BACKUP_VERIFY_DAYS."""
    queued = 0
    for protection in Protection.objects.live():
        if protection.window is None or not protection.verify_due(now):
            continue
        try:
            request_verify(protection.project, label="schedule")
        except OperationRefused:
            continue
        queued += 1
    return queued


def read_all_archivers() -> int:
    """Read each protected runtime's WAL archiving from its agent (one call per project, each
    host's projects in its own thread); returns how many were read. An agent that does not
    answer leaves what was last read (the host's own alert says it is unreachable)."""
    protected = Protection.objects.live().filter(
        project__host__isnull=False, project__desired_state=DesiredState.RUNNING
    )
    by_host: dict[int, list[Project]] = {}
    for found in protected.select_related("project__host"):
        by_host.setdefault(found.project.host_id, []).append(found.project)

    def read(projects: list[Project]) -> int:
        client = agents.client_for(projects[0].host, deadline=settings.BERTH_AGENT_CALL_DEADLINE)
        done = 0
        for project in projects:
            try:
                record_archiver(project, client.backup_archiver(project.ref))
            except AgentError:
                continue
            done += 1
        return done

    return for_each_host(by_host, read)


def prune_removed(now=None) -> int:
    """A removed project's base backups expire as a live one's do (past
    BERTH_BACKUP_RETENTION_DAYS, and it takes no new ones); once none is left its WAL goes too
    and its protection ends, so the repository never keeps a removed project's data for ever,
    nor drops it sooner than the retention promised. One call per project, through the host it
    was on; a host that does not answer leaves its projects for the next pass."""
    keep_since = (now or timezone.now()).timestamp() - settings.BERTH_BACKUP_RETENTION_DAYS * 86400
    ended = Protection.objects.filter(
        configured_at__isnull=False, project__status=Status.REMOVED, project__host__isnull=False
    ).select_related("project__host", "repository")
    by_host: dict[int, list[Protection]] = {}
    for found in ended:
        by_host.setdefault(found.project.host_id, []).append(found)

    def prune(protections: list[Protection]) -> int:
        client = agents.client_for(protections[0].project.host, deadline=settings.BERTH_AGENT_CALL_DEADLINE)
        done = 0
        for found in protections:
            try:
                pruned = client.backup_prune(
                    agent_repository(found.repository), found.project.ref, keep_since, min_backups=0
                )
            except AgentError:
                continue
            record_removed_pruned(found, pruned)
            done += 1
        return done

    return for_each_host(by_host, prune)


def record_removed_pruned(found: Protection, pruned: api.PruneReply) -> None:
    with transaction.atomic():
        if pruned.removed_backups:
            Backup.objects.filter(
                project=found.project, label__in=pruned.removed_backups, status=BackupStatus.COMPLETED
            ).update(status=BackupStatus.EXPIRED)
        if not pruned.kept_backups:
            Protection.objects.filter(pk=found.pk).update(
                enabled=False, configured_at=None, earliest_restorable_at=None, latest_restorable_at=None
            )
