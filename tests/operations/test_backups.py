"""The control plane's backups (operations.protection) against a scripted agent that answers
the backup calls as the real one does: protection from provisioning on, base backups that
never move the project's status, restores in place that leave old data or fully restored
data, clones, restore tests, refusals, and the reaper ending a restore whose worker died."""

import itertools
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.utils import timezone

from audit.models import Action, AuditEntry
from backups.models import Backup, BackupStatus, Protection
from operations import protection, reaper, tasks, upgrades
from operations.actions import OperationInProgress, OperationRefused, request_operation
from operations.cleanup import stop_what_it_started
from operations.creation import create_project
from operations.models import Kind, Operation, State
from operations.protection import BadRestoreTarget, RestoreRefused, RestoreTarget
from projects.models import DesiredState, Project, Status
from tests.factories import make_host
from tests.operations.backup_agent import WINDOW_START, BackupAgent

pytestmark = pytest.mark.django_db

_names = itertools.count(1)


@pytest.fixture
def agent(settings, tmp_path):
    settings.BERTH_HEALTH_POLL_INITIAL = 0.01
    settings.BERTH_HEALTH_POLL_MAX = 0.02
    script = BackupAgent()
    with mock.patch("hosts.agents.client_for", script), mock.patch("django_q.tasks.async_task"):
        yield script


@pytest.fixture
def host():
    from templating.actions import sync_templates

    sync_templates()
    return make_host(
        agent_url="http://agent.example:8470",
        capabilities={"driver": "process", "postgres_versions": [15]},
        port_range_start=30000,
        port_range_end=30099,
        block_size=4,
    )


def run(operation: Operation) -> Operation:
    assert tasks.run_operation(operation.pk) is True
    operation.refresh_from_db()
    return operation


def provisioned(host, **kwargs) -> Project:
    project = create_project(name=f"Backed {next(_names)}", postgres_major=15, template="postgres", **kwargs)
    assert run(project.operations.get()).state == State.SUCCEEDED
    return Project.objects.get(pk=project.pk)


def backed_up(host, agent) -> Project:
    project = provisioned(host)
    assert run(protection.request_backup(project)).state == State.SUCCEEDED
    return Project.objects.get(pk=project.pk)


def test_a_new_project_archives_its_wal_from_its_provisioning_on(agent, host, settings):
    project = provisioned(host)
    found = Protection.objects.get(project=project)
    assert found.enabled and found.configured_at is not None
    ((_, ref, url, timeout),) = agent.called("backup_archiving")
    assert (ref, url, timeout) == (project.ref, found.repository.url, settings.BERTH_WAL_ARCHIVE_TIMEOUT)
    assert AuditEntry.objects.filter(project=project, action=Action.PROJECT_PROTECTED).exists()


def test_a_provisioning_whose_archiving_fails_still_serves_and_says_why(agent, host):
    agent.backup_archiving = mock.Mock(side_effect=protection.AgentError("502 repository: no /backups folder"))
    project = provisioned(host)
    assert project.status == Status.ACTIVE_HEALTHY
    found = Protection.objects.get(project=project)
    assert found.configured_at is None
    assert "WAL archiving could not be turned on: 502 repository" in found.failure
    with pytest.raises(OperationRefused, match="has not been set to archive"):
        protection.request_backup(project)


def test_a_base_backup_is_recorded_with_its_window_and_leaves_the_status_alone(agent, host):
    project = provisioned(host)
    operation = run(protection.request_backup(project))
    assert operation.state == State.SUCCEEDED
    project.refresh_from_db()
    assert project.status == Status.ACTIVE_HEALTHY
    backup = Backup.objects.get(project=project)
    assert (backup.status, backup.label, backup.size_bytes) == (BackupStatus.COMPLETED, "20261206T080000Z", 4_200_000)
    assert backup.operation_id == operation.pk
    found = Protection.objects.get(project=project)
    assert found.earliest_restorable_at == datetime.fromtimestamp(WINDOW_START + 5, tz=UTC)
    assert found.last_backup_at is not None and found.failure == ""
    assert agent.called("backup_prune"), "pruning follows every base backup"


def test_a_backup_into_an_unreachable_repository_fails_with_why_and_the_project_stays_healthy(agent, host):
    project = provisioned(host)
    agent.repository_down = True
    operation = run(protection.request_backup(project))
    assert operation.state == State.FAILED
    assert "repository unreachable: connection refused" in operation.error_message
    project.refresh_from_db()
    assert project.status == Status.ACTIVE_HEALTHY
    assert Backup.objects.get(project=project).status == BackupStatus.FAILED
    found = Protection.objects.get(project=project)
    assert found.failure.startswith("the last base backup failed: ")
    assert Protection.objects.failing().filter(pk=found.pk).exists()
    agent.repository_down = False
    run(protection.request_backup(project))
    assert Protection.objects.get(project=project).failure == ""


def test_a_backup_on_a_host_whose_agent_never_answered_fails_and_moves_no_status(agent, host):
    project = provisioned(host)
    agent.unreachable = True
    operation = run(protection.request_backup(project))
    assert operation.state == State.FAILED
    assert operation.error_code == "agent_unreachable"
    project.refresh_from_db()
    assert project.status == Status.ACTIVE_HEALTHY


def test_it_restores_in_place_to_a_point_inside_the_window(agent, host):
    project = backed_up(host, agent)
    target = RestoreTarget.parse(int(WINDOW_START) + 60)
    operation = protection.request_restore(project, target)
    assert operation.params["target_unix"] == int(WINDOW_START) + 60
    operation = run(operation)
    assert operation.state == State.SUCCEEDED, operation.error_message
    project.refresh_from_db()
    assert project.status == Status.ACTIVE_HEALTHY
    assert project.status_changes.filter(new=Status.RESTORING, operation_id=operation.pk).exists()
    assert agent.called("restore_start")[-1] == ("restore_start", project.ref, None, int(WINDOW_START) + 60)
    assert AuditEntry.objects.filter(project=project, action=Action.PROJECT_RESTORED).exists()
    # A new timeline: the backup pass takes a base backup of it next.
    assert Protection.objects.get(project=project).last_backup_at is None


def test_a_failed_restore_leaves_the_project_as_it_was(agent, host):
    project = backed_up(host, agent)
    agent.restore = "failed"
    operation = run(protection.request_restore(project, RestoreTarget(None)))
    assert operation.state == State.FAILED
    assert "requested recovery stop point" in operation.error_message
    project.refresh_from_db()
    assert project.status == Status.ACTIVE_HEALTHY
    assert "keeps its data as before" in project.status_reason
    assert not AuditEntry.objects.filter(project=project, action=Action.PROJECT_RESTORED).exists()


@pytest.mark.parametrize("side", ["before", "after"])
def test_it_refuses_a_restore_outside_the_window_naming_the_window(agent, host, side):
    # Computed in the test, not in its id: each pytest-xdist worker collects the suite itself,
    # and the two must collect the same names.
    seconds = int(WINDOW_START) - 3600 if side == "before" else int(timezone.now().timestamp()) + 3600
    project = backed_up(host, agent)
    with pytest.raises(RestoreRefused, match="the restorable window is 2025-12-06 05:46:45 UTC to "):
        protection.request_restore(project, RestoreTarget.parse(seconds))
    assert not project.operations.filter(kind=Kind.RESTORE).exists()


@pytest.mark.parametrize("value", ["yesterday", "2026-12-06", "-5", "1e9", "99999999999999999999"])
def test_an_unparsable_restore_time_is_a_clear_error(value):
    with pytest.raises(BadRestoreTarget, match="point in time"):
        RestoreTarget.parse(value)


def test_it_refuses_a_restore_while_another_operation_runs(agent, host):
    project = backed_up(host, agent)
    request_operation(project, Kind.RESTART)
    with pytest.raises(OperationInProgress):
        protection.request_restore(project, RestoreTarget(None))


def test_it_refuses_a_restore_while_deleting(agent, host):
    project = backed_up(host, agent)
    Project.objects.filter(pk=project.pk).update(desired_state=DesiredState.DELETED)
    project.refresh_from_db()
    with pytest.raises(OperationRefused, match="is being deleted"):
        protection.request_restore(project, RestoreTarget(None))


def test_it_refuses_a_restore_of_a_project_with_no_backup_yet(agent, host):
    project = provisioned(host)
    with pytest.raises(RestoreRefused, match="no restorable point yet"):
        protection.request_restore(project, RestoreTarget(None))


def kill_worker_mid_restore(project: Project, agent: BackupAgent) -> Operation:
    """A restore claimed and started on the agent, whose worker then died: the reaper ends it."""
    agent.restore = "running"
    operation = protection.request_restore(project, RestoreTarget(None))
    claimed = Operation.objects.claim(operation.pk)
    agent(project.host, deadline=5, operation=claimed).restore_start(project.ref, None)
    Operation.objects.filter(pk=operation.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    assert reaper.reap() >= 1
    operation.refresh_from_db()
    assert operation.state == State.TIMED_OUT
    stop_what_it_started(operation.pk)
    return operation


def test_the_reaper_ends_a_restore_whose_worker_died_and_the_old_data_serves(agent, host):
    project = backed_up(host, agent)
    operation = kill_worker_mid_restore(project, agent)
    assert ("cancel", project.ref, str(operation.pk)) in agent.calls
    assert agent.job.state == "failed" and agent.job.error.code == "cancelled"
    messages = list(operation.events.values_list("message", flat=True))
    assert "The restore did not finish: the agent put the old data back" in messages
    project.refresh_from_db()
    assert project.status not in (Status.RESTORING,)
    assert not AuditEntry.objects.filter(project=project, action=Action.PROJECT_RESTORED).exists()


def test_the_reaper_records_a_restore_that_finished_after_its_worker_died(agent, host):
    project = backed_up(host, agent)
    agent.cancel = mock.Mock(return_value=protection.api.CancelReply(cancelled=False, running=False))
    agent.restore = "running"
    operation = protection.request_restore(project, RestoreTarget(None))
    claimed = Operation.objects.claim(operation.pk)
    agent(project.host, deadline=5, operation=claimed).restore_start(project.ref, None)
    agent.job = protection.api.BackupJob(kind="restore", state="succeeded", operation=str(operation.pk))
    Operation.objects.filter(pk=operation.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    reaper.reap()
    stop_what_it_started(operation.pk)
    assert AuditEntry.objects.filter(project=project, action=Action.PROJECT_RESTORED).exists()


def test_a_clone_is_a_new_project_restored_from_the_sources_backups(agent, host):
    source = backed_up(host, agent)
    clone = protection.clone_project(source, RestoreTarget(None), name="Preview")
    operation = clone.operations.get()
    assert operation.kind == Kind.CLONE
    assert run(operation).state == State.SUCCEEDED, operation.error_message
    clone.refresh_from_db()
    assert clone.status == Status.ACTIVE_HEALTHY and clone.ref != source.ref
    assert agent.called("restore_start")[-1] == ("restore_start", clone.ref, source.ref, None)
    assert Protection.objects.get(project=clone).configured_at is not None
    assert AuditEntry.objects.get(project=clone, action=Action.PROJECT_CREATE).detail["clone_of"] == source.ref


def test_a_clone_outside_the_window_makes_no_project(agent, host):
    source = backed_up(host, agent)
    before = Project.objects.count()
    with pytest.raises(RestoreRefused, match="restorable window"):
        protection.clone_project(source, RestoreTarget.parse(int(WINDOW_START) - 10), name="Too early")
    assert Project.objects.count() == before


def test_a_restore_test_is_recorded_and_a_failed_one_shows_as_failing(agent, host):
    project = backed_up(host, agent)
    assert run(protection.request_verify(project)).state == State.SUCCEEDED
    found = Protection.objects.get(project=project)
    assert found.last_verify_ok is True and "2 databases answered" in found.last_verify_message
    agent.verify_ok = False
    operation = run(protection.request_verify(project))
    assert operation.state == State.FAILED
    found.refresh_from_db()
    assert found.last_verify_ok is False
    assert "the last restore test failed: " in found.failure
    project.refresh_from_db()
    assert project.status == Status.ACTIVE_HEALTHY


def test_failing_archiving_shows_postgresqls_reason(agent, host):
    project = backed_up(host, agent)
    now = timezone.now().timestamp()
    agent.archiver = protection.api.ArchiverStatus(
        enabled=True,
        running=True,
        archived_count=3,
        last_archived_wal="000000010000000000000003",
        last_archived_unix=now - 600,
        failed_count=7,
        last_failed_wal="000000010000000000000004",
        last_failed_unix=now - 5,
        last_failure='archive command failed with exit code 1: "s3: 403 Forbidden"',
    )
    assert protection.read_all_archivers() == 1
    found = Protection.objects.get(project=project)
    assert found.archiving_failing
    assert "WAL archiving is failing (segment 000000010000000000000004" in found.failure
    assert "403 Forbidden" in found.failure


def test_the_backup_pass_takes_due_backups_and_skips_busy_and_stopped_projects(agent, host, settings):
    due = provisioned(host)
    busy = provisioned(host)
    stopped = provisioned(host)
    fresh = backed_up(host, agent)
    request_operation(busy, Kind.RESTART)
    Project.objects.filter(pk=stopped.pk).update(desired_state=DesiredState.STOPPED)
    assert protection.queue_due_backups() == 1
    assert due.operations.filter(kind=Kind.BACKUP, state=State.QUEUED).exists()
    assert not fresh.operations.filter(kind=Kind.BACKUP, state=State.QUEUED).exists()
    later = timezone.now() + timedelta(minutes=settings.BERTH_BACKUP_SCHEDULE_MINUTES + 1)
    assert Protection.objects.get(project=fresh).backup_due(later)


def test_an_upgrade_takes_a_real_backup_point_first(agent, host):
    project = provisioned(host)
    operation = request_operation(project, Kind.UPGRADE, params={"target_major": 16})
    agent.upgrade_check = mock.Mock(side_effect=protection.AgentError("stop here", code="error"))
    agent.upgrade_step = mock.Mock()
    run(operation)
    backup = Backup.objects.get(project=project)
    assert (backup.trigger, backup.status) == ("upgrade", BackupStatus.COMPLETED)
    steps = list(operation.events.values_list("step", flat=True))
    assert steps.index("backup") < len(steps) - 1


def test_an_upgrade_whose_backup_point_fails_changes_nothing(agent, host):
    project = provisioned(host)
    agent.repository_down = True
    agent.upgrade_check = mock.Mock()
    agent.upgrade_step = mock.Mock()
    operation = run(request_operation(project, Kind.UPGRADE, params={"target_major": 16}))
    assert operation.state == State.FAILED
    assert "the base backup failed" in operation.error_message
    agent.upgrade_check.assert_not_called()
    project.refresh_from_db()
    assert project.postgres_major == 15


def test_it_refuses_a_backup_or_a_restore_in_place_of_a_stopped_project(agent, host):
    project = backed_up(host, agent)
    Project.objects.filter(pk=project.pk).update(desired_state=DesiredState.STOPPED)
    project.refresh_from_db()
    with pytest.raises(OperationRefused, match="is stopped and cannot be backed up in place: start it first"):
        protection.request_backup(project)
    with pytest.raises(OperationRefused, match="is stopped and cannot be restored in place"):
        protection.request_restore(project, RestoreTarget(None))
    assert not project.operations.filter(kind__in=[Kind.BACKUP, Kind.RESTORE], state=State.QUEUED).exists()


def test_a_job_the_agent_lost_fails_the_backup_instead_of_waiting_out_the_deadline(agent, host):
    project = provisioned(host)
    agent.backup_start = lambda ref, repository, job_s=None: protection.api.BackupJob(kind="none", state="none")
    operation = run(protection.request_backup(project))
    assert (operation.state, operation.error_code) == (State.FAILED, "lost")
    assert "has no base backup" in operation.error_message


def test_a_removed_projects_backups_expire_past_the_retention_then_its_protection_ends(agent, host, settings):
    removed, live = backed_up(host, agent), backed_up(host, agent)
    Project.objects.filter(pk=removed.pk).update(status=Status.REMOVED, desired_state=DesiredState.DELETED)
    label = Backup.objects.get(project=removed).label
    asked = []

    def prune(repository, stanza, keep_since_unix, min_backups=1, deadline_s=None):
        asked.append((stanza, keep_since_unix, min_backups))
        young = keep_since_unix < WINDOW_START  # the backup is younger than the retention
        return protection.api.PruneReply(
            removed_backups=[] if young else [label],
            removed_wal=0 if young else 7,
            kept_backups=[label] if young else [],
        )

    agent.backup_prune = prune
    taken = datetime.fromtimestamp(WINDOW_START, UTC)
    now = taken + timedelta(days=1)
    assert protection.prune_removed(now=now) == 1
    keep_since = now.timestamp() - settings.BERTH_BACKUP_RETENTION_DAYS * 86400
    assert asked == [(removed.ref, keep_since, 0)], "only the removed project, and its stanza may end empty"
    assert Backup.objects.get(project=removed).status == BackupStatus.COMPLETED
    assert Protection.objects.get(project=removed).configured_at is not None, "a backup inside the retention stays"

    later = taken + timedelta(days=settings.BERTH_BACKUP_RETENTION_DAYS + 1)
    assert protection.prune_removed(now=later) == 1
    assert Backup.objects.get(project=removed).status == BackupStatus.EXPIRED
    ended = Protection.objects.get(project=removed)
    assert (ended.enabled, ended.configured_at, ended.latest_restorable_at) == (False, None, None)
    assert Protection.objects.get(project=live).configured_at is not None
    assert protection.prune_removed(now=later) == 0, "an emptied stanza is not asked again"
    assert len(asked) == 2


def test_a_removed_project_whose_host_does_not_answer_is_left_for_the_next_pass(agent, host):
    removed = backed_up(host, agent)
    Project.objects.filter(pk=removed.pk).update(status=Status.REMOVED, desired_state=DesiredState.DELETED)
    agent.backup_prune = mock.Mock(side_effect=protection.AgentError("connection refused"))
    assert protection.prune_removed() == 0
    assert Protection.objects.get(project=removed).configured_at is not None
    assert Backup.objects.get(project=removed).status == BackupStatus.COMPLETED


def test_a_clone_that_never_becomes_healthy_gives_up_after_the_operation_deadline_not_the_backup_one(
    agent, host, settings
):
    source = backed_up(host, agent)
    settings.BERTH_OPERATION_DEADLINE = 16  # the runner keeps 15 s back to stop the runtime
    settings.BERTH_BACKUP_DEADLINE = 60
    agent.probe_status = "fail"
    clone = protection.clone_project(source, RestoreTarget(None), name="Never healthy")
    operation = run(clone.operations.get())
    assert (operation.state, operation.error_code) == (State.FAILED, "unhealthy")
    assert Project.objects.get(pk=clone.pk).status == Status.INIT_FAILED
    assert agent.called("down"), "the runtime it brought up is stopped"
    assert operation.deadline - operation.finished_at > timedelta(seconds=30), "it did not wait out the hour's budget"


def test_a_project_whose_archiving_could_not_be_turned_on_is_tried_again_by_the_backup_pass(agent, host):
    working = agent.backup_archiving
    agent.backup_archiving = mock.Mock(
        side_effect=protection.AgentError("the repository folder /srv/backups does not exist", code="repository")
    )
    project = provisioned(host)
    found = Protection.objects.get(project=project)
    assert found.failure.startswith("WAL archiving could not be turned on: the repository folder"), found.failure
    now = timezone.now()
    assert protection.queue_due_protects(now) == 0, "its provisioning tried a moment ago"

    later = now + timedelta(minutes=protection.PROTECT_RETRY_MINUTES + 1)
    with mock.patch("django.utils.timezone.now", return_value=later):
        assert protection.queue_due_protects(later) == 1
    retry = project.operations.get(kind=Kind.PROTECT)
    assert run(retry).state == State.FAILED
    project.refresh_from_db()
    assert project.status == Status.ACTIVE_HEALTHY, "the agent refused before touching the runtime"
    assert Protection.objects.get(project=project).configured_at is None
    assert protection.queue_due_protects(later) == 0, "tried again a moment ago"

    agent.backup_archiving = working  # the repository is mounted now
    latest = later + timedelta(minutes=protection.PROTECT_RETRY_MINUTES + 1)
    with mock.patch("django.utils.timezone.now", return_value=latest):
        assert protection.queue_due_protects(latest) == 1
    assert run(project.operations.filter(kind=Kind.PROTECT).latest("pk")).state == State.SUCCEEDED
    found = Protection.objects.get(project=project)
    assert found.configured_at is not None and found.failure == ""
    assert Project.objects.get(pk=project.pk).status == Status.ACTIVE_HEALTHY


def test_after_an_upgrade_or_its_rollback_the_new_clusters_first_backup_is_the_passs_next(agent, host):
    """Another cluster archives into its own WAL folder: until its first base backup nothing
    restores it, so the pass takes one within minutes, not a schedule later."""
    project = backed_up(host, agent)
    operation = project.operations.latest("pk")  # the one the audit rows name
    assert not Protection.objects.get(project=project).backup_due()
    upgrades.record_upgraded(project, 16, 15, operation=operation)
    assert Protection.objects.get(project=project).backup_due()

    assert run(protection.request_backup(project)).state == State.SUCCEEDED
    assert not Protection.objects.get(project=project).backup_due()
    upgrades.record_rolled_back(project, 15, operation=operation)
    assert Protection.objects.get(project=project).backup_due()
