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
"""

import fnmatch
import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agent.errors import Invalid

POLICIES = ("managed", "seed")
AGENT_PREFIX = ".berth"
STAGING_PREFIX = ".berth-staging-"
MAX_PATH_LENGTH = 1024
FILE_MODE = 0o644


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
    backup: list[str] = (),
    backup_suffix: str | None = None,
) -> dict[str, str]:
    """Apply one files request to a runtime folder; returns the digest of every listed file.

    Each path in `backup` (it must be among the writes) that exists is first copied to
    `<path>.<backup_suffix>`, staged with the rest, so the host's own version survives.
    """
    _check_globs(user_globs)
    targets = [_target(folder, write.path, user_globs) for write in writes]
    removals = [_target(folder, path, user_globs) for path in remove]
    _check_policies(writes)
    _check_distinct([write.path for write in writes] + list(remove))
    backups = _backups(folder, writes, backup, backup_suffix, user_globs)
    _ensure_folder(folder)
    _clear_stale_staging(folder)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    try:
        copies = [
            (_stage(staging, f"backup-{index}", source.read_bytes()), copy)
            for index, (source, copy) in enumerate(backups)
            if source.exists()
        ]
        staged = copies + [
            (_stage(staging, index, write.content), target)
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
    return {write.path: _digest(target) for write, target in zip(writes, targets, strict=True)}


def _backups(folder, writes, backup, suffix, user_globs) -> list[tuple[Path, Path]]:
    """(file, its backup copy) for each path to back up; the copy must not exist yet."""
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
        pairs.append((_target(folder, path, user_globs), copy))
    return pairs


def contents(folder: Path, paths: list[str]) -> dict[str, bytes | None]:
    """The content of each listed file, or None where it does not exist."""
    targets = {path: _target(folder, path, []) for path in paths}
    return {path: _read(target) for path, target in targets.items()}


def _read(target: Path) -> bytes | None:
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Invalid(f"{target.name} cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
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


def _ensure_folder(folder: Path) -> None:
    if folder.is_symlink():
        raise Invalid(f"runtime folder {folder.name} is a symlink")
    folder.mkdir(mode=0o755, exist_ok=True)


def _clear_stale_staging(folder: Path) -> None:
    # Left by an agent that died mid-write; the runtime's lock is held, so none is in use.
    for stale in folder.glob(STAGING_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)


def _stage(staging: Path, index: int | str, content: bytes) -> Path:
    source = staging / str(index)
    with open(source, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    source.chmod(FILE_MODE)
    return source


def _make_parents(folder: Path, target: Path) -> None:
    # _target checked the existing parents; mkdir neither follows nor creates symlinks.
    current = folder
    for part in target.relative_to(folder).parts[:-1]:
        current = current / part
        if not current.exists():
            current.mkdir(mode=0o755)


def _digest(target: Path) -> str | None:
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Invalid(f"{target.name} cannot be read: {exc.strerror}") from None
    sha = hashlib.sha256()
    with os.fdopen(fd, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            sha.update(block)
    return sha.hexdigest()
