"""agent/tarstream.py: a tar arriving in chunks (as an S3 object's decompressed stream does)
makes the tree GNU tar makes (long names, files across many chunks, empty files, modes,
links), refuses members outside the folder or of another kind before writing them, fails
clearly on a stream cut or damaged anywhere, prefers the producer's error, and stops at its
deadline."""

import io
import tarfile
from pathlib import Path

import pytest

from agent import tarcopy, tarstream
from agent.commands import Deadline
from agent.errors import CommandFailed
from tests.agent.test_tarcopy import (  # noqa: F401 - source is a fixture
    handed_to_disk,
    sizes,
    source,
    spans,
    tree,
    under_a_link,
)

CHUNK = 100_000  # not a multiple of 512: headers and files straddle chunks


def chunks_of(data: bytes, size: int = CHUNK):
    def produce(out) -> None:
        for start in range(0, len(data), size):
            out.write(data[start : start + size])

    return produce


def crafted(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info, content in members:
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content) if info.isfile() else None)
    return buffer.getvalue()


@pytest.fixture
def into(tmp_path) -> Path:
    folder = tmp_path / "deep" / "into"
    folder.mkdir(parents=True)
    return folder


@pytest.mark.parametrize("size", [CHUNK, 1 << 20, 511])
def test_it_makes_the_tree_gnu_tar_makes(source, into, size):  # noqa: F811
    data, tar = source
    written = tarstream.extract(chunks_of(tar.read_bytes(), size), into, None, Deadline(60))
    assert tree(into) == tree(data)
    files = [path for path in data.rglob("*") if path.is_file() and not path.is_symlink()]
    assert written == sum(path.stat().st_size for path in files)


@pytest.mark.parametrize("write_soon", [1 << 20, 511])
def test_every_byte_it_writes_is_handed_to_the_disk_once(source, into, monkeypatch, write_soon):  # noqa: F811
    """As tarcopy's (tarcopy.write_soon), every WRITE_SOON bytes and at each file's end."""
    monkeypatch.setattr(tarcopy, "WRITE_SOON", write_soon)
    _, tar = source
    ranges = handed_to_disk(monkeypatch)
    tarstream.extract(chunks_of(tar.read_bytes()), into, None, Deadline(60))
    assert spans(ranges, into) == sizes(into)


def test_it_reads_pax_and_gnu_long_names(tmp_path, into):
    long = "d" * 120 + "/" + "f" * 150
    folder = tarfile.TarInfo("d" * 120)
    folder.type, folder.mode = tarfile.DIRTYPE, 0o700
    for form in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=form) as archive:
            archive.addfile(folder)
            info = tarfile.TarInfo(long)
            info.size, info.mode = 3, 0o600
            archive.addfile(info, io.BytesIO(b"abc"))
        target = into / str(form)
        target.mkdir()
        tarstream.extract(chunks_of(buffer.getvalue(), 700), target, None, Deadline(60))
        assert (target / long).read_bytes() == b"abc"


@pytest.mark.parametrize("name", ["../escaped", "/etc/escaped", "base/../../escaped"])
def test_it_refuses_a_member_outside_the_folder_before_writing_it(tmp_path, into, name):
    data = crafted((tarfile.TarInfo(name), b"x"))
    with pytest.raises(CommandFailed, match="a path outside the data folder"):
        tarstream.extract(chunks_of(data), into, None, Deadline(60))
    assert not (tmp_path / "deep" / "escaped").exists() and not (tmp_path / "escaped").exists()
    assert list(into.iterdir()) == []


def test_it_refuses_a_member_under_a_link_the_tar_made(tmp_path, into):
    outside = tmp_path / "outside"
    data = crafted(*under_a_link(outside))
    with pytest.raises(CommandFailed, match="under a link: a path outside the data folder"):
        tarstream.extract(chunks_of(data), into, None, Deadline(60))
    assert list(outside.iterdir()) == []


def test_it_refuses_a_member_of_another_kind(into):
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    with pytest.raises(CommandFailed, match="neither a file, a folder nor a link"):
        tarstream.extract(chunks_of(crafted((fifo, b""))), into, None, Deadline(60))
    assert list(into.iterdir()) == []


def test_a_stream_cut_anywhere_fails(source, tmp_path):  # noqa: F811
    """Inside a file's bytes, inside a header, at a member's end (tarfile alone takes the
    last two for the archive's end)."""
    data, tar = source
    whole = tar.read_bytes()
    with tarfile.open(tar) as archive:
        boundary = archive.getmembers()[3].offset
    for number, cut in enumerate((2 * 1024 * 1024, boundary + 100, boundary)):
        into = tmp_path / f"cut{number}"
        into.mkdir()
        with pytest.raises(CommandFailed, match="cut short"):
            tarstream.extract(chunks_of(whole[:cut]), into, None, Deadline(60))


def test_a_damaged_header_fails(source, tmp_path, into):  # noqa: F811
    data, tar = source
    damaged = bytearray(tar.read_bytes())
    with tarfile.open(tar) as archive:
        damaged[archive.getmembers()[3].offset + 10] ^= 0x40  # its checksum no longer matches
    with pytest.raises(CommandFailed, match="cut short or damaged|not a readable tar"):
        tarstream.extract(chunks_of(bytes(damaged)), into, None, Deadline(60))


def test_the_producers_error_is_raised_rather_than_what_the_extraction_saw(source, into):  # noqa: F811
    data, tar = source
    whole = tar.read_bytes()

    def damaged(out) -> None:
        chunks_of(whole[: len(whole) // 2])(out)
        raise ValueError("the object is damaged")

    with pytest.raises(ValueError, match="the object is damaged"):
        tarstream.extract(damaged, into, None, Deadline(60))


def test_a_failed_extraction_breaks_the_producers_writes(into):
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    data = crafted((fifo, b""))
    told = []

    def produce(out) -> None:
        try:
            while True:
                out.write(data)
        except BrokenPipeError as error:
            told.append(error)
            raise

    with pytest.raises(CommandFailed, match="neither a file, a folder nor a link"):
        tarstream.extract(produce, into, None, Deadline(60))
    assert told


def test_it_stops_at_its_deadline(source, into):  # noqa: F811
    data, tar = source
    deadline = Deadline(60)
    deadline.cancel()
    with pytest.raises(Exception, match="its operation was cancelled"):
        tarstream.extract(chunks_of(tar.read_bytes()), into, None, deadline)
    assert list(into.iterdir()) == []
