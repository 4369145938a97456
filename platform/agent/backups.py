"""Backups of process-driver runtimes: WAL archiving, base backups, point-in-time restore
(in place, or into a new runtime), verify and prune; see "Backups" in docs/architecture.md.

Not implemented yet: every call answers 501 `unsupported`.
"""

from agent import api
from agent.commands import Deadline
from agent.errors import Unsupported
from agent.runtimes import Runtimes


class Backups:
    def __init__(self, runtimes: Runtimes):
        self.runtimes = runtimes

    def configure_archiving(self, ref: str, body: api.ArchivingRequest, deadline: Deadline) -> api.ArchiverStatus:
        raise Unsupported("WAL archiving is not implemented by this agent yet")

    def archiver_status(self, ref: str) -> api.ArchiverStatus:
        raise Unsupported("WAL archiving is not implemented by this agent yet")

    def start_base_backup(self, ref: str, body: api.BaseBackupRequest) -> api.BackupJob:
        raise Unsupported("base backups are not implemented by this agent yet")

    def start_restore(self, ref: str, body: api.RestoreRequest) -> api.BackupJob:
        raise Unsupported("restores are not implemented by this agent yet")

    def start_verify(self, ref: str, body: api.VerifyRequest) -> api.BackupJob:
        raise Unsupported("verifies are not implemented by this agent yet")

    def job(self, ref: str) -> api.BackupJob:
        raise Unsupported("backup jobs are not implemented by this agent yet")

    def catalog(self, body: api.CatalogRequest, deadline: Deadline) -> api.BackupCatalog:
        raise Unsupported("backup catalogs are not implemented by this agent yet")

    def prune(self, body: api.PruneRequest, deadline: Deadline) -> api.PruneReply:
        raise Unsupported("pruning is not implemented by this agent yet")
