"""Backups on a real agent with real clusters (process driver) of 15 (Debian's), 16 and 17
(pgbin/), into a real S3-compatible store (SeaweedFS, scripts/s3) and a file:// folder: WAL
archiving, base backups, point-in-time restore in place and onto another host's runtime after
the first host's folder is gone, restores that fail leaving the old data serving, verify,
prune, the archiver's own failure reason, a full repository, a backup whose WAL cannot be
archived, a new cluster in the same stanza (a major upgrade), a docker runtime with no
database refused, and S3's zstd-compressed base backups: one stored plain before Berth
compressed still restores, a corrupt or cut one fails the restore clearly.
"""

import contextlib
import io
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import msgspec
import psycopg
import pytest

from agent import hostcopy, zstdio
from agent.api import BackupInfo, FileSpec, Repository
from agent.backups import spec_of
from agent.client import AgentClient, AgentError
from agent.drivers.process import shutting_down
from agent.repository import Store, open_store
from tests.agent.backup_helpers import PASSWORD, archive_everything, connect, finished, insert, labels
from tests.agent_fixtures import postgres_path_with_pg_ctl_in_front, start_agent, stop_clusters, tool_in_front
from tests.stack import free_port_range, wait_for


def runtime_toml(major: int, port: int, password: str = PASSWORD) -> FileSpec:
    text = f'driver = "process"\n\n[postgres]\nmajor = {major}\nport = {port}\npassword = "{password}"\n'
    return FileSpec("runtime.toml", text.encode())


def provision(client, ref: str, major: int, password: str = PASSWORD) -> int:
    port = free_port_range(1)
    client.put_files(ref, [runtime_toml(major, port, password)])
    client.up(ref)
    return port


def protected(client, ref: str, port: int, repository: Repository) -> None:
    """Archiving on, a row set, a base backup."""
    status = client.backup_archiving(ref, repository, archive_timeout_s=5)
    assert (status.enabled, status.restarted) == (True, True)
    insert(port, "before backup", 10)
    assert client.backup_start(ref, repository).state == "running"
    job = finished(client, ref)
    assert (job.kind, job.state) == ("base_backup", "succeeded"), job.error


def backed_up(client, ref: str, repository: Repository, rows_after: int, major: int = 16) -> int:
    """A runtime `protected` (10 rows "before backup"), then `rows_after` rows "after backup"
    archived; its port."""
    port = provision(client, ref, major)
    protected(client, ref, port, repository)
    insert(port, "after backup", rows_after)
    archive_everything(client, ref, port)
    return port


@contextlib.contextmanager
def agent_with_pg_ctl_in_front(agent_factory, args: str, then: str):
    """An agent whose PostgreSQL 16 has a pg_ctl in front of the real one
    (postgres_path_with_pg_ctl_in_front); yields it and the file that arms `then` once."""
    bindir, postgres_path, once = postgres_path_with_pg_ctl_in_front(16, args, then)
    try:
        yield agent_factory(env={"BERTH_AGENT_POSTGRES_PATH": postgres_path}), once
    finally:
        shutil.rmtree(bindir, ignore_errors=True)


def without_host_copy(root: Path, ref: str) -> None:
    """The host's copy of the runtime's base backup gone (agent.hostcopy), as on a host that did
    not take it: its restores read the repository's object."""
    shutil.rmtree(root / ref / ".berth-pg" / hostcopy.FOLDER)


def stored_base(client, repository: Repository, ref: str) -> tuple[Store, BackupInfo, dict[str, int]]:
    """The stanza's store, its newest backup and the sizes of that backup's objects by name."""
    backup = client.backup_catalog(repository, ref).backups[-1]
    store = open_store(spec_of(repository), ref)
    return store, backup, {item.key.rsplit("/", 1)[1]: item.size for item in store.scan(f"base/{backup.id}/")}


@pytest.mark.parametrize(("major", "kind"), [(15, "s3"), (16, "file"), (17, "s3"), (17, "file")])
def test_it_restores_in_place_to_a_point_in_time_with_exactly_the_rows_committed_before(
    agent, make_repository, major, kind
):
    client, ref, repository = agent.client(deadline=60), f"pitr{major}{kind}", make_repository(kind)
    port = provision(client, ref, major)
    protected(client, ref, port, repository)
    _, _, objects = stored_base(client, repository, ref)
    assert objects.keys() == {"base.tar.zst" if kind == "s3" else "base.tar", "backup.json"}
    insert(port, "after backup", 5)
    time.sleep(1.5)
    target = time.time()
    time.sleep(1.5)
    insert(port, "too late", 7)
    archive_everything(client, ref, port)

    catalog = client.backup_catalog(repository, ref)
    assert len(catalog.backups) == 1 and catalog.backups[0].major == major
    assert catalog.earliest_unix <= target <= catalog.latest_unix

    assert client.restore_start(ref, repository, target_unix=target).state == "running"
    with pytest.raises(AgentError) as busy:  # the job holds the runtime
        client.restart(ref)
    restored = finished(client, ref)
    assert busy.value.code == "busy"
    assert (restored.kind, restored.state) == ("restore", "succeeded"), restored.error
    assert labels(port) == {"before backup": 10, "after backup": 5}
    assert restored.restored_to_unix <= target
    assert client.status(ref).state == "running"
    # The restored cluster archives its new timeline, and restores again, to its latest point.
    insert(port, "after restore", 3)
    archive_everything(client, ref, port)
    client.restore_start(ref, repository)
    again = finished(client, ref)
    assert again.state == "succeeded", again.error

    assert labels(port) == {"before backup": 10, "after backup": 5, "after restore": 3}


def test_a_restore_in_place_to_the_latest_point_keeps_every_commit_acknowledged_before_it_ends(agent, make_repository):
    """The serving cluster stops as the restore begins, and its fast stop archives its last
    segment: rows committed a moment before (the archive timeout an hour away, so only that
    stop archives them) are restored. A commit tried while the restore runs is refused, or,
    if it won the race with the stop, restored too: none is acknowledged and then lost."""
    client, ref, repository = agent.client(deadline=60), "latest16db", make_repository("file")
    port = provision(client, ref, 16)
    protected(client, ref, port, repository)
    client.backup_archiving(ref, repository, archive_timeout_s=3600)
    insert(port, "just before", 4)

    assert client.restore_start(ref, repository).state == "running"
    try:
        insert(port, "during", 1)
        acknowledged = {"during": 1}
    except psycopg.OperationalError:
        acknowledged = {}
    restored = finished(client, ref)
    assert restored.state == "succeeded", restored.error

    assert labels(port) == {"before backup": 10, "just before": 4, **acknowledged}
    assert client.status(ref).state == "running"


def test_a_new_cluster_in_the_same_stanza_archives_apart_and_restores_its_own_data(agent, make_repository):
    """A major upgrade (dump or logical replication) puts a new cluster behind the same
    project: its WAL names start again from the beginning. Each cluster's WAL has a folder of
    its own, so none of the new one's segments is taken for an old one's, nor lost."""
    client, ref, repository = agent.client(deadline=60), "second16", make_repository("file")
    port = provision(client, ref, 16)
    protected(client, ref, port, repository)
    insert(port, "first life", 3)
    archive_everything(client, ref, port)
    first = client.backup_catalog(repository, ref)
    client.delete(ref, purge_data=True)
    port = provision(client, ref, 16)  # initdb again: another system identifier, the same stanza
    protected(client, ref, port, repository)
    insert(port, "second life", 4)
    archive_everything(client, ref, port)

    catalog = client.backup_catalog(repository, ref)
    old, new = catalog.backups
    assert old.system_identifier != new.system_identifier
    assert old.start_wal[8:] == new.start_wal[8:] or new.start_wal[8:] < first.last_wal[8:], "the names overlap"
    assert catalog.earliest_unix == new.finished_unix, "the window is the current cluster's"
    client.restore_start(ref, repository)
    job = finished(client, ref)
    assert job.state == "succeeded", job.error
    assert labels(port) == {"before backup": 10, "second life": 4}

    # Once the old cluster's backups expire, its WAL goes with them; the new one's stays.
    pruned = client.backup_prune(repository, ref, keep_since_unix=new.started_unix)
    assert (pruned.removed_backups, pruned.kept_backups) == ([old.id], [new.id])
    wal = Path(repository.url.removeprefix("file://")) / ref / "wal"
    assert sorted(folder.name for folder in wal.iterdir()) == [new.system_identifier]
    client.restore_start(ref, repository)
    assert finished(client, ref).state == "succeeded"
    assert labels(port) == {"before backup": 10, "second life": 4}


def test_after_a_major_upgrade_the_new_cluster_archives_backs_up_and_restores(agent, make_repository):
    client, ref, repository = agent.client(deadline=120), "upgraded16", make_repository("file")
    port = provision(client, ref, 16)
    protected(client, ref, port, repository)
    archive_everything(client, ref, port)
    client.upgrade_prepare(ref, 17, "dump")
    assert client.upgrade_step(ref, "switch").current_major == 17
    client.put_files(ref, [runtime_toml(17, port)])  # as the control plane pushes it after the switch
    insert(port, "on 17", 6)
    archive_everything(client, ref, port)
    client.backup_start(ref, repository)
    assert finished(client, ref).state == "succeeded"

    catalog = client.backup_catalog(repository, ref)
    assert [backup.major for backup in catalog.backups] == [16, 17]
    assert catalog.earliest_unix == catalog.backups[1].finished_unix
    insert(port, "after its backup", 2)
    archive_everything(client, ref, port)
    with pytest.raises(AgentError, match="major upgrade under way or kept"):
        client.restore_start(ref, repository)  # a restore in place waits for the rollback's end
    client.upgrade_step(ref, "discard")
    client.restore_start(ref, repository)
    job = finished(client, ref)
    assert job.state == "succeeded", job.error
    assert labels(port) == {"before backup": 10, "on 17": 6, "after its backup": 2}
    with connect(port) as conn:
        assert conn.execute("show server_version_num").fetchone()[0].startswith("17")


def test_it_refuses_a_target_outside_the_window_and_changes_nothing(agent, make_repository):
    client, ref, repository = agent.client(deadline=60), "outside16", make_repository("file")
    port = provision(client, ref, 16)
    with pytest.raises(AgentError) as empty:
        client.restore_start(ref, repository)
    assert empty.value.code == "invalid" and "no base backup" in empty.value.message
    protected(client, ref, port, repository)
    insert(port, "after backup", 5)
    latest = client.backup_catalog(repository, ref).latest_unix

    for target in (latest + 3600, 1_000_000_000.0):
        with pytest.raises(AgentError) as outside:
            client.restore_start(ref, repository, target_unix=target)
        assert outside.value.code == "invalid" and "outside the restorable window" in outside.value.message
    assert client.backup_job(ref).kind == "base_backup"  # no restore was started
    assert labels(port) == {"before backup": 10, "after backup": 5}


def test_an_unreachable_repository_is_a_clear_error_and_nothing_changes(agent, make_repository):
    client, ref = agent.client(deadline=60), "unreach16"
    port = provision(client, ref, 16)
    nowhere = Repository(url="s3://berth-backups/x", endpoint=f"http://127.0.0.1:{free_port_range(1)}")
    with pytest.raises(AgentError) as refused:
        client.backup_archiving(ref, nowhere)
    assert refused.value.code == "repository" and refused.value.status == 502
    assert client.backup_archiver(ref).enabled is False
    repository = make_repository("file")
    protected(client, ref, port, repository)
    with pytest.raises(AgentError) as restore:
        client.restore_start(ref, nowhere)
    assert restore.value.code == "repository"
    assert labels(port) == {"before backup": 10}


def test_a_restore_that_cannot_reach_the_latest_point_fails_and_the_old_data_serves(agent, make_repository):
    client, ref, repository = agent.client(deadline=60), "gapped16", make_repository("file")
    port = provision(client, ref, 16)
    protected(client, ref, port, repository)
    for batch in range(3):  # three more segments, each archived
        insert(port, f"batch {batch}", 2)
        archive_everything(client, ref, port)
    wal = Path(repository.url.removeprefix("file://")) / ref / "wal"
    segments = sorted(path for path in wal.glob("*/*") if len(path.name) == 24)  # wal/<system id>/
    segments[-2].unlink()  # a gap before the newest segment
    insert(port, "kept", 1)

    client.restore_start(ref, repository)
    job = finished(client, ref)
    assert (job.state, job.error.code) == ("failed", "restore_failed")
    assert "missing" in job.error.message
    assert labels(port)["kept"] == 1  # the old cluster serves, with everything
    assert not (agent.root / ref / ".berth-pg" / "restore").exists()


def test_it_restores_a_lost_hosts_project_on_another_host_and_clones_with_a_new_password(
    agent_factory, make_repository
):
    first, second = agent_factory(), agent_factory()
    client, ref, repository = first.client(deadline=60), "lost17db", make_repository("s3")
    port = provision(client, ref, 17)
    protected(client, ref, port, repository)
    insert(port, "after backup", 4)
    archive_everything(client, ref, port)
    first.stop()  # the host is gone: its agent, its cluster and its folder
    stop_clusters(first.root)
    shutil.rmtree(first.root / ref)

    other = second.client(deadline=60)
    new_port = free_port_range(1)
    other.put_files(ref, [runtime_toml(17, new_port)])
    other.restore_start(ref, repository)
    job = finished(other, ref)
    assert job.state == "succeeded", job.error
    assert labels(new_port) == {"before backup": 10, "after backup": 4}

    # A clone into a new project: its own ref, port and password, from the same stanza.
    clone_port = free_port_range(1)
    other.put_files("clone17db", [runtime_toml(17, clone_port, "another-password-1")])
    other.restore_start("clone17db", repository, source_ref=ref)
    assert finished(other, "clone17db").state == "succeeded"
    assert labels(clone_port, "another-password-1") == {"before backup": 10, "after backup": 4}
    with pytest.raises(psycopg.OperationalError):
        connect(clone_port, PASSWORD)


def archiving_into_a_folder(client, ref: str, major: int, repository: Repository) -> int:
    """A runtime archiving into the folder repository, one row archived and no failure yet; its port."""
    port = provision(client, ref, major)
    client.backup_archiving(ref, repository, archive_timeout_s=5)
    insert(port, "one", 1)
    archive_everything(client, ref, port)
    assert client.backup_archiver(ref).last_failure is None
    return port


def test_the_archiver_status_says_why_archiving_fails(agent, make_repository):
    client, ref, repository = agent.client(deadline=60), "failing16", make_repository("file")
    port = archiving_into_a_folder(client, ref, 16, repository)
    shutil.rmtree(Path(repository.url.removeprefix("file://")) / ref)  # the repository's folder goes
    insert(port, "two", 1)
    with connect(port) as conn:
        conn.execute("select pg_switch_wal()")
    status = wait_for(
        lambda: (status := client.backup_archiver(ref)).last_failure and status, timeout=60, what="a failure"
    )
    assert status.failed_count >= 1
    assert "berth-wal push" in status.last_failure and "Permission denied" in status.last_failure


def test_a_base_backup_whose_wal_cannot_be_archived_fails_with_the_reason_before_its_deadline(agent, make_repository):
    client, ref, repository = agent.client(deadline=60), "stuck15db", make_repository("file")
    archiving_into_a_folder(client, ref, 15, repository)
    [wal] = (Path(repository.url.removeprefix("file://")) / ref / "wal").iterdir()  # the cluster's own
    wal.chmod(0o555)  # the server's user may no longer write segments; the agent still writes base backups
    try:
        client.backup_start(ref, repository, job_s=3600)
        job = finished(client, ref, timeout=300)
    finally:
        wal.chmod(0o755)
    assert (job.kind, job.state, job.error.code) == ("base_backup", "failed", "command_failed"), job.error
    assert "WAL archiving fails, so the base backup could never end" in job.error.message
    assert "berth-wal push" in job.error.message and "Permission denied" in job.error.message
    catalog = client.backup_catalog(repository, ref)
    assert catalog.backups == [], "the unfinished backup is not listed"
    assert not list((wal.parent.parent / "base").rglob("base.tar")), "its tar was removed"


@pytest.fixture
def small_repository_folder(repository_folder):
    """repository_folder on a tmpfs of its own, so a test can fill it."""
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m,mode=755", "tmpfs", str(repository_folder)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?): no full repository to test")
    yield repository_folder
    subprocess.run(["umount", "-l", str(repository_folder)], check=True)


def fill(folder: Path) -> Path:
    """Write a file into `folder` until its filesystem is full; the file."""
    filler = folder / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * (1 << 20))
                out.flush()
        except OSError:
            pass
    return filler


def test_a_full_repository_fails_the_backup_with_the_reason_and_the_project_keeps_serving(
    agent, small_repository_folder
):
    client, ref = agent.client(deadline=60), "full15db"
    repository = Repository(url=f"file://{small_repository_folder}")
    port = archiving_into_a_folder(client, ref, 15, repository)
    filler = fill(small_repository_folder)

    client.backup_start(ref, repository)
    job = finished(client, ref)
    assert (job.state, job.error.code) == ("failed", "repository"), job.error
    assert "No space left on device" in job.error.message
    assert not list(small_repository_folder.rglob("*partial*")), "nothing half-written stays behind"
    insert(port, "while full", 2)
    with connect(port) as conn:
        conn.execute("select pg_switch_wal()")
    status = wait_for(
        lambda: (status := client.backup_archiver(ref)).last_failure and status, timeout=60, what="a failure"
    )
    assert "No space left on device" in status.last_failure
    assert labels(port) == {"one": 1, "while full": 2}, "the project serves all the while"

    filler.unlink()  # room again: archiving catches up and a base backup succeeds
    archive_everything(client, ref, port)
    client.backup_start(ref, repository)
    assert finished(client, ref).state == "succeeded"
    assert len(client.backup_catalog(repository, ref).backups) == 1


def test_verify_restores_into_a_scratch_cluster_and_prune_keeps_what_restores(agent, make_repository):
    client, ref, repository = agent.client(deadline=60), "verify16db", make_repository("s3")
    port = provision(client, ref, 16)
    protected(client, ref, port, repository)
    first = client.backup_catalog(repository, ref).backups[0]
    insert(port, "between", 3)
    client.backup_start(ref, repository)
    assert finished(client, ref).state == "succeeded"
    archive_everything(client, ref, port)

    client.verify_start(ref, repository)
    verified = finished(client, ref)
    assert (verified.kind, verified.state) == ("verify", "succeeded"), verified.error
    assert verified.databases >= 2
    assert not (agent.root / ref / ".berth-pg" / "verify").exists()
    assert labels(port) == {"before backup": 10, "between": 3}

    second = client.backup_catalog(repository, ref).backups[1]
    pruned = client.backup_prune(repository, ref, keep_since_unix=second.finished_unix - 0.001)
    assert (pruned.removed_backups, pruned.kept_backups) == ([first.id], [second.id])
    assert pruned.removed_wal >= 1
    catalog = client.backup_catalog(repository, ref)
    assert [backup.id for backup in catalog.backups] == [second.id]
    assert catalog.earliest_unix == second.finished_unix
    again = client.backup_prune(repository, ref, keep_since_unix=time.time() + 3600)
    assert again.removed_backups == []  # the newest backup always stays
    client.verify_start(ref, repository)
    assert finished(client, ref).state == "succeeded"

    # A removed project's stanza past its retention: min_backups 0 empties it, WAL included.
    emptied = client.backup_prune(repository, ref, keep_since_unix=time.time() + 3600, min_backups=0)
    assert (emptied.removed_backups, emptied.kept_backups) == ([second.id], [])
    assert emptied.removed_wal >= 1
    catalog = client.backup_catalog(repository, ref)
    assert (catalog.backups, catalog.wal_segments, catalog.latest_unix) == ([], 0, None)


def test_a_docker_runtime_without_a_running_database_is_refused_clearly(docker_agent, make_repository):
    """The docker driver's backups (tests/agent/test_docker_backups.py, on a real engine) need
    the runtime's database container: with none, archiving is refused, nothing written."""
    client = docker_agent.client()
    client.put_files("dockref1", [FileSpec("runtime.toml", b'driver = "docker"\n')])
    with pytest.raises(AgentError) as refused:
        client.backup_archiving("dockref1", make_repository("file"))
    assert (refused.value.status, refused.value.code) == (422, "invalid")
    assert "start it first" in refused.value.message
    assert client.backup_archiver("dockref1").enabled is False


def test_a_cancelled_restore_leaves_the_old_data_serving(agent, make_repository):
    client, ref, repository = agent.client(deadline=60), "cancel16db", make_repository("file")
    port = provision(client, ref, 16)
    protected(client, ref, port, repository)
    insert(port, "after backup", 200_000)  # WAL to replay: the restore is still running when cancelled
    archive_everything(client, ref, port)
    operated = AgentClient(agent.base_url, agent.token, 60, operation="op-cancel-1")

    assert operated.restore_start(ref, repository).operation == "op-cancel-1"
    assert operated.cancel(ref, "op-cancel-1").cancelled is True
    job = finished(client, ref)
    assert (job.state, job.error.code) == ("failed", "cancelled"), job.error
    assert labels(port) == {"before backup": 10, "after backup": 200_000}
    assert client.status(ref).state == "running"
    assert not (agent.root / ref / ".berth-pg" / "restore").exists()


def test_a_restore_whose_data_cannot_be_synced_fails_and_the_old_data_serves(agent_factory, make_repository, tmp_path):
    """The restored data must be on disk before it serves: a `sync -f` of it that fails (a disk
    error, here a `sync` that says so) fails the restore after the swap began, and the old data
    is put back and serves."""
    failing = tmp_path / "bin"
    failing.mkdir()
    said = "echo \"sync: error syncing '$2': Input/output error\" >&2; exit 1"
    tool_in_front(failing / "sync", shutil.which("sync"), "*", said)
    agent = agent_factory(env={"PATH": f"{failing}:{os.environ['PATH']}"})
    client, ref, repository = agent.client(deadline=60), "unsynced16db", make_repository("file")
    port = provision(client, ref, 16)
    protected(client, ref, port, repository)
    insert(port, "after backup", 3)
    archive_everything(client, ref, port)
    insert(port, "not archived", 2)

    client.restore_start(ref, repository)
    job = finished(client, ref)

    assert (job.state, job.error.code) == ("failed", "restore_failed"), job.error
    assert "sync -f of the restored data exited with status 1" in job.error.message
    assert "the old data serves again" in job.error.message
    assert labels(port) == {"before backup": 10, "after backup": 3, "not archived": 2}
    assert client.status(ref).state == "running"
    assert not (agent.root / ref / ".berth-pg" / "restore").exists()


def test_a_restore_whose_stop_of_the_serving_cluster_fails_changes_nothing(agent_factory, make_repository):
    """The serving cluster is stopped as a restore begins; a `pg_ctl stop` that fails (here a
    pg_ctl in front of the real one, refusing once) fails the restore with pg_ctl's words, and
    the cluster serves on, never stopped: no commit is refused, none is lost."""
    refusing = 'echo "pg_ctl: could not send stop signal (PID: 1): Operation not permitted" >&2; exit 1'
    with agent_with_pg_ctl_in_front(agent_factory, '*" stop "', refusing) as (agent, refuse):
        client, ref, repository = agent.client(deadline=60), "stopfail16", make_repository("file")
        port = backed_up(client, ref, repository, 3)
        refuse.touch()

        client.restore_start(ref, repository)
        failed = finished(client, ref)

        assert not refuse.exists(), "the restore's stop went through the shim"
        assert failed.state == "failed", failed
        assert "Operation not permitted" in failed.error.output_tail, failed.error
        insert(port, "after the restore failed", 1)
        assert labels(port) == {"before backup": 10, "after backup": 3, "after the restore failed": 1}
        assert client.status(ref).state == "running"
        assert not (agent.root / ref / ".berth-pg" / "restore").exists()


def test_a_restored_cluster_that_does_not_start_in_place_is_undone_and_the_old_data_serves(
    agent_factory, make_repository
):
    """After the swap the restored data starts on the project's port; a start that fails there
    (a pg_ctl in front of the real one, refusing the serving folder's start once: recovery's
    own start, in restore/data, goes through) puts the old data back, with every row."""
    refusing = 'echo "pg_ctl: could not start server" >&2; exit 1'
    with agent_with_pg_ctl_in_front(agent_factory, '*"/.berth-pg/data -l "*" start "', refusing) as (agent, refuse):
        client, ref, repository = agent.client(deadline=60), "nostart16", make_repository("file")
        port = backed_up(client, ref, repository, 3)
        insert(port, "not archived", 2)
        refuse.touch()

        client.restore_start(ref, repository)
        failed = finished(client, ref)

        assert not refuse.exists(), "the swap's start went through the shim"
        assert (failed.state, failed.error.code) == ("failed", "restore_failed"), failed.error
        assert failed.error.message.startswith("the restored cluster did not serve, and the old data serves again: ")
        with connect(port) as conn:  # the old cluster's timeline: a restored one begins a new one
            assert conn.execute("select timeline_id from pg_control_checkpoint()").fetchone() == (1,)
        assert labels(port) == {"before backup": 10, "after backup": 3, "not archived": 2}
        assert client.status(ref).state == "running"
        assert not (agent.root / ref / ".berth-pg" / "restore").exists()


def test_a_restore_cancelled_while_the_serving_cluster_stops_starts_it_again(agent, make_repository):
    """The cancel kills the stop's pg_ctl, not the postmaster's shutdown: the old data is
    started again once that shutdown ends, not taken for running a moment before it does."""
    client, ref, repository = agent.client(deadline=60), "cancelstop16", make_repository("file")
    port = provision(client, ref, 16)
    protected(client, ref, port, repository)
    insert(port, "after backup", 300_000)  # buffers the shutdown checkpoint must write
    archive_everything(client, ref, port)
    operated = AgentClient(agent.base_url, agent.token, 60, operation="op-cancel-2")
    data = agent.root / ref / ".berth-pg" / "data"

    operated.restore_start(ref, repository)
    wait_for(lambda: shutting_down(data), timeout=30, interval=0.002, what="the serving cluster's stop")
    assert operated.cancel(ref, "op-cancel-2").cancelled is True
    job = finished(client, ref)
    assert (job.state, job.error.code) == ("failed", "cancelled"), job.error
    assert labels(port) == {"before backup": 10, "after backup": 300_000}
    assert client.status(ref).state == "running"
    assert not shutting_down(data)


def test_an_agent_killed_mid_restore_leaves_the_old_data_and_says_interrupted(agent, make_repository):
    client, ref, repository = agent.client(deadline=60), "killed16db", make_repository("file")
    port = provision(client, ref, 16)
    protected(client, ref, port, repository)
    insert(port, "after backup", 300_000)
    archive_everything(client, ref, port)

    client.restore_start(ref, repository)
    wait_for(lambda: client.backup_job(ref).phase == "recovering", timeout=60, interval=0.05, what="recovery")
    agent.process.kill()
    agent.process.wait()
    again = start_agent(agent.root)
    try:
        job = again.client(deadline=60).backup_job(ref)
        assert (job.state, job.error.code) == ("failed", "interrupted")
        assert "started again" in job.error.message  # the restore stopped it as it began
        assert labels(port) == {"before backup": 10, "after backup": 300_000}
        assert not (agent.root / ref / ".berth-pg" / "restore").exists()
        assert again.client().status(ref).state == "running"
    finally:
        again.stop()


def test_the_repository_secret_stays_in_one_private_file(agent, make_repository):
    client, ref, repository = agent.client(deadline=60), "secret16db", make_repository("s3")
    port = provision(client, ref, 16)
    protected(client, ref, port, repository)
    state = agent.root / ref / ".berth-pg"
    spec = state / "backup" / "repository.json"
    assert spec.stat().st_mode & 0o777 == 0o600
    assert repository.secret_access_key in spec.read_text()
    secret = repository.secret_access_key.encode()
    holders = [path for path in agent.root.rglob("*") if path.is_file() and secret in path.read_bytes()]
    assert holders == [spec]
    assert secret not in agent.log.read_bytes()
    assert repository.secret_access_key not in repr(repository)
    assert repository.secret_access_key not in str(client.backup_archiver(ref))


def test_an_s3_base_backup_is_stored_compressed_and_one_stored_plain_before_still_restores(agent, make_repository):
    client, ref, repository = agent.client(deadline=60), "zstd16db", make_repository("s3")
    port = provision(client, ref, 16)
    protected(client, ref, port, repository)
    without_host_copy(agent.root, ref)
    store, backup, objects = stored_base(client, repository, ref)
    assert objects.keys() == {"base.tar.zst", "backup.json"}
    assert backup.stored == "base.tar.zst"  # a restore need not list the folder for it
    assert objects["base.tar.zst"] < backup.bytes / 2  # bytes is the tar's size, not the object's
    tar = io.BytesIO()
    with store.open(f"base/{backup.id}/base.tar.zst") as source:
        zstdio.decompress([source.read()], tar, backup.bytes)
    with tarfile.open(fileobj=io.BytesIO(tar.getvalue())) as archive:
        assert {"PG_VERSION", "backup_label", "global/pg_control"} <= set(archive.getnames())

    # As Berth stored it before compressing: base.tar, the same tar, and a backup.json
    # without the object's name (the restore lists the folder for it).
    tar.seek(0)
    store.put(f"base/{backup.id}/base.tar", tar)
    store.delete([f"base/{backup.id}/base.tar.zst"])
    before = msgspec.json.encode(msgspec.structs.replace(backup, stored=None))
    assert b"stored" not in before
    store.put(f"base/{backup.id}/backup.json", io.BytesIO(before))
    insert(port, "after backup", 4)
    archive_everything(client, ref, port)
    client.restore_start(ref, repository)
    restored = finished(client, ref)
    assert (restored.kind, restored.state) == ("restore", "succeeded"), restored.error
    assert labels(port) == {"before backup": 10, "after backup": 4}


def test_a_corrupt_or_cut_compressed_base_backup_fails_the_restore_clearly_and_the_old_data_serves(
    agent, make_repository
):
    client, ref, repository = agent.client(deadline=60), "zbad16db", make_repository("s3")
    port = provision(client, ref, 16)
    protected(client, ref, port, repository)
    without_host_copy(agent.root, ref)
    insert(port, "after backup", 4)
    archive_everything(client, ref, port)
    store, backup, _ = stored_base(client, repository, ref)
    key = f"base/{backup.id}/base.tar.zst"
    with store.open(key) as source:
        whole = source.read()
    corrupt = bytearray(whole)
    corrupt[len(whole) // 2] ^= 0x40

    for damaged, says in ((bytes(corrupt), ""), (whole[: len(whole) // 2], "(the object is cut short)")):
        store.put(key, io.BytesIO(damaged))
        client.restore_start(ref, repository)
        failed = finished(client, ref)
        assert (failed.state, failed.error.code) == ("failed", "restore_failed"), failed.error
        assert failed.error.message.startswith(f"the base backup {key} in the repository is damaged: ")
        assert says in failed.error.message
        assert labels(port) == {"before backup": 10, "after backup": 4}
        assert client.status(ref).state == "running"
        assert not (agent.root / ref / ".berth-pg" / "restore").exists()

    store.put(key, io.BytesIO(whole))
    client.restore_start(ref, repository)
    assert finished(client, ref).state == "succeeded"
    assert labels(port) == {"before backup": 10, "after backup": 4}
