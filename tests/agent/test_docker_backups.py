"""Backups of docker-driver runtimes on a real engine, through a real agent: the docker-test
runtime (Debian's PostgreSQL 15 in berth/test-postgres:15, data in a named volume) archiving
its WAL through the outbox the agent ships, a base backup from the container, a point-in-time
restore in place after a dropped table, a restore outside the window refused, restores that
fail (cancelled; a corrupt base backup; a cut zstd-compressed one in S3, read after the
host's copy of it was forgotten, its files changed; the serving
database's stop refused by the engine) leaving the old data serving, archiving whose
repository went away showing PostgreSQL's reason, verify, and a restore into a runtime that
never ran (a clone) from the host's copy of an S3 repository's base backup, stored there
compressed, and a verify of that repository. SKIPs
without an engine (require_engine)."""

import io
import os
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from agent import hostcopy
from agent.api import FileSpec, Repository
from agent.backups import spec_of
from agent.client import AgentClient, AgentError
from agent.repository import open_store
from tests.agent.backup_helpers import PASSWORD, archive_everything, connect, finished, insert, labels
from tests.agent.test_docker_engine import require_engine
from tests.agent_fixtures import start_agent, tool_in_front
from tests.stack import free_port_range, wait_for

IMAGE = "berth/test-postgres:15"


@pytest.fixture(scope="module")
def engine():
    return require_engine(images=(IMAGE,))


@pytest.fixture
def docker_backup_agent(engine, agent_factory, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", engine["host"])
    return agent_factory(driver="docker")


@pytest.fixture
def cleanup(engine):
    """Refs whose containers, volumes and one-off containers are removed after the test."""
    refs: list[str] = []
    yield refs
    for ref in refs:
        ids = docker(engine, "ps", "-aq", "--filter", f"label=com.docker.compose.project={ref}", check=False).split()
        ids += [f"berth-restore-{ref}", f"berth-verify-{ref}"]
        docker(engine, "rm", "-f", "-v", *ids, check=False)
        names = docker(engine, "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={ref}").split()
        docker(engine, "volume", "rm", "-f", *names, f"berth-verify-{ref}", check=False)
        docker(engine, "network", "rm", f"{ref}_default", check=False)


def docker(engine, *args: str, check: bool = True) -> str:
    done = subprocess.run(
        [engine["docker"], *args], env=engine["env"], capture_output=True, text=True, timeout=120, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def compose(port: int, password: str) -> bytes:
    """The docker-test template's db service, as rendered for a project."""
    return f"""services:
  db:
    image: "{IMAGE}"
    restart: unless-stopped
    environment:
      POSTGRES_PASSWORD: "{password}"
    ports:
      - "127.0.0.1:{port}:5432"
    volumes:
      - db-data:/var/lib/postgresql/data
    stop_grace_period: 30s
    labels:
      berth.postgres-major: "15"
volumes:
  db-data: {{}}
""".encode()


def files(port: int, password: str = PASSWORD) -> list[FileSpec]:
    return [
        FileSpec("runtime.toml", b'driver = "docker"\ncompose_file = "docker-compose.yml"\n'),
        FileSpec("docker-compose.yml", compose(port, password)),
    ]


def serving(port: int, password: str = PASSWORD) -> bool:
    try:
        with connect(port, password) as conn:
            conn.execute("select 1")
        return True
    except psycopg.OperationalError:
        return False


def provision(client, ref: str, cleanup: list[str]) -> int:
    cleanup.append(ref)
    port = free_port_range(1)
    client.put_files(ref, files(port))
    client.up(ref)
    wait_for(lambda: serving(port), timeout=90, what=f"{ref}'s database")
    return port


def protected(client, ref: str, port: int, repository) -> None:
    status = client.backup_archiving(ref, repository, archive_timeout_s=5)
    assert (status.enabled, status.restarted) == (True, True)
    wait_for(lambda: serving(port), timeout=60, what="the restarted database")
    insert(port, "before backup", 10)
    assert client.backup_start(ref, repository).state == "running"
    job = finished(client, ref)
    assert (job.kind, job.state) == ("base_backup", "succeeded"), job.error
    assert job.backup.major == 15 and job.backup.bytes > 0


def backed_up(client, ref: str, cleanup: list[str], repository, label: str = "kept", rows: int = 4) -> int:
    """A runtime protected (its base backup holds 10 "before backup" rows) with `rows` rows
    `label` written and archived after the backup; its port."""
    port = provision(client, ref, cleanup)
    protected(client, ref, port, repository)
    insert(port, label, rows)
    archive_everything(client, ref, port)
    return port


def test_a_docker_runtime_restores_in_place_to_a_point_before_a_dropped_table(
    engine, docker_backup_agent, make_repository, cleanup
):
    client, ref, repository = docker_backup_agent.client(deadline=120), "dkpitr1", make_repository("file")
    port = provision(client, ref, cleanup)
    protected(client, ref, port, repository)
    insert(port, "after backup", 5)
    time.sleep(1.5)
    target = time.time()
    time.sleep(1.5)
    insert(port, "too late", 7)
    with connect(port) as conn:
        conn.execute("drop table marks")
    archive_everything(client, ref, port)

    catalog = client.backup_catalog(repository, ref)
    assert len(catalog.backups) == 1 and catalog.earliest_unix <= target <= catalog.latest_unix
    # Outside the window: refused with the window, nothing started.
    with pytest.raises(AgentError) as outside:
        client.restore_start(ref, repository, target_unix=catalog.latest_unix + 3600)
    assert outside.value.code == "invalid" and "outside the restorable window" in outside.value.message
    assert "unix" in outside.value.message

    assert client.restore_start(ref, repository, target_unix=target).state == "running"
    with pytest.raises(AgentError) as busy:
        client.restart(ref)
    assert busy.value.code == "busy"
    restored = finished(client, ref)
    assert (restored.kind, restored.state) == ("restore", "succeeded"), restored.error
    assert labels(port) == {"before backup": 10, "after backup": 5}  # same port, same password
    assert restored.restored_to_unix <= target
    # Nothing of the restore is left in the volume (a base backup would copy it).
    listing = docker(engine, "exec", container_of(engine, ref), "ls", "-a", "/var/lib/postgresql/data")
    assert ".berth-aside" not in listing and ".berth-restore" not in listing

    # The restored cluster archives its new timeline; a restore to the latest point brings it
    # back, with rows committed just before it (the archive timeout an hour away: only the
    # database's stop as the restore begins archives them).
    insert(port, "after restore", 3)
    archive_everything(client, ref, port)
    client.backup_archiving(ref, repository, archive_timeout_s=3600)
    wait_for(lambda: serving(port), timeout=60, what="the restarted database")
    insert(port, "just before", 2)
    client.restore_start(ref, repository)
    again = finished(client, ref)
    assert again.state == "succeeded", again.error
    assert labels(port) == {"before backup": 10, "after backup": 5, "after restore": 3, "just before": 2}

    client.verify_start(ref, repository)
    verified = finished(client, ref)
    assert (verified.kind, verified.state) == ("verify", "succeeded"), verified.error
    assert verified.databases >= 2
    assert labels(port)["after restore"] == 3


def test_restores_that_fail_leave_the_old_data_serving(
    docker_backup_agent, make_repository, cleanup, repository_folder
):
    client, ref, repository = docker_backup_agent.client(deadline=120), "dkfail1", make_repository("file")
    port = backed_up(client, ref, cleanup, repository)

    # Cancelled while it runs: the old data serves.
    operated = AgentClient(docker_backup_agent.base_url, docker_backup_agent.token, 60, operation="op-cancel-1")
    assert operated.restore_start(ref, repository).operation == "op-cancel-1"
    wait_for(lambda: client.backup_job(ref).phase == "recovering", timeout=120, what="the restore to recover")
    assert operated.cancel(ref, "op-cancel-1").cancelled is True
    cancelled = finished(client, ref)
    assert (cancelled.state, cancelled.error.code) == ("failed", "cancelled"), cancelled.error
    wait_for(lambda: serving(port), timeout=90, what="the old data")
    assert labels(port) == {"before backup": 10, "kept": 4}

    # A corrupt base backup: recovery fails, the old data serves, nothing is left behind. (The
    # host's copy gone first, as on a host that did not take the backup: it would be used.)
    shutil.rmtree(docker_backup_agent.root / ref / ".berth-docker" / hostcopy.FOLDER)
    tar = next((repository_folder / ref / "base").glob("*/base.tar"))
    with open(tar, "r+b") as handle:
        handle.seek(0)
        handle.write(b"\0" * 4096 * 16)
        handle.truncate(8192 * 16)
    client.restore_start(ref, repository)
    failed = finished(client, ref)
    assert failed.state == "failed", failed
    assert labels(port) == {"before backup": 10, "kept": 4}
    assert client.status(ref).state == "running"
    assert not (docker_backup_agent.root / ref / ".berth-docker" / "restore").exists()


def test_a_restore_whose_stop_of_the_serving_database_fails_changes_nothing(
    engine, agent_factory, make_repository, cleanup, tmp_path, monkeypatch
):
    """The serving database is stopped as a restore begins; a `docker stop` the engine refuses
    (here a `docker` in front of the real one, refusing once) fails the restore with the
    engine's words (its output's tail), and the old data serves on."""
    refuse = tmp_path / "refuse-stop"
    shim = tmp_path / "bin" / "docker"
    shim.parent.mkdir()
    refused = 'echo "Error response from daemon: cannot stop container: permission denied" >&2; exit 1'
    tool_in_front(shim, engine["docker"], '" stop "*', refused, refuse)
    monkeypatch.setenv("DOCKER_HOST", engine["host"])
    agent = agent_factory(driver="docker", env={"PATH": f"{shim.parent}:{os.environ['PATH']}"})
    client, ref, repository = agent.client(deadline=120), "dkstop1", make_repository("file")
    port = backed_up(client, ref, cleanup, repository)
    refuse.touch()

    client.restore_start(ref, repository)
    failed = finished(client, ref)

    assert not refuse.exists(), "the restore's stop went through the shim"
    assert failed.state == "failed", failed
    assert (failed.error.code, failed.phase) == ("command_failed", "starting"), failed.error
    assert failed.error.message.startswith("docker stop"), failed.error
    assert "cannot stop container: permission denied" in failed.error.output_tail
    wait_for(lambda: serving(port), timeout=90, what="the old data")
    assert labels(port) == {"before backup": 10, "kept": 4}
    assert client.status(ref).state == "running"
    assert not (agent.root / ref / ".berth-docker" / "restore").exists()


def test_archiving_that_fails_shows_postgres_reason(docker_backup_agent, repository_folder, cleanup, tmp_path):
    client, ref = docker_backup_agent.client(deadline=120), "dkarch1"
    port = provision(client, ref, cleanup)
    folder = Path(repository_folder) / "going"
    folder.mkdir()
    repository = Repository(url=f"file://{folder}")
    client.backup_archiving(ref, repository, archive_timeout_s=5)
    wait_for(lambda: serving(port), timeout=60, what="the restarted database")
    # The stanza's folder becomes a file: the agent (root here) can store nothing there.
    shutil.rmtree(folder / ref)
    (folder / ref).write_text("not a folder")
    insert(port, "unarchived", 1)
    with connect(port) as conn:
        conn.execute("select pg_switch_wal()")
    status = wait_for(
        lambda: (status := client.backup_archiver(ref)).last_failure and status, timeout=60, what="a failure"
    )
    assert status.failed_count >= 1 and status.running
    assert status.last_failure.startswith("berth-wal push "), status.last_failure
    assert "Not a directory" in status.last_failure
    assert labels(port) == {"unarchived": 1}  # the project serves on


def test_a_clone_restores_into_a_runtime_that_never_ran_from_s3(docker_backup_agent, make_repository, cleanup):
    client, ref, repository = docker_backup_agent.client(deadline=120), "dkclsrc", make_repository("s3")
    port = provision(client, ref, cleanup)
    protected(client, ref, port, repository)
    backup = client.backup_catalog(repository, ref).backups[0]
    stored = {item.key: item.size for item in open_store(spec_of(repository), ref).scan("base/")}
    assert stored.keys() == {f"base/{backup.id}/base.tar.zst", f"base/{backup.id}/backup.json"}
    assert stored[f"base/{backup.id}/base.tar.zst"] < backup.bytes / 2
    insert(port, "after backup", 6)
    archive_everything(client, ref, port)

    clone, clone_port = "dkclone", free_port_range(1)
    cleanup.append(clone)
    client.put_files(clone, files(clone_port, "another-password-2"))
    client.restore_start(clone, repository, source_ref=ref)
    job = finished(client, clone)
    assert job.state == "succeeded", job.error
    assert f"base backup {backup.id} (this host's copy)" in job.detail  # bind-mounted and copied in
    assert client.status(clone).state == "running"
    assert labels(clone_port, "another-password-2") == {"before backup": 10, "after backup": 6}
    copies = docker_backup_agent.root / ref / ".berth-docker" / hostcopy.FOLDER
    assert (copies / backup.id).is_dir(), "the source keeps its copy"

    # A verify reads the repository's object (decompressed into tar's stdin), not the copy.
    client.verify_start(ref, repository)
    verified = finished(client, ref)
    assert (verified.kind, verified.state) == ("verify", "succeeded"), verified.error
    assert "this host's copy" not in verified.detail


def test_a_cut_compressed_base_backup_fails_the_restore_clearly_and_the_old_data_serves(
    docker_backup_agent, make_repository, cleanup
):
    client, ref, repository = docker_backup_agent.client(deadline=120), "dkzcut1", make_repository("s3")
    port = backed_up(client, ref, cleanup, repository)
    store = open_store(spec_of(repository), ref)
    key = f"base/{client.backup_catalog(repository, ref).backups[0].id}/base.tar.zst"
    with store.open(key) as source:
        whole = source.read()
    store.put(key, io.BytesIO(whole[: len(whole) // 2]))
    copies = docker_backup_agent.root / ref / ".berth-docker" / hostcopy.FOLDER
    (copy,) = (path for path in copies.iterdir() if path.is_dir())
    (copy / "PG_VERSION").unlink()  # the host's copy damaged too

    client.restore_start(ref, repository)
    failed = finished(client, ref)
    assert list(copies.iterdir()) == [], "the damaged copy is forgotten; the repository's object is read"
    assert (failed.state, failed.error.code) == ("failed", "restore_failed"), failed.error
    assert failed.error.message.startswith(f"the base backup {key} in the repository is damaged: it ends after ")
    assert failed.error.message.endswith("(the object is cut short)")
    wait_for(lambda: serving(port), timeout=90, what="the old data")
    assert labels(port) == {"before backup": 10, "kept": 4}
    assert client.status(ref).state == "running"
    assert not (docker_backup_agent.root / ref / ".berth-docker" / "restore").exists()


def container_of(engine, ref: str) -> str:
    return docker(engine, "ps", "-q", "--filter", f"label=com.docker.compose.project={ref}").split()[0]


def test_an_agent_killed_mid_restore_leaves_the_old_data_and_says_interrupted(
    engine, docker_backup_agent, make_repository, cleanup
):
    agent = docker_backup_agent
    client, ref, repository = agent.client(deadline=120), "dkkill1", make_repository("file")
    # WAL to replay: the restore is still recovering when killed.
    port = backed_up(client, ref, cleanup, repository, "after backup", 300_000)

    client.restore_start(ref, repository)
    wait_for(lambda: client.backup_job(ref).phase == "recovering", timeout=120, interval=0.05, what="recovery")
    agent.process.kill()
    agent.process.wait()
    again = start_agent(agent.root, driver="docker")
    try:
        job = again.client(deadline=120).backup_job(ref)
        assert (job.state, job.error.code) == ("failed", "interrupted")
        assert "started again" in job.error.message  # the restore stopped the database as it began
        wait_for(lambda: serving(port), timeout=90, what="the old data")
        assert labels(port) == {"before backup": 10, "after backup": 300_000}
        assert not (agent.root / ref / ".berth-docker" / "restore").exists()
        assert f"berth-restore-{ref}" not in docker(engine, "ps", "-a", "--format", "{{.Names}}")
        listing = docker(engine, "exec", container_of(engine, ref), "ls", "-a", "/var/lib/postgresql/data")
        assert ".berth-restore" not in listing and ".berth-aside" not in listing
        assert again.client().status(ref).state == "running"
    finally:
        again.stop()


def test_a_swap_that_fails_part_way_is_put_back_and_the_old_data_serves(
    engine, docker_backup_agent, make_repository, cleanup
):
    client, ref, repository = docker_backup_agent.client(deadline=120), "dkswap1", make_repository("file")
    port = backed_up(client, ref, cleanup, repository, "after backup", 4)
    # An entry of the data folder that cannot be moved (immutable), named to come after the
    # cluster's own: the swap moves those aside, then stops at it.
    (volume,) = docker(engine, "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={ref}").split()
    held = Path(docker(engine, "volume", "inspect", "-f", "{{.Mountpoint}}", volume).strip()) / "zz-held"
    held.write_text("not the cluster's\n")
    subprocess.run(["chattr", "+i", str(held)], check=True)
    try:
        client.restore_start(ref, repository)
        failed = finished(client, ref)
        assert (failed.state, failed.error.code) == ("failed", "restore_failed"), failed.error
        assert "the old data serves again" in failed.error.message
        assert "zz-held" in failed.error.output_tail  # mv's own words: what stopped the swap
        wait_for(lambda: serving(port), timeout=90, what="the old data")
        assert labels(port) == {"before backup": 10, "after backup": 4}
        listing = docker(engine, "exec", container_of(engine, ref), "ls", "-a", "/var/lib/postgresql/data").split()
        assert not {".berth-aside", ".berth-restore"} & set(listing)
        assert client.status(ref).state == "running"
    finally:
        subprocess.run(["chattr", "-i", str(held)], check=True)
        held.unlink()


@pytest.mark.parametrize(
    "half_done",
    [
        # Old entries partly moved aside, no mark: the root holds only old ones.
        "mkdir .berth-aside && mv base global .berth-aside/",
        # Everything aside and marked, restored entries partly moved in: the root's go.
        "mkdir -p .berth-aside .berth-restore && for f in *; do mv $f .berth-aside/; done"
        " && touch .berth-aside/.complete && echo new > .berth-restore/PG_VERSION && echo x > .berth-restore/junk"
        " && mv .berth-restore/PG_VERSION .berth-restore/junk .",
    ],
)
def test_a_swap_an_agent_left_half_done_is_put_back(engine, docker_backup_agent, cleanup, half_done):
    client, ref = docker_backup_agent.client(deadline=120), "dkhalf1"
    port = provision(client, ref, cleanup)
    insert(port, "old", 3)
    db = container_of(engine, ref)
    image = docker(engine, "inspect", "-f", "{{.Image}}", db).strip()
    docker(engine, "stop", db)
    script = f"cd /var/lib/postgresql/data && {half_done}"
    docker(engine, "run", "--rm", "--volumes-from", db, "-u", "0", "--entrypoint", "sh", image, "-c", script)
    # The job an agent that stopped mid-swap left: the next look at it settles the runtime.
    job = docker_backup_agent.root / ref / ".berth-docker" / "backup" / "job.json"
    job.parent.mkdir(parents=True)
    job.write_text('{"kind": "restore", "state": "running", "started_unix": 1.0, "phase": "swapping"}')

    # Settled by the first look that gets the runtime's lock (a ban scan may hold it a moment).
    settled = finished(client, ref, timeout=120)
    assert (settled.state, settled.error and settled.error.code) == ("failed", "interrupted"), settled
    assert "put back" in settled.error.message
    wait_for(lambda: serving(port), timeout=90, what="the old data")
    assert labels(port) == {"old": 3}
    listing = docker(engine, "exec", container_of(engine, ref), "ls", "-a", "/var/lib/postgresql/data").split()
    assert not {"junk", ".berth-aside", ".berth-restore"} & set(listing)
