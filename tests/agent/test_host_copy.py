"""The host's copy of the newest base backup beside its repository, S3 or a folder (agent.hostcopy), kept
extracted: a restore in place takes it (moves it into place) and fetches only the WAL, a clone
on the host copies it; a verify and a restore on another host read the repository; a copy
whose files no longer match its record is forgotten and the repository read; a copy never
fails a backup, never fills the disk, and only a complete one counts.

The Writer's own rules run in process, on real tars and files (a tmpfs for a real full disk);
the rest on a real agent, clusters and SeaweedFS."""

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from agent import hostcopy
from agent.commands import Deadline
from agent.repository import Spec
from tests.agent.backup_helpers import archive_everything, finished, labels
from tests.agent.test_backups import backed_up, protected, provision, runtime_toml, stored_base
from tests.stack import free_port_range

SPEC = Spec(url="s3://bucket/prefix", endpoint="http://127.0.0.1:9")
FILES = {"PG_VERSION": b"16\n", "base/1/1259": b"p" * 20_000, "global/pg_control": b"c" * 8192}


def copies_of(root: Path, ref: str) -> Path:
    return root / ref / ".berth-pg" / hostcopy.FOLDER


def tar_of(files: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    """A base backup's tar holding `files` (and symbolic `links`, name to target)."""
    out = io.BytesIO()
    folders = sorted({str(parent) for name in [*files, *(links or {})] for parent in Path(name).parents} - {"."})
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in folders:  # as pg_basebackup's: each folder before what it holds
            member = tarfile.TarInfo(name)
            member.type, member.mode = tarfile.DIRTYPE, 0o700
            tar.addfile(member)
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size, member.mode = len(data), 0o600
            tar.addfile(member, io.BytesIO(data))
        for name, target in (links or {}).items():
            member = tarfile.TarInfo(name)
            member.type, member.linkname = tarfile.SYMTYPE, target
            tar.addfile(member)
    return out.getvalue()


def write_copy(folder: Path, backup_id: str, data: bytes, keep: bool = True) -> str | None:
    """`data` streamed through a Writer as a backup's tar; what keep said (None: not kept)."""
    with hostcopy.Writer(folder, backup_id, None, Deadline(60)) as writer:
        reader = writer.tee(io.BytesIO(data))
        assert b"".join(iter(lambda: reader.read(4096), b"")) == data, "the stream goes on whole"
        return writer.keep(SPEC, "db1", len(data), "7001") if keep else None


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.fixture
def small_disk():
    """A folder on a 4 MiB tmpfs of its own: a host disk that fills."""
    folder = Path(tempfile.mkdtemp(prefix="bat-copy-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)
    shutil.rmtree(folder, ignore_errors=True)


def test_a_kept_copy_holds_the_backups_files_and_is_found_only_for_its_backup_and_repository(tmp_path):
    folder, data = tmp_path / "copies", tar_of(FILES, links={"pg_tblspc/16400": "/elsewhere"})
    assert write_copy(folder, "20261207T100000Z", data) == "a copy kept on this host"
    assert (folder.stat().st_mode & 0o777) == 0o700
    assert names(folder) == ["20261207T100000Z", hostcopy.RECORD]

    found = hostcopy.find(folder, SPEC, "db1", "20261207T100000Z", len(data), "7001")
    assert found == folder / "20261207T100000Z"
    assert {name: (found / name).read_bytes() for name in FILES} == FILES
    assert os.readlink(found / "pg_tblspc/16400") == "/elsewhere"
    for other in (
        (SPEC, "db1", "20261207T090000Z", len(data), "7001"),  # another backup
        (Spec(url="s3://other/prefix", endpoint=SPEC.endpoint), "db1", "20261207T100000Z", len(data), "7001"),
        (Spec(url=SPEC.url, endpoint="http://elsewhere:9000"), "db1", "20261207T100000Z", len(data), "7001"),
        (SPEC, "db2", "20261207T100000Z", len(data), "7001"),  # another stanza
        (SPEC, "db1", "20261207T100000Z", len(data) + 512, "7001"),  # another size
        (SPEC, "db1", "20261207T100000Z", len(data), "7002"),  # another cluster
    ):
        assert hostcopy.find(folder, *other) is None, other
    assert hostcopy.find(folder, SPEC, "db1", "20261207T100000Z", len(data), "7001") == found, "and kept"


@pytest.mark.parametrize(
    "damage",
    [
        lambda copy: (copy / "base/1/1259").unlink(),  # a file gone
        lambda copy: os.truncate(copy / "base/1/1259", 100),  # a file cut
        lambda copy: (copy / "base/1/2600").write_bytes(b"x"),  # a file added
    ],
    ids=["gone", "cut", "added"],
)
def test_a_copy_whose_files_no_longer_match_its_record_is_forgotten(tmp_path, damage):
    folder, data = tmp_path / "copies", tar_of(FILES)
    write_copy(folder, "20261207T100000Z", data)
    damage(folder / "20261207T100000Z")

    assert hostcopy.find(folder, SPEC, "db1", "20261207T100000Z", len(data), "7001") is None
    assert names(folder) == []


def test_taking_a_copy_moves_it_into_place_and_its_record_goes_first(tmp_path):
    folder, data = tmp_path / "copies", tar_of(FILES)
    write_copy(folder, "20261207T100000Z", data)
    copy = hostcopy.find(folder, SPEC, "db1", "20261207T100000Z", len(data), "7001")
    into = tmp_path / "restore" / "data"
    into.mkdir(parents=True)

    hostcopy.take(copy, into)
    assert {name: (into / name).read_bytes() for name in FILES} == FILES
    assert names(folder) == []
    assert hostcopy.find(folder, SPEC, "db1", "20261207T100000Z", len(data), "7001") is None


def test_a_new_copy_replaces_the_older_only_once_complete(tmp_path):
    folder, older, newer = tmp_path / "copies", tar_of(FILES), tar_of({**FILES, "PG_VERSION": b"17\n"})
    write_copy(folder, "20261207T100000Z", older)
    write_copy(folder, "20261207T110000Z", newer, keep=False)  # that backup failed
    assert names(folder) == ["20261207T100000Z", hostcopy.RECORD]
    assert hostcopy.find(folder, SPEC, "db1", "20261207T100000Z", len(older), "7001") is not None

    write_copy(folder, "20261207T120000Z", newer)
    assert names(folder) == ["20261207T120000Z", hostcopy.RECORD]
    assert json.loads((folder / hostcopy.RECORD).read_text())["id"] == "20261207T120000Z"
    assert hostcopy.find(folder, SPEC, "db1", "20261207T100000Z", len(older), "7001") is None


def test_a_copy_an_interrupted_backup_left_half_written_goes_when_the_next_begins(tmp_path):
    folder, data = tmp_path / "copies", tar_of(FILES)
    write_copy(folder, "20261207T100000Z", data)
    (folder / "20261207T110000Z" / "base").mkdir(parents=True)  # the agent was killed mid-backup
    (folder / "20261207T110000Z" / "base" / "1").write_bytes(b"b" * 1000)
    (folder / "20261207T090000Z.tar").write_bytes(b"t" * 1000)  # a copy as an older agent kept it

    with hostcopy.Writer(folder, "20261207T120000Z", None, Deadline(60)):
        assert names(folder) == [
            "20261207T100000Z",  # the kept copy stays until a new one is complete
            "20261207T120000Z",
            hostcopy.RECORD,
        ]
    assert hostcopy.find(folder, SPEC, "db1", "20261207T100000Z", len(data), "7001") is not None


def test_forgetting_a_copy_leaves_a_newer_one_kept_meanwhile(tmp_path):
    folder, data = tmp_path / "copies", tar_of(FILES)
    write_copy(folder, "20261207T100000Z", data)
    old = hostcopy.find(folder, SPEC, "db1", "20261207T100000Z", len(data), "7001")
    write_copy(folder, "20261207T120000Z", data)  # the source's next backup, while a clone read
    hostcopy.forget(old, "could not be copied")
    assert hostcopy.find(folder, SPEC, "db1", "20261207T120000Z", len(data), "7001") is not None

    hostcopy.forget(folder / "20261207T120000Z", "gone")
    assert names(folder) == []


def test_a_link_in_place_of_the_folder_is_neither_written_nor_read(tmp_path):
    """The server's user owns the folder the copy lies in: a link it put there in place of the
    copy's folder must not make the agent change the mode of, or remove files in, another."""
    elsewhere, data = tmp_path / "elsewhere", tar_of(FILES)
    write_copy(elsewhere, "20261207T100000Z", data)
    (elsewhere / "kept.tar").write_bytes(b"k")
    elsewhere.chmod(0o755)
    folder = tmp_path / "copies"
    folder.symlink_to(elsewhere)

    said = write_copy(folder, "20261207T120000Z", data)
    assert said.startswith("no host copy (could not write ")
    assert said.endswith(f"{folder} is not a folder of the agent's own)")
    assert names(elsewhere) == ["20261207T100000Z", hostcopy.RECORD, "kept.tar"]
    assert (elsewhere.stat().st_mode & 0o777) == 0o755
    assert hostcopy.find(folder, SPEC, "db1", "20261207T100000Z", len(data), "7001") is None


def test_a_tar_cut_short_is_not_kept(tmp_path):
    folder, data = tmp_path / "copies", tar_of(FILES)
    cut = data[:10_000]
    with hostcopy.Writer(folder, "20261207T100000Z", None, Deadline(60)) as writer:
        reader = writer.tee(io.BytesIO(cut))
        assert b"".join(iter(lambda: reader.read(4096), b"")) == cut
        said = writer.keep(SPEC, "db1", len(data), "7001")
    assert said.startswith(f"no host copy (could not keep {folder / '20261207T100000Z'}: the base backup ")
    assert "cut short" in said
    assert names(folder) == []


def test_a_tar_the_extraction_refuses_gets_no_copy_and_the_stream_goes_on(tmp_path):
    folder, data = tmp_path / "copies", tar_of({**FILES, "../outside": b"o" * 1000})
    said = write_copy(folder, "20261207T100000Z", data)
    assert said.startswith(f"no host copy (could not extract {folder / '20261207T100000Z'}: ")
    assert "a path outside the data folder" in said
    assert names(folder) == []
    assert not (tmp_path / "outside").exists()


def test_a_disk_that_would_keep_under_its_reserve_gets_no_copy_and_the_stream_goes_on(small_disk):
    # 4 MiB free is under the reserve once the next CHECK_BYTES would be written: not begun.
    said = write_copy(small_disk / "copies", "20261207T100000Z", tar_of(FILES))
    assert said.startswith("no host copy (the host's disk keeps ")
    assert names(small_disk / "copies") == []


def test_a_disk_that_fills_while_the_copy_is_written_drops_it_and_the_stream_goes_on(small_disk, monkeypatch):
    monkeypatch.setattr(hostcopy, "RESERVE", 0.0)
    monkeypatch.setattr(hostcopy, "CHECK_BYTES", 0)
    data = tar_of({"base/1/big": os.urandom(6 << 20)})  # more than the tmpfs holds: a real ENOSPC part way
    said = write_copy(small_disk / "copies", "20261207T100000Z", data)
    assert "No space left on device" in said, said
    assert said.startswith("no host copy (could not "), said
    assert names(small_disk / "copies") == []


def the_copy(root: Path, ref: str) -> Path:
    (copy,) = (path for path in copies_of(root, ref).iterdir() if path.is_dir())
    return copy


def test_a_clone_copies_the_hosts_copy_and_a_restore_in_place_takes_it(agent, make_repository):
    client, ref, repository = agent.client(deadline=60), "copy16db", make_repository("s3")
    port = backed_up(client, ref, repository, 4)
    assert "a copy kept on this host" in client.backup_job(ref).detail
    store, backup, _ = stored_base(client, repository, ref)
    # The repository's tar gone: only the host's copy can give the base backup.
    store.delete([f"base/{backup.id}/base.tar.zst"])

    # A clone on this host, into a new project, copies it: its source keeps it.
    clone_port = free_port_range(1)
    client.put_files("copy16clone", [runtime_toml(16, clone_port)])
    client.restore_start("copy16clone", repository, source_ref=ref)
    cloned = finished(client, "copy16clone")
    assert cloned.state == "succeeded", cloned.error
    assert f"base backup {backup.id} (this host's copy)" in cloned.detail
    assert labels(clone_port) == {"before backup": 10, "after backup": 4}
    assert the_copy(agent.root, ref).name == backup.id

    # A restore in place takes it: moved into place, never found again.
    client.restore_start(ref, repository)
    job = finished(client, ref)
    assert (job.kind, job.state) == ("restore", "succeeded"), job.error
    assert f"base backup {backup.id} (this host's copy)" in job.detail
    assert labels(port) == {"before backup": 10, "after backup": 4}
    assert list(copies_of(agent.root, ref).iterdir()) == []

    # A verify checks the repository, not the copy: with the object gone, it fails.
    client.verify_start(ref, repository)
    verified = finished(client, "copy16db")
    assert (verified.kind, verified.state, verified.error.code) == ("verify", "failed", "repository"), verified.error
    assert f"base/{backup.id}/base.tar" in verified.error.message


def test_a_host_copy_whose_files_changed_is_forgotten_and_the_restore_reads_the_repository(agent, make_repository):
    client, ref, repository = agent.client(deadline=60), "copybad16db", make_repository("s3")
    port = backed_up(client, ref, repository, 4)
    (the_copy(agent.root, ref) / "PG_VERSION").unlink()
    store, backup, _ = stored_base(client, repository, ref)
    key = f"base/{backup.id}/base.tar.zst"
    with store.open(key) as source:
        whole = source.read()

    # The repository's object cut short as well: nothing to restore from, the old data serves.
    store.put(key, io.BytesIO(whole[: len(whole) // 2]))
    client.restore_start(ref, repository)
    failed = finished(client, ref)
    assert (failed.state, failed.error.code) == ("failed", "restore_failed"), failed.error
    assert failed.error.message.startswith(f"the base backup {key} in the repository is damaged: ")
    assert labels(port) == {"before backup": 10, "after backup": 4}
    assert client.status(ref).state == "running"
    assert list(copies_of(agent.root, ref).iterdir()) == [], "forgotten: no restore tries it again"

    store.put(key, io.BytesIO(whole))
    client.restore_start(ref, repository)
    job = finished(client, ref)
    assert job.state == "succeeded", job.error
    assert "this host's copy" not in job.detail
    assert labels(port) == {"before backup": 10, "after backup": 4}


def test_a_host_copy_that_cannot_be_moved_into_place_is_forgotten_and_the_repository_read(agent, make_repository):
    """The copy on a filesystem of its own (a tmpfs mounted on its folder): the rename that
    takes it fails, and the restore reads the repository."""
    client, ref, repository = agent.client(deadline=60), "copymnt16db", make_repository("s3")
    port = backed_up(client, ref, repository, 4)
    copy = the_copy(agent.root, ref)
    aside = copy.with_name("aside")
    copy.rename(aside)
    copy.mkdir(mode=0o700)
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(copy)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        subprocess.run(["cp", "-a", f"{aside}/.", str(copy)], check=True)
        shutil.rmtree(aside)

        client.restore_start(ref, repository)
        job = finished(client, ref)
        assert job.state == "succeeded", job.error
        assert "(this host's copy failed: the repository's)" in job.detail
        assert labels(port) == {"before backup": 10, "after backup": 4}
        assert not (copies_of(agent.root, ref) / hostcopy.RECORD).exists(), "forgotten"
    finally:
        subprocess.run(["umount", "-l", str(copy)], check=True)


def test_a_restore_on_another_host_reads_the_repository(agent_factory, make_repository):
    first, second = agent_factory(), agent_factory()
    client, ref, repository = first.client(deadline=60), "copyaway16db", make_repository("s3")
    port = provision(client, ref, 16)
    protected(client, ref, port, repository)
    archive_everything(client, ref, port)

    other = second.client(deadline=60)
    other_port = free_port_range(1)
    other.put_files("copyaway16b", [runtime_toml(16, other_port)])
    other.restore_start("copyaway16b", repository, source_ref=ref)
    job = finished(other, "copyaway16b")
    assert job.state == "succeeded", job.error
    assert "this host's copy" not in job.detail
    assert labels(other_port) == {"before backup": 10}


def test_a_folder_repository_keeps_a_host_copy_too(agent, make_repository):
    """A folder repository's tar would be written out again by a restore (over NFS, read at the
    network's speed first): the host keeps the files beside it as beside S3."""
    client, ref, repository = agent.client(deadline=60), "copyfile16db", make_repository("file")
    port = backed_up(client, ref, repository, 4)
    assert "a copy kept on this host" in client.backup_job(ref).detail
    store, backup, _ = stored_base(client, repository, ref)
    store.delete([f"base/{backup.id}/base.tar"])

    client.restore_start(ref, repository)
    job = finished(client, ref)
    assert job.state == "succeeded", job.error
    assert f"base backup {backup.id} (this host's copy)" in job.detail
    assert labels(port) == {"before backup": 10, "after backup": 4}
    assert list(copies_of(agent.root, ref).iterdir()) == []
