"""A runtime's files: validated paths, atomic writes, digests.

Invariants:
- Every path is relative, made of plain names (no `..`, `.`, empty parts or backslashes),
  and resolves inside the runtime's folder without passing through a symlink.
- A write stages every file inside the runtime folder first, then renames each into
  place, so a file is either its old or its new content, and nothing is renamed unless
  every file was staged.
- Paths matching the request's user globs are never written, changed or removed; a seed
  file is written only when absent; only paths listed in `remove` are removed.
- Names starting with `.berth` belong to the agent itself (staging, driver state) and are
  refused.
- Modes: the runtime folder is 0700 (0710 with the group of the user a driver runs services
  as, who must reach its state inside); files the request names private (they hold
  secrets: passwords, JWT secret, keys) are 0600, other files 0644 and subfolders 0755, so
  containers can read what is bind-mounted into them (a bind mount is opened from the
  mount point, not through the runtime folder). Every push tightens the folder and every
  private file already there, so runtimes written before these rules are fixed by it.
"""

import fnmatch
import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from agent.errors import Invalid

POLICIES = ("managed", "seed")
AGENT_PREFIX = ".berth"
STAGING_PREFIX = ".berth-staging-"
MAX_PATH_LENGTH = 1024
FILE_MODE = 0o644
PRIVATE_FILE_MODE = 0o600
FOLDER_MODE = 0o700
SHARED_FOLDER_MODE = 0o710  # the driver's service user may traverse it, nothing more
SUBFOLDER_MODE = 0o755


@dataclass(frozen=True)
class FileWrite:
    path: str
    content: bytes
    policy: str  # managed: always written | seed: written only when absent


def put_files(
    folder: Path,
    writes: list[FileWrite],
    user_globs: list[str],
    remove: list[str],
    *,
    private: list[str] = (),
    folder_group: int | None = None,
    backup: list[str] = (),
    backup_suffix: str | None = None,
) -> dict[str, str]:
    """Apply one files request to a runtime folder; returns the digest of every listed file.

    `private` names the runtime's secret-bearing files, written or not by this request.
    Each path in `backup` (it must be among the writes) that exists is first copied to
    `<path>.<backup_suffix>`, staged with the rest (private when its file is), so the
    host's own version survives.
    """
    _check_globs(user_globs)
    targets = [_target(folder, write.path, user_globs) for write in writes]
    removals = [_target(folder, path, user_globs) for path in remove]
    private_targets = {path: _target(folder, path, user_globs) for path in private}
    _check_policies(writes)
    _check_distinct([write.path for write in writes] + list(remove))
    backups = _backups(folder, writes, backup, backup_suffix, user_globs)
    _ensure_folder(folder, folder_group)
    _clear_stale_staging(folder)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    try:
        copies = [
            (_stage(staging, f"backup-{index}", source.read_bytes(), path in private_targets), copy)
            for index, (path, source, copy) in enumerate(backups)
            if source.exists()
        ]
        staged = copies + [
            (_stage(staging, index, write.content, write.path in private_targets), target)
            for index, (write, target) in enumerate(zip(writes, targets, strict=True))
            if not (write.policy == "seed" and target.exists())
        ]
        for source, target in staged:
            _make_parents(folder, target)
            os.replace(source, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for target in removals:
        if target.exists():
            target.unlink()
    for target in private_targets.values():
        _make_private(target)
    return {write.path: _digest(target) for write, target in zip(writes, targets, strict=True)}


def _backups(folder, writes, backup, suffix, user_globs) -> list[tuple[str, Path, Path]]:
    """(path, its file, its backup copy) for each path to back up; the copy must not exist yet."""
    if not backup:
        return []
    if not suffix:
        raise Invalid("backup needs a backup_suffix")
    written = {write.path for write in writes}
    pairs = []
    for path in backup:
        if path not in written:
            raise Invalid(f"backup path {path!r} is not among the files written")
        copy = _target(folder, f"{path}.{suffix}", user_globs)
        if copy.exists():
            raise Invalid(f"backup {path}.{suffix} already exists")
        pairs.append((path, _target(folder, path, user_globs), copy))
    return pairs


def contents(folder: Path, paths: list[str]) -> dict[str, bytes | None]:
    """The content of each listed file, or None where it does not exist."""
    targets = {path: _target(folder, path, []) for path in paths}
    return {path: _read(target) for path, target in targets.items()}


def _open(target: Path) -> BinaryIO | None:
    """The file opened for reading without following a symlink, or None where it does not exist."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Invalid(f"{target.name} cannot be read: {exc.strerror}") from None
    return os.fdopen(fd, "rb")


def _read(target: Path) -> bytes | None:
    handle = _open(target)
    if handle is None:
        return None
    with handle:
        return handle.read()


def digests(folder: Path, paths: list[str]) -> dict[str, str | None]:
    """The sha256 of each listed file, or None where it does not exist."""
    targets = {path: _target(folder, path, []) for path in paths}
    return {path: _digest(target) for path, target in targets.items()}


def validate_path(path: object) -> PurePosixPath:
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH:
        raise Invalid(f"path {path!r} must be a non-empty string of at most {MAX_PATH_LENGTH} characters")
    if path.startswith("/") or "\\" in path or "\x00" in path:
        raise Invalid(f"path {path!r} must be relative, with forward slashes")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise Invalid(f"path {path!r} must not contain empty, '.' or '..' parts")
    if parts[0].startswith(AGENT_PREFIX):
        raise Invalid(f"path {path!r} is reserved for the agent's own state")
    return PurePosixPath(path)


def is_user_path(path: str, user_globs: list[str]) -> bool:
    # fnmatch's `*` also matches `/`, so a glob covers at least what the manifest means by
    # it; erring wider protects more of the user's files.
    return any(fnmatch.fnmatchcase(path, glob) for glob in user_globs)


def _target(folder: Path, path: str, user_globs: list[str]) -> Path:
    relative = validate_path(path)
    if is_user_path(path, user_globs):
        raise Invalid(f"path {path!r} belongs to the user (it matches a user glob) and is never touched")
    current = folder
    for index, part in enumerate(relative.parts):
        current = current / part
        try:
            mode = current.lstat().st_mode
        except FileNotFoundError:
            break
        last = index == len(relative.parts) - 1
        if stat.S_ISLNK(mode):
            raise Invalid(f"path {path!r} passes through a symlink at {current.relative_to(folder)}")
        if not last and not stat.S_ISDIR(mode):
            raise Invalid(f"path {path!r} passes through a non-folder at {current.relative_to(folder)}")
        if last and not stat.S_ISREG(mode):
            raise Invalid(f"path {path!r} exists and is not a regular file")
    return folder / relative


def _check_globs(user_globs: list[str]) -> None:
    for glob in user_globs:
        if not isinstance(glob, str) or not glob or glob.startswith("/") or ".." in glob.split("/"):
            raise Invalid(f"user glob {glob!r} must be a relative pattern without '..'")


def _check_policies(writes: list[FileWrite]) -> None:
    for write in writes:
        if write.policy not in POLICIES:
            raise Invalid(f"file {write.path!r} has policy {write.policy!r}; the agent writes only {POLICIES}")


def _check_distinct(paths: list[str]) -> None:
    if len(set(paths)) != len(paths):
        raise Invalid("a path appears more than once among the files and removals")
    listed = set(paths)
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in listed:
                raise Invalid(f"path {path!r} needs {parent!r} to be a folder, and it is listed as a file")


def _ensure_folder(folder: Path, group: int | None) -> None:
    if folder.is_symlink():
        raise Invalid(f"runtime folder {folder.name} is a symlink")
    folder.mkdir(mode=FOLDER_MODE, exist_ok=True)
    if group is not None:
        os.chown(folder, -1, group)
    folder.chmod(FOLDER_MODE if group is None else SHARED_FOLDER_MODE)


def _make_private(target: Path) -> None:
    """0600 for a secret-bearing file already there (a seed kept, or one this push did not rewrite)."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    with os.fdopen(fd) as handle:
        os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)


def _clear_stale_staging(folder: Path) -> None:
    # Left by an agent that died mid-write; the runtime's lock is held, so none is in use.
    for stale in folder.glob(STAGING_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)


def _stage(staging: Path, index: int | str, content: bytes, private: bool) -> Path:
    source = staging / str(index)
    # Created with its final mode: a secret is never readable by others, not even for a moment.
    mode = PRIVATE_FILE_MODE if private else FILE_MODE
    fd = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    return source


def _make_parents(folder: Path, target: Path) -> None:
    # _target checked the existing parents; mkdir neither follows nor creates symlinks.
    current = folder
    for part in target.relative_to(folder).parts[:-1]:
        current = current / part
        if not current.exists():
            current.mkdir(mode=SUBFOLDER_MODE)
            current.chmod(SUBFOLDER_MODE)  # whatever the umask


def _digest(target: Path) -> str | None:
    handle = _open(target)
    if handle is None:
        return None
    sha = hashlib.sha256()
    with handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            sha.update(block)
    return sha.hexdigest()
