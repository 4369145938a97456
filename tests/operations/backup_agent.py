"""A scripted agent that also answers the backup calls (agent.api's Backups section) as the
real one does: jobs started by one call and polled, a catalog, prune, archiver status."""

import time

from agent.api import (
    ArchiverStatus,
    BackupCatalog,
    BackupInfo,
    BackupJob,
    CancelReply,
    ErrorDetail,
    PruneReply,
)
from agent.client import AgentError
from tests.operations.test_runner import ScriptedAgent

WINDOW_START = 1_765_000_000.0


class BackupAgent(ScriptedAgent):
    """`repository_down`: calls that touch the repository fail as the agent's 502. `restore`:
    how a restore job ends ("succeeded", "failed", or "running": it never ends by itself)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.repository_down = False
        self.restore = "succeeded"
        self.verify_ok = True
        self.archiver = ArchiverStatus(
            enabled=True, running=True, archived_count=3, last_archived_wal="000000010000000000000003"
        )
        self.job = BackupJob(kind="none", state="none")
        self.operation = None
        self.latest = time.time()

    def __call__(self, host, *, deadline, operation=None):
        self.operation = None if operation is None else str(operation.pk)
        return self

    def _repository(self):
        if self.repository_down:
            raise AgentError("repository unreachable: connection refused (127.0.0.1:1)", code="repository", status=502)

    def backup_archiving(self, ref, repository, archive_timeout_s=60, deadline_s=None):
        self._record("backup_archiving", ref, repository.url, archive_timeout_s)
        return ArchiverStatus(enabled=True, url=repository.url, archive_timeout_s=archive_timeout_s, restarted=True)

    def backup_archiver(self, ref):
        self._record("backup_archiver", ref)
        return self.archiver

    def backup_start(self, ref, repository, job_s=None):
        self._record("backup_start", ref, repository.url)
        self._repository()
        now = time.time()
        info = BackupInfo("20261206T080000Z", now - 5, now, 4_200_000, 15, 1, "A", "B", "7000000000000000001")
        self.job = BackupJob(kind="base_backup", state="succeeded", operation=self.operation, backup=info)
        return BackupJob(kind="base_backup", state="running", operation=self.operation)

    def restore_start(self, ref, repository, source_ref=None, target_unix=None, job_s=None):
        self._record("restore_start", ref, source_ref, target_unix)
        self._repository()
        state = self.restore
        error = (
            ErrorDetail(
                "restore_failed",
                "recovery stopped before the target",
                "FATAL: requested recovery stop point is before consistent recovery point",
            )
            if state == "failed"
            else None
        )
        self.job = BackupJob(
            kind="restore",
            state=state,
            operation=self.operation,
            error=error,
            phase="recovering",
            restored_to_unix=target_unix or self.latest,
            timeline=2,
        )
        return BackupJob(kind="restore", state="running", operation=self.operation)

    def verify_start(self, ref, repository, source_ref=None, job_s=None):
        self._record("verify_start", ref)
        self._repository()
        if self.verify_ok:
            self.job = BackupJob(
                kind="verify", state="succeeded", operation=self.operation, restored_to_unix=self.latest, databases=2
            )
        else:
            error = ErrorDetail("verify_failed", "database postgres did not answer")
            self.job = BackupJob(kind="verify", state="failed", operation=self.operation, error=error)
        return BackupJob(kind="verify", state="running", operation=self.operation)

    def backup_job(self, ref):
        self._record("backup_job", ref)
        return self.job

    def cancel(self, ref, operation, wait_s=5.0):
        self._record("cancel", ref, operation)
        running = self.job.state == "running" and self.job.operation == operation
        if running:
            self.job = BackupJob(
                kind=self.job.kind, state="failed", operation=operation, error=ErrorDetail("cancelled", "cancelled")
            )
        return CancelReply(cancelled=running, running=False)

    def backup_catalog(self, repository, stanza, deadline_s=None):
        self._record("backup_catalog", stanza)
        self._repository()
        info = BackupInfo(
            "20261206T080000Z", WINDOW_START, WINDOW_START + 5, 4_200_000, 15, 1, "A", "B", "7000000000000000001"
        )
        return BackupCatalog(stanza, [info], earliest_unix=WINDOW_START + 5, latest_unix=self.latest)

    def backup_prune(self, repository, stanza, keep_since_unix, min_backups=1, deadline_s=None):
        self._record("backup_prune", stanza, keep_since_unix)
        self._repository()
        return PruneReply(removed_backups=[], removed_wal=0, kept_backups=["20261206T080000Z"])
