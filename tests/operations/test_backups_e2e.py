"""Backups end to end through a real agent (started from the checkout, process driver) and a
real cluster, into a file:// repository (and one S3 test into SeaweedFS): provisioning
turns WAL archiving on, a base backup is recorded, a mistake is undone by a point-in-time
restore in place (same ref, same port), a clone made as of that point holds the same data,
a restore test passes; a lost host's project comes back on another host; a restore whose
worker is killed ends with old or restored data. The operations run in this process
(tasks.run_operation), as a worker runs them, except where a worker is killed."""

import shutil
import time
from urllib.parse import quote

import psycopg
import pytest
from django.utils import timezone

from backups.models import Backup, BackupStatus, Protection, Repository
from berth.env import parse_repository_url
from hosts import agents
from operations import protection, reaper
from operations.cleanup import stop_what_it_started
from operations.creation import create_project
from operations.models import Operation, State
from operations.protection import RestoreTarget
from projects.models import Project, Status
from tests.agent_fixtures import stop_clusters
from tests.operations.backup_stack import archived_past, count, run, use_repository
from tests.stack import PORT_BASE, Worker, agent_host, connect, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def agent(agent_factory, settings, repository_folder):
    use_repository(settings, repository_folder)
    return agent_factory()


def answered(project: Project) -> tuple[int | None] | None:
    """(rows,) once the project's Postgres answers; None while it does not (being swapped back)."""
    try:
        return (count(project),)
    except psycopg.OperationalError:
        return None


def test_a_dropped_table_comes_back_by_a_restore_in_place_and_in_a_clone(agent):
    agent_host(agent, block_size=1, blocks=4)
    project = create_project(name="Orders", postgres_major=15, template="postgres")
    run(project.operations.get())
    found = Protection.objects.get(project=project)
    assert found.configured_at is not None, found.failure
    assert found.repository == Repository.objects.default()

    with connect(project) as conn:
        conn.execute("create table orders (id bigserial primary key, note text)")
        conn.execute("insert into orders (note) select 'order ' || i from generate_series(1, 100) i")
    run(protection.request_backup(project))
    backup = Backup.objects.get(project=project)
    assert backup.status == BackupStatus.COMPLETED and backup.size_bytes > 0

    with connect(project) as conn:
        conn.execute("insert into orders (note) select 'later ' || i from generate_series(1, 50) i")
    time.sleep(1.5)
    point = int(time.time())
    time.sleep(1.5)
    with connect(project) as conn:
        conn.execute("drop table orders")
        conn.execute("select pg_switch_wal()")
    archived_past(project, point)
    assert Protection.objects.get(project=project).failure == ""

    clone = protection.clone_project(project, RestoreTarget.parse(point), name="Orders branch")
    run(clone.operations.get())
    assert count(clone) == 150

    port = Project.objects.select_related("port_block").get(pk=project.pk).port_block.first_port
    restore = run(protection.request_restore(project, RestoreTarget.parse(point)))
    project = Project.objects.select_related("port_block").get(pk=project.pk)
    assert project.status == Status.ACTIVE_HEALTHY and project.port_block.first_port == port
    assert count(project) == 150, "every row committed before the point is back, the drop undone"
    assert "restored to" in restore.result_message

    run(protection.request_verify(project))
    assert Protection.objects.get(project=project).last_verify_ok is True


def test_a_project_whose_host_was_lost_comes_back_on_another_host_to_its_latest_archived_point(
    agent, agent_factory, repository_folder
):
    lost = agent_host(agent, name="lost", block_size=1, blocks=2)
    project = create_project(name="Ledger", postgres_major=15, template="postgres", host=lost)
    run(project.operations.get())
    with connect(project) as conn:
        conn.execute("create table orders (id bigserial primary key, note text)")
        conn.execute("insert into orders (note) select 'order ' || i from generate_series(1, 70) i")
    run(protection.request_backup(project))
    with connect(project) as conn:
        conn.execute("insert into orders (note) select 'later ' || i from generate_series(1, 30) i")
        committed = time.time()
        conn.execute("select pg_switch_wal()")
    archived_past(project, committed - 0.5)

    # The host is lost: its agent gone, its runtime folder (data included) destroyed.
    agent.stop()
    stop_clusters(agent.root)
    shutil.rmtree(agent.root)

    other = agent_host(agent_factory(), name="spare", block_size=1, blocks=2, start=PORT_BASE + 200)
    restore = run(protection.request_restore(project, RestoreTarget(None), host=other))
    project = Project.objects.get(pk=project.pk)
    assert project.host == other and project.status == Status.ACTIVE_HEALTHY
    assert count(project) == 100, "nothing committed and archived before the loss is lost"
    assert "restored to" in restore.result_message
    assert Protection.objects.get(project=project).configured_at is not None, "it archives again on its new host"


def test_a_restore_whose_worker_is_killed_leaves_the_old_data_or_the_restored_never_half(
    agent, repository_folder, tmp_path
):
    agent_host(agent, block_size=1, blocks=2)
    project = create_project(name="Killed", postgres_major=15, template="postgres")
    run(project.operations.get())
    with connect(project) as conn:
        conn.execute("create table orders (id bigserial primary key, note text)")
        conn.execute("insert into orders (note) select repeat('x', 200) from generate_series(1, 20000) i")
    run(protection.request_backup(project))
    time.sleep(1.5)
    point = int(time.time())
    time.sleep(1.5)
    with connect(project) as conn:
        conn.execute("drop table orders")
        conn.execute("select pg_switch_wal()")
    archived_past(project, point)

    worker = Worker(tmp_path, BERTH_OPERATION_DEADLINE=240, BERTH_BACKUP_URL=f"file://{repository_folder}")
    try:
        restore = protection.request_restore(project, RestoreTarget.parse(point))
        client = agents.client_for(Project.objects.get(pk=project.pk).host, deadline=10)
        wait_for(
            lambda: client.backup_job(project.ref).operation == str(restore.pk),
            timeout=120,
            interval=0.1,
            what="the restore job to start on the agent",
        )
    finally:
        worker.kill()
    Operation.objects.filter(pk=restore.pk).update(deadline=timezone.now())
    assert reaper.reap() >= 1
    stop_what_it_started(restore.pk)
    restore.refresh_from_db()
    assert restore.state == State.TIMED_OUT
    wait_for(lambda: client.backup_job(project.ref).state != "running", timeout=120, what="the job to end")
    finished = client.backup_job(project.ref)
    ended = f"the project to answer after its restore job ended {finished.state}: {finished.error}"
    rows = wait_for(lambda: answered(project), timeout=60, what=ended)[0]
    if finished.state == "succeeded":
        assert rows == 20000, "a finished restore serves the whole restored data"
    else:
        assert rows is None, "an undone restore serves the old data (the table still dropped)"
    assert Project.objects.get(pk=project.pk).status != Status.RESTORING


@pytest.fixture(scope="module")
def seaweedfs():
    from tests.agent.conftest import SeaweedFS

    store = SeaweedFS()
    yield store
    store.stop()


def test_an_s3_repository_from_berth_backup_url_takes_and_restores_backups(agent_factory, settings, seaweedfs):
    """The setting's URL, credentials URL-encoded in it, reaches the agent through the
    repository row (stored encrypted) and the bucket holds the project's backups."""
    secret = quote(seaweedfs.secret_key, safe="")
    settings.BERTH_BACKUP_URL = parse_repository_url(
        f"s3://{seaweedfs.access_key}:{secret}@berth-backups/e2e?endpoint={seaweedfs.endpoint}&region=us-east-1"
    )
    settings.BERTH_WAL_ARCHIVE_TIMEOUT = 1
    settings.BERTH_OPERATION_DEADLINE = 240
    settings.BERTH_AGENT_CALL_DEADLINE = 60
    agent_host(agent_factory(), block_size=1, blocks=2)
    project = create_project(name="In the bucket", postgres_major=15, template="postgres")
    run(project.operations.get())
    assert Protection.objects.get(project=project).configured_at is not None
    with connect(project) as conn:
        conn.execute("create table orders (id bigserial primary key, note text)")
        conn.execute("insert into orders (note) select 'order ' || i from generate_series(1, 40) i")
    run(protection.request_backup(project))
    keys = [
        o["Key"] for o in seaweedfs.client().list_objects_v2(Bucket="berth-backups", Prefix="e2e/").get("Contents", [])
    ]
    assert any(f"e2e/{project.ref}/base/" in key for key in keys), keys
    time.sleep(1.5)
    point = int(time.time())
    time.sleep(1.5)
    with connect(project) as conn:
        conn.execute("drop table orders")
        conn.execute("select pg_switch_wal()")
    archived_past(project, point)
    run(protection.request_restore(project, RestoreTarget.parse(point)))
    assert count(project) == 40
