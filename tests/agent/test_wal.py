"""agent/wal.py's push, as PostgreSQL runs it (`archive_command` in the data folder): it stores
the segment asked for, and the completed segments waiting after it, ahead; the calls for those
return at once, and never skip what the runtime's current repository lacks."""

from pathlib import Path

import pytest

from agent import wal
from agent.repository import PUSHED, Spec

SYSTEM_ID = "7716154941508943891"
SEGMENTS = [f"00000001000000000000000{n}" for n in range(1, 5)]


@pytest.fixture
def cluster(tmp_path):
    """A data folder whose pg_wal holds four completed segments waiting to be archived."""
    data = tmp_path / "data"
    status = data / "pg_wal" / "archive_status"
    status.mkdir(parents=True)
    for number, segment in enumerate(SEGMENTS):
        (data / "pg_wal" / segment).write_bytes(bytes([number]) * 4096)
        (status / f"{segment}.ready").touch()
    (status / "00000002.history.ready").touch()  # another kind of file: never stored ahead
    (status / "000000010000000000000000.done").touch()  # already archived
    return data


def point_at(tmp_path, folder: str) -> Path:
    (tmp_path / folder).mkdir(exist_ok=True)
    spec_file = tmp_path / "backup" / "repository.json"
    spec_file.parent.mkdir(exist_ok=True)
    Spec(url=f"file://{tmp_path / folder}").save(spec_file, "ref1")
    return spec_file


def push(spec_file: Path, data: Path, segment: str) -> int:
    return wal.main(["push", str(spec_file), SYSTEM_ID, str(data / "pg_wal" / segment), segment])


def stored(tmp_path, folder: str) -> dict[str, bytes]:
    where = tmp_path / folder / "ref1" / "wal" / SYSTEM_ID
    return {path.name: path.read_bytes() for path in where.iterdir()} if where.exists() else {}


def test_one_call_stores_the_segments_waiting_after_it_and_theirs_return_at_once(tmp_path, cluster):
    spec_file = point_at(tmp_path, "repo")
    assert push(spec_file, cluster, SEGMENTS[0]) == 0
    assert stored(tmp_path, "repo") == {segment: (cluster / "pg_wal" / segment).read_bytes() for segment in SEGMENTS}
    markers = sorted(path.name for path in (spec_file.parent / PUSHED).iterdir())
    assert markers == [f"{SYSTEM_ID}-{segment}" for segment in SEGMENTS[1:]]

    (tmp_path / "repo" / "ref1" / "wal" / SYSTEM_ID / SEGMENTS[1]).unlink()
    assert push(spec_file, cluster, SEGMENTS[1]) == 0  # its marker: stored ahead, not stored again
    assert SEGMENTS[1] not in stored(tmp_path, "repo")
    assert not (spec_file.parent / PUSHED / f"{SYSTEM_ID}-{SEGMENTS[1]}").exists(), "a marker serves once"


def test_a_marker_of_another_repository_is_ignored(tmp_path, cluster):
    spec_file = point_at(tmp_path, "old")
    assert push(spec_file, cluster, SEGMENTS[0]) == 0
    spec_file = point_at(tmp_path, "new")  # the runtime now archives elsewhere
    assert push(spec_file, cluster, SEGMENTS[2]) == 0
    assert SEGMENTS[2] in stored(tmp_path, "new"), "the new repository lacked it: stored, marker or not"


def test_only_what_is_stored_gets_a_marker(tmp_path, cluster):
    spec_file = point_at(tmp_path, "repo")
    (cluster / "pg_wal" / SEGMENTS[2]).unlink()  # waiting, but unreadable: its own call will fail and retry
    assert push(spec_file, cluster, SEGMENTS[0]) == 0
    assert sorted(path.name for path in (spec_file.parent / PUSHED).iterdir()) == [
        f"{SYSTEM_ID}-{SEGMENTS[1]}",
        f"{SYSTEM_ID}-{SEGMENTS[3]}",
    ]
    assert push(spec_file, cluster, SEGMENTS[2]) == 1, "the segment asked for must be stored, or the call fails"
