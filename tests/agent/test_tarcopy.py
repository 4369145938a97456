"""agent/tarcopy.py: a folder repository's tar extracted by copy_file_range makes the tree GNU
tar makes (long names, files larger than a piece, empty files, modes, links), refuses members
that would land outside the folder or are of another kind, and stops at its deadline."""

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from agent import tarcopy
from agent.commands import Deadline
from agent.errors import CommandFailed


def tree(root: Path) -> dict[str, tuple]:
    """Every path under root: its kind, mode and content (files) or target (links)."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            found[str(path.relative_to(root))] = ("link", os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            found[str(path.relative_to(root))] = ("dir", stat.S_IMODE(info.st_mode))
        else:
            found[str(path.relative_to(root))] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return found


def handed_to_disk(monkeypatch) -> dict[str, list[tuple[int, int]]]:
    """What tarcopy.write_soon is given from now on, by the written file's path: (start, count)."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    real = tarcopy.write_soon

    def record(fd: int, start: int, count: int) -> None:
        ranges.setdefault(os.readlink(f"/proc/self/fd/{fd}"), []).append((start, count))
        real(fd, start, count)

    monkeypatch.setattr(tarcopy, "write_soon", record)
    return ranges


def spans(ranges: dict[str, list[tuple[int, int]]], root: Path) -> dict[str, int]:
    """Each file's ranges, which must follow one another from its start with no gap or overlap,
    as the length they cover."""
    covered = {}
    for path, pieces in ranges.items():
        end = 0
        for start, count in sorted(pieces):
            assert (start, count > 0) == (end, True), (path, sorted(pieces))
            end += count
        covered[str(Path(path).relative_to(root))] = end
    return covered


def sizes(root: Path) -> dict[str, int]:
    """Every file under root with bytes in it, and its size."""
    return {
        str(path.relative_to(root)): path.stat().st_size
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and path.stat().st_size
    }


@pytest.fixture
def source(tmp_path):
    """A data-folder-like tree with what a base backup holds, and its tar by GNU tar."""
    data = tmp_path / "source"
    (data / "base" / "5").mkdir(parents=True, mode=0o700)
    (data / "pg_wal").mkdir(mode=0o700)
    (data / "PG_VERSION").write_text("16\n")
    (data / "base" / "5" / "16384").write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # several pieces
    (data / "base" / "5" / "16385").write_bytes(b"")
    deep = data / ("d" * 120) / ("e" * 120)
    deep.mkdir(parents=True)
    (deep / ("f" * 150)).write_bytes(b"a long name, in a pax or GNU header")
    (data / "postgresql.auto.conf").write_text("# nothing\n")
    (data / "postgresql.auto.conf").chmod(0o640)
    (data / "current").symlink_to("base/5")
    tar = tmp_path / "base.tar"
    subprocess.run(["tar", "-c", "-f", str(tar), "-C", str(data), "."], check=True)
    return data, tar


def test_every_byte_it_writes_is_handed_to_the_disk_once(source, tmp_path, monkeypatch):
    """Written files go to the disk as they are made (tarcopy.write_soon), not all at the
    restore's sync -f before it serves: each byte of each file is handed over exactly once."""
    monkeypatch.setattr(tarcopy, "PIECE", 1 << 20)  # the big file in pieces, on threads
    _, tar = source
    into = tmp_path / "into"
    into.mkdir()
    ranges = handed_to_disk(monkeypatch)
    tarcopy.extract(tar, into, None, Deadline(60))
    assert spans(ranges, into) == sizes(into)


def test_it_makes_the_tree_gnu_tar_makes(source, tmp_path, monkeypatch):
    monkeypatch.setattr(tarcopy, "PIECE", 1 << 20)  # the big file goes in four pieces
    data, tar = source
    into = tmp_path / "into"
    into.mkdir()
    copied = tarcopy.extract(tar, into, None, Deadline(60))
    assert tree(into) == tree(data)
    files = [path for path in data.rglob("*") if path.is_file() and not path.is_symlink()]
    assert copied == sum(path.stat().st_size for path in files)


def test_it_copies_through_user_space_where_the_kernel_will_not(source, tmp_path, monkeypatch):
    """Another filesystem (EXDEV), as an NFS repository beside a local runtime folder is."""

    def refuse(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    data, tar = source
    into = tmp_path / "into"
    into.mkdir()
    tarcopy.extract(tar, into, None, Deadline(60))
    assert tree(into) == tree(data)


def tar_of(tmp_path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    path = tmp_path / "crafted.tar"
    with tarfile.open(path, "w") as archive:
        for info, content in members:
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content) if info.isfile() else None)
    return path


@pytest.mark.parametrize("name", ["../escaped", "/etc/escaped", "base/../../escaped"])
def test_it_refuses_a_member_outside_the_folder(tmp_path, name):
    tar = tar_of(tmp_path, (tarfile.TarInfo(name), b"x"))
    into = tmp_path / "deep" / "into"
    into.mkdir(parents=True)
    with pytest.raises(CommandFailed, match="a path outside the data folder"):
        tarcopy.extract(tar, into, None, Deadline(60))
    assert not (tmp_path / "deep" / "escaped").exists() and not (tmp_path / "escaped").exists()
    assert list(into.iterdir()) == []


def under_a_link(outside: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    """A folder, a link in it to `outside` (made, empty), and a file under that link."""
    outside.mkdir()
    folder = tarfile.TarInfo("pg_tblspc")
    folder.type = tarfile.DIRTYPE
    link = tarfile.TarInfo("pg_tblspc/16384")
    link.type, link.linkname = tarfile.SYMTYPE, str(outside)
    return [(folder, b""), (link, b""), (tarfile.TarInfo("pg_tblspc/16384/planted"), b"x")]


def test_it_refuses_a_member_under_a_link_the_tar_made(tmp_path):
    outside = tmp_path / "outside"
    tar = tar_of(tmp_path, *under_a_link(outside))
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(CommandFailed, match="'pg_tblspc/16384/planted', under a link: a path outside the data folder"):
        tarcopy.extract(tar, into, None, Deadline(60))
    assert list(outside.iterdir()) == []


def test_it_refuses_a_member_of_another_kind(tmp_path):
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    tar = tar_of(tmp_path, (fifo, b""))
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(CommandFailed, match="neither a file, a folder nor a link"):
        tarcopy.extract(tar, into, None, Deadline(60))


def test_it_says_a_cut_short_tar_is_cut_short(source, tmp_path):
    data, tar = source
    cut = tmp_path / "cut.tar"
    cut.write_bytes(tar.read_bytes()[: 2 * 1024 * 1024])  # inside the big file's bytes
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(CommandFailed, match="cut short|not a readable tar"):
        tarcopy.extract(cut, into, None, Deadline(60))


def test_a_tar_cut_at_a_header_or_at_a_members_end_fails(source, tmp_path):
    """tarfile alone takes both for the archive's end."""
    data, tar = source
    whole = tar.read_bytes()
    with tarfile.open(tar) as archive:
        boundary = archive.getmembers()[3].offset
    for number, cut in enumerate((boundary + 100, boundary)):
        short = tmp_path / f"cut{number}.tar"
        short.write_bytes(whole[:cut])
        into = tmp_path / f"cut{number}"
        into.mkdir()
        with pytest.raises(CommandFailed, match=f"cut short or damaged after {boundary} bytes"):
            tarcopy.extract(short, into, None, Deadline(60))


def test_a_damaged_header_fails(source, tmp_path):
    data, tar = source
    damaged = bytearray(tar.read_bytes())
    with tarfile.open(tar) as archive:
        offset = archive.getmembers()[3].offset
    damaged[offset + 10] ^= 0x40  # its checksum no longer matches
    broken = tmp_path / "damaged.tar"
    broken.write_bytes(bytes(damaged))
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(CommandFailed, match=f"cut short or damaged after {offset} bytes"):
        tarcopy.extract(broken, into, None, Deadline(60))


def test_it_stops_at_its_deadline(source, tmp_path):
    data, tar = source
    into = tmp_path / "into"
    into.mkdir()
    deadline = Deadline(60)
    deadline.cancel()
    with pytest.raises(Exception, match="its operation was cancelled"):
        tarcopy.extract(tar, into, None, deadline)
    assert list(into.iterdir()) == []
