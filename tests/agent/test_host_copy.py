"""The host's copy of the newest base backup beside an S3 repository (agent.hostcopy): a restore
in place and a clone on the host extract it instead of the repository's object; a verify and a
restore on another host read the repository; a damaged copy is forgotten and the repository
read; a copy never fails a backup, never fills the disk, and only a complete one counts.

The Writer's own rules run in process, on real files (a tmpfs for a real full disk); the
rest on a real agent, clusters and SeaweedFS."""

import io
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from agent import hostcopy
from agent.repository import Spec
from tests.agent.backup_helpers import archive_everything, finished, labels
from tests.agent.test_backups import backed_up, protected, provision, runtime_toml, stored_base
from tests.stack import free_port_range

SPEC = Spec(url="s3://bucket/prefix", endpoint="http://127.0.0.1:9")


def copies_of(root: Path, ref: str) -> Path:
    return root / ref / ".berth-pg" / hostcopy.FOLDER


def write_copy(folder: Path, backup_id: str, data: bytes, keep: bool = True) -> str | None:
    """`data` streamed through a Writer as a backup's tar; what keep said (None: not kept)."""
    with hostcopy.Writer(folder, backup_id) as writer:
        reader = writer.tee(io.BytesIO(data))
        assert b"".join(iter(lambda: reader.read(1 << 20), b"")) == data, "the stream goes on whole"
        return writer.keep(SPEC, "db1", len(data), "7001") if keep else None


@pytest.fixture
def small_disk():
    """A folder on a 4 MiB tmpfs of its own: a host disk that fills."""
    folder = Path(tempfile.mkdtemp(prefix="bat-copy-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)
    shutil.rmtree(folder, ignore_errors=True)


def test_a_kept_copy_is_found_only_for_its_backup_repository_and_size(tmp_path):
    folder = tmp_path / "copies"
    assert write_copy(folder, "20261207T100000Z", b"t" * 5000) == "a copy kept on this host"
    assert (folder.stat().st_mode & 0o777) == 0o700

    found = hostcopy.find(folder, SPEC, "db1", "20261207T100000Z", 5000, "7001")
    assert found == folder / "20261207T100000Z.tar"
    assert found.read_bytes() == b"t" * 5000
    for other in (
        (SPEC, "db1", "20261207T090000Z", 5000, "7001"),  # another backup
        (Spec(url="s3://other/prefix", endpoint=SPEC.endpoint), "db1", "20261207T100000Z", 5000, "7001"),
        (Spec(url=SPEC.url, endpoint="http://elsewhere:9000"), "db1", "20261207T100000Z", 5000, "7001"),
        (SPEC, "db2", "20261207T100000Z", 5000, "7001"),  # another stanza
        (SPEC, "db1", "20261207T100000Z", 5001, "7001"),  # another size
        (SPEC, "db1", "20261207T100000Z", 5000, "7002"),  # another cluster
    ):
        assert hostcopy.find(folder, *other) is None, other

    with open(found, "r+b") as tar:  # cut short after it was kept
        tar.truncate(4000)
    assert hostcopy.find(folder, SPEC, "db1", "20261207T100000Z", 5000, "7001") is None


def test_a_new_copy_replaces_the_older_only_once_complete(tmp_path):
    folder = tmp_path / "copies"
    write_copy(folder, "20261207T100000Z", b"a" * 3000)
    write_copy(folder, "20261207T110000Z", b"b" * 4000, keep=False)  # that backup failed
    assert sorted(path.name for path in folder.iterdir()) == ["20261207T100000Z.tar", hostcopy.RECORD]
    assert hostcopy.find(folder, SPEC, "db1", "20261207T100000Z", 3000, "7001") is not None

    write_copy(folder, "20261207T120000Z", b"c" * 4000)
    assert sorted(path.name for path in folder.iterdir()) == ["20261207T120000Z.tar", hostcopy.RECORD]
    assert json.loads((folder / hostcopy.RECORD).read_text())["id"] == "20261207T120000Z"
    assert hostcopy.find(folder, SPEC, "db1", "20261207T100000Z", 3000, "7001") is None


def test_a_copy_an_interrupted_backup_left_half_written_goes_when_the_next_begins(tmp_path):
    folder = tmp_path / "copies"
    write_copy(folder, "20261207T100000Z", b"a" * 3000)
    (folder / "20261207T110000Z.tar").write_bytes(b"b" * 1000)  # the agent was killed mid-backup

    with hostcopy.Writer(folder, "20261207T120000Z"):
        assert sorted(path.name for path in folder.iterdir()) == [
            "20261207T100000Z.tar",  # the kept copy stays until a new one is complete
            "20261207T120000Z.tar",
            hostcopy.RECORD,
        ]
    assert hostcopy.find(folder, SPEC, "db1", "20261207T100000Z", 3000, "7001") is not None


def test_forgetting_a_copy_leaves_a_newer_one_kept_meanwhile(tmp_path):
    folder = tmp_path / "copies"
    write_copy(folder, "20261207T100000Z", b"a" * 3000)
    old = hostcopy.find(folder, SPEC, "db1", "20261207T100000Z", 3000, "7001")
    write_copy(folder, "20261207T120000Z", b"c" * 4000)  # the source's next backup, while a clone read
    hostcopy.forget(old, "a header garbled")
    assert hostcopy.find(folder, SPEC, "db1", "20261207T120000Z", 4000, "7001") is not None

    hostcopy.forget(folder / "20261207T120000Z.tar", "gone")
    assert list(folder.iterdir()) == []


def test_a_link_in_place_of_the_folder_is_neither_written_nor_read(tmp_path):
    """The server's user owns the folder the copy lies in: a link it put there in place of the
    copy's folder must not make the agent change the mode of, or remove files in, another."""
    elsewhere = tmp_path / "elsewhere"
    write_copy(elsewhere, "20261207T100000Z", b"a" * 3000)
    (elsewhere / "kept.tar").write_bytes(b"k")
    elsewhere.chmod(0o755)
    folder = tmp_path / "copies"
    folder.symlink_to(elsewhere)

    said = write_copy(folder, "20261207T120000Z", b"c" * 4000)
    assert said.startswith("no host copy (could not write ")
    assert said.endswith(f"{folder} is not a folder of the agent's own)")
    assert sorted(path.name for path in elsewhere.iterdir()) == ["20261207T100000Z.tar", hostcopy.RECORD, "kept.tar"]
    assert (elsewhere.stat().st_mode & 0o777) == 0o755
    assert hostcopy.find(folder, SPEC, "db1", "20261207T100000Z", 3000, "7001") is None


def test_a_stream_that_ends_short_of_the_tars_size_is_not_kept(tmp_path):
    folder = tmp_path / "copies"
    with hostcopy.Writer(folder, "20261207T100000Z") as writer:
        reader = writer.tee(io.BytesIO(b"x" * 100))
        reader.read(1000)
        said = writer.keep(SPEC, "db1", 5000, "7001")
    assert (
        said
        == "no host copy (could not keep "
        + str(folder / "20261207T100000Z.tar")
        + ": 100 bytes written of the tar's 5000)"
    )
    assert list(folder.iterdir()) == []


def test_a_disk_that_would_keep_under_its_reserve_gets_no_copy_and_the_stream_goes_on(small_disk):
    # 4 MiB free is under the reserve once the next CHECK_BYTES would be written: not begun.
    said = write_copy(small_disk / "copies", "20261207T100000Z", b"d" * 3000)
    assert said.startswith("no host copy (the host's disk keeps ")
    assert list((small_disk / "copies").iterdir()) == []


def test_a_disk_that_fills_while_the_copy_is_written_drops_it_and_the_stream_goes_on(small_disk, monkeypatch):
    monkeypatch.setattr(hostcopy, "RESERVE", 0.0)
    monkeypatch.setattr(hostcopy, "CHECK_BYTES", 0)
    data = os.urandom(6 << 20)  # more than the tmpfs holds: a real ENOSPC part way
    said = write_copy(small_disk / "copies", "20261207T100000Z", data)
    assert said.endswith(": No space left on device)"), said
    assert list((small_disk / "copies").iterdir()) == []


def test_a_restore_in_place_extracts_the_hosts_copy_and_fetches_only_the_wal(agent, make_repository):
    client, ref, repository = agent.client(deadline=60), "copy16db", make_repository("s3")
    port = backed_up(client, ref, repository, 4)
    assert "a copy kept on this host" in client.backup_job(ref).detail
    store, backup, _ = stored_base(client, repository, ref)
    # The repository's tar gone: only the host's copy can give the base backup.
    store.delete([f"base/{backup.id}/base.tar.zst"])

    client.restore_start(ref, repository)
    job = finished(client, ref)
    assert (job.kind, job.state) == ("restore", "succeeded"), job.error
    assert f"base backup {backup.id} (this host's copy)" in job.detail
    assert labels(port) == {"before backup": 10, "after backup": 4}

    # A clone on this host, into a new project, reads it too.
    clone_port = free_port_range(1)
    client.put_files("copy16clone", [runtime_toml(16, clone_port)])
    client.restore_start("copy16clone", repository, source_ref=ref)
    cloned = finished(client, "copy16clone")
    assert cloned.state == "succeeded", cloned.error
    assert "(this host's copy)" in cloned.detail
    assert labels(clone_port) == {"before backup": 10, "after backup": 4}

    # A verify checks the repository, not the copy: with the object gone, it fails.
    client.verify_start(ref, repository)
    verified = finished(client, "copy16db")
    assert (verified.kind, verified.state, verified.error.code) == ("verify", "failed", "repository"), verified.error
    assert f"base/{backup.id}/base.tar" in verified.error.message


def test_a_damaged_host_copy_is_forgotten_and_the_restore_reads_the_repository(agent, make_repository):
    client, ref, repository = agent.client(deadline=60), "copybad16db", make_repository("s3")
    port = backed_up(client, ref, repository, 4)
    folder = copies_of(agent.root, ref)
    (tar,) = folder.glob("*.tar")
    with open(tar, "r+b") as damaged:  # its first header garbled, its size kept
        damaged.write(b"\xff" * 512)
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
    assert "this host's copy failed" in failed.detail
    assert labels(port) == {"before backup": 10, "after backup": 4}
    assert client.status(ref).state == "running"
    assert list(folder.iterdir()) == [], "forgotten: no restore tries it again"

    store.put(key, io.BytesIO(whole))
    client.restore_start(ref, repository)
    job = finished(client, ref)
    assert job.state == "succeeded", job.error
    assert "this host's copy" not in job.detail
    assert labels(port) == {"before backup": 10, "after backup": 4}


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


def test_a_folder_repository_keeps_no_host_copy(agent, make_repository):
    client, ref, repository = agent.client(deadline=60), "copyfile16db", make_repository("file")
    port = provision(client, ref, 16)
    protected(client, ref, port, repository)
    assert "host copy" not in client.backup_job(ref).detail
    assert not copies_of(agent.root, ref).exists()
