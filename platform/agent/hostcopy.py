"""The newest base backup, kept extracted on the host that took it, beside its repository.

Why: an S3 restore is bound by the CPU that the object store, decompression and the writes
spend per byte (2-3 s per GB on a 2-core host whose cores it shares with the store), and even
a tar lying on the host's disk (a folder repository's, or a copy of the S3 one) must be
written out again: its 1.2 GB reaching the disk before the restored cluster may serve took
1.8-2.8 s of a 1 GB project's restore here, where `cp -a` copied its data folder in 0.3-0.7 s
(and a folder repository on an NFS mount reads at the network's speed). Nearly every restore
in place picks the newest backup (a dropped table, a bad migration: a point since the last
base backup), so the host keeps that one's files, extracted as the backup streamed into the
repository and on disk by the time it is stored. A restore in place of that backup moves them
into place (a rename: nothing is copied, only recovery's own pages are written; 0.5-0.8 s for
that project) and fetches only the WAL from the repository; a clone on this host copies them;
a restore on any other host (a lost host's project) and every verify (which checks the
repository, not this copy) read the repository. As pgBackRest keeps a local repository beside
an offsite one, for the one backup that matters most.

Layout, in the runtime's state folder:

    base-copy/             the agent's own, mode 700 (a link or another owner's folder in its
                           place is neither written nor read: the server's user owns the
                           state folder and could put one there)
        copy.json          RECORD: the backup's id, tar bytes and cluster; the repository's
                           url, endpoint and stanza; the copy's files and their bytes
        <id>/              the backup's files: the server's user's (process driver), or the
                           agent's (docker: a one-off container copies them into the volume
                           and gives them to its postgres user)

Invariants:
- The repository is the record. A copy is written while the backup streams into the
  repository and counts only once that backup is stored (its backup.json), every file and
  folder of it synced and its record written after them. A restore uses a copy only when the
  record matches the backup it chose and the folder still holds the recorded files and bytes;
  one that does not is forgotten, and anything else reads the repository.
- A restore in place takes the copy: its record goes first, so a copy whose files recovery has
  begun to change is never found again. The backup the control plane takes after a restore
  leaves a new one.
- Writing a copy never fails a backup and never fills the disk: it stops, the copy dropped
  and the reason in the job's detail, when the filesystem would keep less than RESERVE of its
  space free, or at any write or extraction error.
- One copy per runtime: a complete new one replaces the older, and a new one begins by
  removing anything the record does not name (one an interrupted backup left half written).
"""

import errno
import json
import logging
import os
import shutil
import stat
from pathlib import Path

from agent import tarstream
from agent.commands import Deadline, RunAs
from agent.repository import Spec, sync_folder

FOLDER = "base-copy"  # under the runtime's state folder
RECORD = "copy.json"
RESERVE = 0.10  # of the filesystem kept free: the serving cluster's WAL must never find it full
CHECK_BYTES = 64 << 20  # free space looked at again after this much is written

log = logging.getLogger("agent.hostcopy")


def folder_of(state: Path) -> Path:
    return state / FOLDER


def _record(spec: Spec, stanza: str, backup_id: str, tar_bytes: int, system_identifier: str) -> dict:
    """What copy.json says of the backup a copy holds, and what a restore's chosen backup must match."""
    return {
        "url": spec.url,
        "endpoint": spec.endpoint,
        "stanza": stanza,
        "id": backup_id,
        "bytes": tar_bytes,
        "system_identifier": system_identifier,
    }


class Writer:
    """The base backup's tar, read through `tee` as it streams into the repository, extracted
    into `folder`/<id>/ on a thread of its own (agent.tarstream.Feed), its files made for
    `owner`. `keep` makes it the runtime's copy; leaving the `with` block without `keep`
    removes it (the backup failed)."""

    def __init__(self, folder: Path, backup_id: str, owner: RunAs | None, deadline: Deadline):
        self.source = None
        self.kept = False
        self.folder = folder
        self.backup_id = backup_id
        self.path = folder / backup_id
        self.feed: tarstream.Feed | None = None
        self.written = self.checked = 0
        self.stopped_because: str | None = None
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            _check_own(folder)
            os.chmod(folder, 0o700)
            _remove_unrecorded(folder)
            self.path.mkdir(mode=0o700)
            if owner is not None:
                os.chown(self.path, owner.uid, owner.gid)
            self._check_space()
        except OSError as error:
            self._stop(f"could not write {self.path}: {error.strerror}")
            return
        if self.stopped_because is None:
            self.feed = tarstream.Feed(self.path, owner, deadline)

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc) -> None:
        if not self.kept:
            self.drop()

    def tee(self, source) -> "Writer":
        """Reads of the returned stream read `source` and feed the copy's extraction."""
        self.source = source
        return self

    def read(self, size: int = -1) -> bytes:
        chunk = self.source.read(size)
        if self.feed is not None and chunk:
            try:
                self.feed.write(chunk)
            except BrokenPipeError:
                self._stop(f"could not extract {self.path}: {self._why_stopped()}")
                return chunk
            self.written += len(chunk)
            if self.written - self.checked >= CHECK_BYTES:
                self.checked = self.written
                self._check_space()
        return chunk

    def _why_stopped(self) -> str:
        try:
            self.feed.finish()
        except Exception as error:  # the extraction's own failure: what the detail says
            return getattr(error, "message", None) or str(error)
        return "it stopped early"

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
        if self.feed is None:
            return f"no host copy ({self.stopped_because})"
        try:
            feed, self.feed = self.feed, None
            feed.finish()
            if self.written != tar_bytes:
                raise OSError(0, f"{self.written} bytes extracted of the tar's {tar_bytes}")
            files, file_bytes = census(self.path)
            _sync_tree(self.path)
            record = _record(spec, stanza, self.backup_id, tar_bytes, system_identifier)
            record.update(files=files, file_bytes=file_bytes)
            (self.folder / RECORD).unlink(missing_ok=True)  # the older copy's, before it goes
            for other in self.folder.iterdir():
                if other != self.path:
                    _remove(other)
            partial = self.folder / f".{RECORD}.partial"
            with open(partial, "w") as out:
                json.dump(record, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, self.folder / RECORD)
            sync_folder(self.folder)
            self.kept = True
        except Exception as error:  # OSError, or the extraction's failure (a tar it refused)
            why = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
            self._stop(f"could not keep {self.path}: {why}")
            return f"no host copy ({self.stopped_because})"
        return "a copy kept on this host"

    def drop(self) -> None:
        """The copy being written removed (the backup failed, or the copy could not be made)."""
        if self.feed is not None:
            feed, self.feed = self.feed, None
            feed.abandon()
        shutil.rmtree(self.path, ignore_errors=True)


def find(folder: Path, spec: Spec, stanza: str, backup_id: str, tar_bytes: int, system_identifier: str) -> Path | None:
    """The host's copy of that backup of that repository's stanza, or None (read the repository).
    A recorded copy whose files no longer match the record is forgotten."""
    try:
        _check_own(folder)
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    expected = _record(spec, stanza, backup_id, tar_bytes, system_identifier)
    if not isinstance(record, dict) or any(record.get(key) != value for key, value in expected.items()):
        return None
    path = folder / backup_id
    recorded = (record.get("files"), record.get("file_bytes"))
    try:
        found = census(path)
    except OSError as error:
        found = error.strerror
    if found != recorded:
        forget(path, f"it holds {found} (entries, bytes), its record says {recorded}")
        return None
    return path


def take(copy: Path, into: Path) -> None:
    """The copy moved to `into` (an empty folder, which it replaces), for a restore in place.
    Its record goes first: recovery changes the files, so it is never found again."""
    _drop_record(copy)
    into.rmdir()
    os.rename(copy, into)


def census(path: Path) -> tuple[int, int]:
    """How many entries (files, folders, links) the folder holds and its files' bytes; OSError
    if it is not a folder (a link in its place included)."""
    status = os.lstat(path)
    if not stat.S_ISDIR(status.st_mode):
        raise OSError(errno.ENOTDIR, "not a folder")
    entries = size = 0
    for parent, folders, files in os.walk(path):
        entries += len(folders) + len(files)
        for name in files:
            size += os.lstat(os.path.join(parent, name)).st_size
    return entries, size


def _sync_tree(path: Path) -> None:
    """Every file and folder under `path` on disk (each fsynced, as PostgreSQL syncs a data folder)."""
    for parent, _, files in os.walk(path):
        for name in files:
            full = os.path.join(parent, name)
            if os.path.islink(full):
                continue
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        sync_folder(Path(parent))


def _check_own(folder: Path) -> None:
    """The folder must be the agent's own, not a link: it lies in the runtime's state folder,
    which the server's user owns and could have replaced it in, and the agent changes its
    mode and removes files in it."""
    status = os.lstat(folder)
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.geteuid():
        raise OSError(errno.EPERM, f"{folder} is not a folder of the agent's own")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_unrecorded(folder: Path) -> None:
    """Whatever the record does not name removed: a backup the agent did not finish (killed, or
    the host restarted) left its copy half written, and it must not hold the disk."""
    try:
        kept = json.loads((folder / RECORD).read_text())["id"]
    except (OSError, ValueError, KeyError, TypeError):
        kept = None
    for entry in folder.iterdir():
        if entry.name not in (RECORD, kept):
            _remove(entry)


def _drop_record(copy: Path) -> None:
    """The record removed (and that on disk) if it names `copy`."""
    record = copy.parent / RECORD
    try:
        if json.loads(record.read_text()).get("id") == copy.name:
            record.unlink()
            sync_folder(copy.parent)
    except (OSError, ValueError, AttributeError):
        pass


def forget(copy: Path, why: object) -> None:
    """That copy removed, its record first (if it still names it), so no restore uses it again
    (`why`). Only that one: a clone on this host may fail on a source's copy just as that
    runtime's next backup replaces it, and the new one stays."""
    _drop_record(copy)
    shutil.rmtree(copy, ignore_errors=True)
    log.warning("the host copy %s is forgotten (%s): the repository is read", copy, why)
