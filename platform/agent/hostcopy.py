"""The newest base backup's tar, kept on the host that took it, beside an S3 repository.

Why: an S3 restore is bound by the CPU that the object store, decompression and the writes
spend per byte (2-3 s per GB on a 2-core host whose cores it shares with the store: 0.20-0.48
of `cp -a`'s speed), while a tar lying on the host's disk is copied by the kernel
(agent.tarcopy: 0.55 of `cp -a` on the same day). Nearly every restore in place picks the
newest backup (a dropped table, a bad migration: a point since the last base backup), so the
host keeps that one tar, as pgBackRest keeps a local repository beside an offsite one. A
restore in place or a clone on this host of that backup copies its files from here and
fetches only the WAL from the repository; a restore on any other host (a lost host's project)
and every verify (which checks the repository, not this copy) read the repository.

Invariants:
- The repository is the record. A copy is written while the backup streams into the
  repository and counts only once that backup is stored (its backup.json), the tar synced and
  its record (RECORD: the backup's id, bytes and cluster, the repository's url and endpoint,
  the stanza) written after it. A restore uses a copy only when all of these match the backup
  it chose and the tar has the backup's size; anything else reads the repository.
- Writing a copy never fails a backup and never fills the disk: it stops, the copy dropped
  and the reason in the job's detail, when the filesystem would keep less than RESERVE of its
  space free, or at any write error.
- One copy per runtime: a complete new one replaces the older, and a new one begins by
  removing any tar the record does not name (one an interrupted backup left half written).
- Readable by the agent alone (its folder is mode 700, the agent's own: a link or a folder of
  another owner in its place is neither written nor read); the docker driver bind-mounts the
  tar into the one-off container that extracts it.
"""

import errno
import json
import logging
import os
import stat
from pathlib import Path

from agent import tarcopy
from agent.repository import Spec, sync_folder

FOLDER = "base-copy"  # under the runtime's state folder
RECORD = "copy.json"
RESERVE = 0.10  # of the filesystem kept free: the serving cluster's WAL must never find it full
CHECK_BYTES = 64 << 20  # free space looked at again after this much is written

log = logging.getLogger("agent.hostcopy")


def folder_of(state: Path) -> Path:
    return state / FOLDER


def _record(spec: Spec, stanza: str, backup_id: str, tar_bytes: int, system_identifier: str) -> dict:
    """What copy.json says of a copy, and what a restore's chosen backup must match."""
    return {
        "url": spec.url,
        "endpoint": spec.endpoint,
        "stanza": stanza,
        "id": backup_id,
        "bytes": tar_bytes,
        "system_identifier": system_identifier,
    }


class Writer:
    """The base backup's tar, read through `tee` as it streams into the repository, written into
    `folder`/<id>.tar. `keep` makes it the runtime's copy; leaving the `with` block without
    `keep` removes it (the backup failed)."""

    def __init__(self, folder: Path, backup_id: str):
        self.source = None
        self.kept = False
        self.folder = folder
        self.backup_id = backup_id
        self.path = folder / f"{backup_id}.tar"
        self.fd: int | None = None
        self.written = self.handed = self.checked = 0
        self.stopped_because: str | None = None
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            _check_own(folder)
            os.chmod(folder, 0o700)
            _remove_unrecorded(folder)
            # 644 inside a 700 folder: the docker driver's one-off container reads it as its
            # postgres user through a bind mount, nobody else reaches it.
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            self._check_space()
        except OSError as error:
            self._stop(f"could not write {self.path}: {error.strerror}")

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc) -> None:
        if not self.kept:
            self.drop()

    def tee(self, source) -> "Writer":
        """Reads of the returned stream read `source` and write into the copy."""
        self.source = source
        return self

    def read(self, size: int = -1) -> bytes:
        chunk = self.source.read(size)
        if self.fd is not None and chunk:
            try:
                self._write(chunk)
            except OSError as error:
                self._stop(f"could not write {self.path}: {error.strerror}")
        return chunk

    def _write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            view = view[os.write(self.fd, view) :]
        self.written += len(chunk)
        if self.written - self.handed >= tarcopy.WRITE_SOON:
            tarcopy.write_soon(self.fd, self.handed, self.written - self.handed)
            self.handed = self.written
        if self.written - self.checked >= CHECK_BYTES:
            self.checked = self.written
            self._check_space()

    def _check_space(self) -> None:
        disk = os.statvfs(self.folder)
        free, whole = disk.f_bavail * disk.f_frsize, disk.f_blocks * disk.f_frsize
        if free - CHECK_BYTES < whole * RESERVE:
            self._stop(
                f"the host's disk keeps {free >> 20} MiB of {whole >> 20} free, "
                f"under {RESERVE:.0%} once the next {CHECK_BYTES >> 20} MiB are written"
            )

    def _stop(self, reason: str) -> None:
        """No copy of this backup: the backup itself goes on into the repository."""
        self.stopped_because = reason
        log.warning("no host copy of the base backup: %s", reason)
        self.drop()

    def keep(self, spec: Spec, stanza: str, tar_bytes: int, system_identifier: str) -> str:
        """After the backup is stored in the repository: the copy synced, its record written,
        older copies removed. Returns what the job's detail says of it."""
        if self.fd is None:
            return f"no host copy ({self.stopped_because})"
        try:
            if self.written != tar_bytes:
                raise OSError(0, f"{self.written} bytes written of the tar's {tar_bytes}")
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None
            record = _record(spec, stanza, self.backup_id, tar_bytes, system_identifier)
            (self.folder / RECORD).unlink(missing_ok=True)  # the older copy's, before it goes
            for other in self.folder.iterdir():
                if other != self.path:
                    other.unlink()
            partial = self.folder / f".{RECORD}.partial"
            with open(partial, "w") as out:
                json.dump(record, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, self.folder / RECORD)
            sync_folder(self.folder)
            self.kept = True
        except OSError as error:
            self._stop(f"could not keep {self.path}: {error.strerror}")
            return f"no host copy ({self.stopped_because})"
        return "a copy kept on this host"

    def drop(self) -> None:
        """The copy being written removed (the backup failed, or the copy could not be made)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.path.unlink(missing_ok=True)


def find(folder: Path, spec: Spec, stanza: str, backup_id: str, tar_bytes: int, system_identifier: str) -> Path | None:
    """The host's copy of that backup of that repository's stanza, or None (read the repository)."""
    try:
        _check_own(folder)
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    path = folder / f"{backup_id}.tar"
    if record != _record(spec, stanza, backup_id, tar_bytes, system_identifier):
        return None
    try:
        if path.stat().st_size != tar_bytes:
            return None
    except OSError:
        return None
    return path


def _check_own(folder: Path) -> None:
    """The folder must be the agent's own, not a link: it lies in the runtime's state folder,
    which the server's user owns and could have replaced it in, and the agent changes its
    mode and removes files in it."""
    status = os.lstat(folder)
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.geteuid():
        raise OSError(errno.EPERM, f"{folder} is not a folder of the agent's own")


def _remove_unrecorded(folder: Path) -> None:
    """Tars the record does not name removed: a backup the agent did not finish (killed, or
    the host restarted) left its copy half written, and it must not hold the disk."""
    try:
        kept = f"{json.loads((folder / RECORD).read_text())['id']}.tar"
    except (OSError, ValueError, KeyError, TypeError):
        kept = None
    for tar in folder.glob("*.tar"):
        if tar.name != kept:
            tar.unlink(missing_ok=True)


def forget(copy: Path, why: object) -> None:
    """That copy removed, its record first (if it still names it), so no restore uses it again
    (it failed to extract, `why`). Only that one: a clone on this host may fail on a source's
    copy just as that runtime's next backup replaces it, and the new one stays."""
    record = copy.parent / RECORD
    try:
        if json.loads(record.read_text()).get("id") == copy.name.removesuffix(".tar"):
            record.unlink()
    except (OSError, ValueError, AttributeError):
        pass
    copy.unlink(missing_ok=True)
    log.warning("the host copy %s could not be extracted (%s): forgotten, the repository is read", copy, why)
