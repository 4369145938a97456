"""A base backup's tar, lying in a folder repository, extracted by the kernel.

`tar -x` reads every byte into user space and writes it out again: about 700 MB/s here, half
what `cp -a` copies a data folder at. A tar on disk holds each file's bytes in one contiguous,
uncompressed run, so once its headers are read (Python's tarfile, seeking past the data) each
file is `copy_file_range`'s job, as it is cp's: page cache to page cache, on several threads,
large files in pieces.

Invariants:
- Only directories, regular files and symbolic links are made, each inside `into`: a member
  whose path leaves it (absolute, `..`, under a link the tar made) or of any other kind is
  refused before anything of it is written (PostgreSQL's data folder holds nothing else).
- Files are made by the agent and given to `owner` (the server's user) when it runs as root,
  with the tar's mode; nothing is synced here (the restore syncs the folder once).
- The tar must end as a tar does, its last member whole, then zero blocks only: one cut or
  with a damaged header fails, never a data folder silently missing its later files.
"""

import errno
import os
import tarfile
import threading
from collections.abc import Callable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path, PurePosixPath

from agent.commands import Deadline, RunAs
from agent.errors import CommandFailed

WRITE_SOON = 16 << 20  # bytes written, then handed to the disk at once (write_soon): tarstream, hostcopy
PIECE = 64 << 20  # a larger file is copied in pieces of this size, in parallel; a smaller one at once
THREADS = 4
_NOT_IN_KERNEL = (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)


def extract(tar: Path, into: Path, owner: RunAs | None, deadline: Deadline) -> int:
    """The tar's members made under `into` (an existing, empty folder); returns the bytes copied.
    Raises CommandFailed saying which member could not be made, or the deadline's error."""
    copied = 0
    stop = threading.Event()  # set on any failure: the copies still queued or running end
    with open(tar, "rb") as source, ThreadPoolExecutor(THREADS) as pool:
        pending: set[Future] = set()
        try:
            with tarfile.open(fileobj=source, mode="r:") as archive:
                for member in archive:
                    if deadline.expired():
                        break
                    copied += _make(member, into, owner, source.fileno(), pool, pending, stop, deadline)
                    if len(pending) > 4 * THREADS:
                        _settle(pending, FIRST_COMPLETED)
                ended = deadline.expired() or _ended_well(source, archive.offset)
            _settle(pending, ALL_COMPLETED)
            if not ended:
                raise CommandFailed(f"the base backup's tar is cut short or damaged after {archive.offset} bytes")
        except tarfile.TarError as error:
            stop.set()
            raise CommandFailed(f"the base backup is not a readable tar: {error}") from None
        except BaseException:
            stop.set()
            raise
    if deadline.expired():
        raise deadline.stopped("extracting the base backup", started=True)
    return copied


def _ended_well(source, offset: int) -> bool:
    source.seek(offset)
    return ends_as_tar(source.read(tarfile.BLOCKSIZE), lambda: source.read(1 << 20))


def ends_as_tar(block, more: Callable[[], bytes]) -> bool:
    """Whether a tar whose members end with `block` (the block tarfile took for the end) ends
    as a tar does: a zero block, then only zeros, read by `more` until it returns nothing.
    tarfile takes a damaged or cut header for the archive's end too, which would leave every
    later member out of the restored data unsaid."""
    if bytes(block) != bytes(tarfile.BLOCKSIZE):
        return False
    while chunk := more():
        if bytes(chunk).strip(b"\0"):
            return False
    return True


def _make(
    member: tarfile.TarInfo,
    into: Path,
    owner: RunAs | None,
    source: int,
    pool: ThreadPoolExecutor,
    pending: set[Future],
    stop: threading.Event,
    deadline: Deadline,
) -> int:
    """One member made; a regular file's bytes queued on `pool`. Returns the bytes queued."""
    made = place(member, into, owner)
    if made is None:
        return 0
    path, fd = made
    try:
        if member.size <= PIECE:
            # Most of a data folder is files of a few pages: handing each to a thread
            # would cost more than its copy.
            _copy(source, member.offset_data, fd, path, 0, member.size, stop, deadline)
            return member.size
    finally:
        os.close(fd)
    for start in range(0, member.size, PIECE):
        count = min(PIECE, member.size - start)
        pending.add(pool.submit(_copy_piece, source, member.offset_data + start, path, start, count, stop, deadline))
    return member.size


def place(member: tarfile.TarInfo, into: Path, owner: RunAs | None) -> tuple[Path, int] | None:
    """A folder or link made under `into`, or a regular file, empty, whose path and descriptor
    (open for writing, the caller's to close) are returned for its bytes; any other kind of member, or a path leaving
    `into`, is refused (CommandFailed) before anything of it is made. Shared with
    agent.tarstream, so both extractions make and refuse the same things."""
    path = _inside(into, member)
    if member.isdir():
        path.mkdir(mode=0o700, exist_ok=True)
        _own(path, member, owner)
    elif member.isfile() and not member.issparse():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path, _create(path, member, owner)
    elif member.issym():
        os.symlink(member.linkname, path)
        if owner is not None:
            os.chown(path, owner.uid, owner.gid, follow_symlinks=False)
    else:
        raise CommandFailed(f"the base backup holds {member.name}, neither a file, a folder nor a link")
    return None


def _settle(pending: set[Future], until: str) -> None:
    """Wait for queued copies (one, or all) to end; a failed one raises."""
    done, still = wait(pending, return_when=until)
    pending.intersection_update(still)
    for future in done:
        future.result()


def _inside(into: Path, member: tarfile.TarInfo) -> Path:
    name = PurePosixPath(member.name)
    if not name.parts and member.isdir():
        return into  # "./", the folder itself
    if name.is_absolute() or ".." in name.parts or not name.parts:
        raise CommandFailed(f"the base backup holds {member.name!r}, a path outside the data folder")
    # A member under a link an earlier member made would be written wherever the link points
    # (a tablespace's link in pg_tblspc holds nothing in the tar; nothing legitimate does).
    at = into
    for part in name.parts[:-1]:
        at = at / part
        if at.is_symlink():
            raise CommandFailed(f"the base backup holds {member.name!r}, under a link: a path outside the data folder")
    return into.joinpath(*name.parts)


def write_soon(fd: int, start: int, count: int) -> None:
    """The range's dirty pages handed to the disk now, without waiting for them (PostgreSQL's
    pg_flush_data does the same): the kernel would start only at its dirty threshold (a tenth
    of memory), so the restore's `sync -f` before serving would write the whole data folder
    then. Pages still dirty or under writeback stay cached (DONTNEED drops only clean ones)."""
    os.posix_fadvise(fd, start, count, os.POSIX_FADV_DONTNEED)


def _create(path: Path, member: tarfile.TarInfo, owner: RunAs | None) -> int:
    """The member's file made, empty, with its mode and owner; its descriptor, open for writing."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, member.mode & 0o777)
    try:
        _own(fd, member, owner)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _own(target: Path | int, member: tarfile.TarInfo, owner: RunAs | None) -> None:
    os.chmod(target, member.mode & 0o777)
    if owner is not None:
        os.chown(target, owner.uid, owner.gid)


def _copy_piece(
    source: int, offset: int, path: Path, start: int, count: int, stop: threading.Event, deadline: Deadline
) -> None:
    """A piece of a large file, on a thread of its own."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        _copy(source, offset, fd, path, start, count, stop, deadline)
    finally:
        os.close(fd)


def _copy(
    source: int, offset: int, fd: int, path: Path, start: int, count: int, stop: threading.Event, deadline: Deadline
) -> None:
    """`count` bytes from the tar at `offset` into `fd` (the file at `path`) at `start`."""
    try:
        in_kernel = True
        while count > 0:
            if stop.is_set() or deadline.expired():
                return  # extract() raises why
            step = min(count, 16 << 20)
            if in_kernel:
                try:
                    done = os.copy_file_range(source, fd, step, offset, start)
                except OSError as error:
                    # Another filesystem (an NFS repository), an older kernel: fall back to
                    # pread/pwrite, through user space but without a second process.
                    if error.errno not in _NOT_IN_KERNEL:
                        raise
                    in_kernel = False
                    continue
            else:
                done = os.pwrite(fd, os.pread(source, step, offset), start)
            if done == 0:
                raise CommandFailed(f"the base backup ends inside {path.name}: it is cut short")
            write_soon(fd, start, done)
            offset, start, count = offset + done, start + done, count - done
    except OSError as error:
        raise CommandFailed(f"could not write {path}: {error.strerror}") from None
