"""Backups of a docker project end to end: the control plane's operations (run in this process,
as a worker runs them) against a real agent with the docker driver on a real engine and a
file:// repository. Provisioning turns WAL archiving on, a base backup is recorded, a dropped
table is undone by a point-in-time restore in place (same ref, same port) and in a clone on the
same host, a restore test passes: the control plane asks a docker host what it asks a process
host. SKIPs without an engine (require_engine)."""

import subprocess
import time

import psycopg
import pytest

from backups.models import Backup, BackupStatus, Protection
from berth.env import parse_repository_url
from hosts.actions import refresh_host
from operations import protection, tasks
from operations.creation import create_project
from operations.models import Operation, State
from operations.protection import RestoreTarget
from projects.models import Project, Status
from tests.agent.test_docker_engine import require_engine
from tests.stack import PORT_BASE, agent_host, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def engine():
    return require_engine()


@pytest.fixture
def docker_host(engine, agent_factory, settings, repository_folder):
    settings.BERTH_BACKUP_URL = parse_repository_url(f"file://{repository_folder}")
    settings.BERTH_WAL_ARCHIVE_TIMEOUT = 1
    settings.BERTH_OPERATION_DEADLINE = 240
    settings.BERTH_AGENT_CALL_DEADLINE = 60
    settings.BERTH_HEALTH_POLL_INITIAL = 0.2
    agent = agent_factory(driver="docker", env={"DOCKER_HOST": engine["host"]})
    host = agent_host(agent, name="docker", block_size=10, blocks=4, start=PORT_BASE + 4100)
    assert refresh_host(host, deadline=10), host.last_error
    yield host
    for ref in Project.objects.values_list("ref", flat=True):
        ids = docker(engine, "ps", "-aq", "--filter", f"label=com.docker.compose.project={ref}").split()
        docker(engine, "rm", "-f", "-v", *ids, f"berth-restore-{ref}", f"berth-verify-{ref}")
        volumes = docker(engine, "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={ref}")
        docker(engine, "volume", "rm", "-f", *volumes.split(), f"berth-verify-{ref}")
        docker(engine, "network", "rm", f"{ref}_default")


def docker(engine, *args: str) -> str:
    """The docker CLI on the test engine; cleanup's removals of what may not exist do not fail."""
    done = subprocess.run([engine["docker"], *args], env=engine["env"], capture_output=True, text=True, timeout=120)
    return done.stdout


def run(operation: Operation) -> Operation:
    assert tasks.run_operation(operation.pk) is True
    operation.refresh_from_db()
    assert operation.state == State.SUCCEEDED, f"{operation.kind}: {operation.error_code} {operation.error_message}"
    return operation


def connect(project: Project) -> psycopg.Connection:
    project = Project.objects.select_related("port_block").get(pk=project.pk)
    return psycopg.connect(
        host="127.0.0.1",
        port=project.port_block.first_port,
        user="postgres",
        password=project.secrets["postgres_password"],
        dbname="postgres",
        autocommit=True,
        connect_timeout=5,
    )


def count(project: Project) -> int | None:
    with connect(project) as conn:
        exists = conn.execute("select to_regclass('public.orders') is not null").fetchone()[0]
        return conn.execute("select count(*) from orders").fetchone()[0] if exists else None


def archived_past(project: Project, moment: float) -> None:
    def past() -> bool:
        protection.read_all_archivers()
        latest = Protection.objects.get(project=project).latest_restorable_at
        return latest is not None and latest.timestamp() > moment

    wait_for(past, timeout=60, interval=1, what="the WAL past that moment to be archived")


def test_a_docker_projects_dropped_table_comes_back_in_place_and_in_a_clone(docker_host):
    project = create_project(name="Orders", postgres_major=15, template="docker-test", host=docker_host)
    run(project.operations.get())
    found = Protection.objects.get(project=project)
    assert found.configured_at is not None, found.failure

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

    clone = protection.clone_project(project, RestoreTarget.parse(point), name="Orders branch", host=docker_host)
    run(clone.operations.get())
    assert count(clone) == 150
    assert Protection.objects.get(project=clone).configured_at is not None

    port = Project.objects.select_related("port_block").get(pk=project.pk).port_block.first_port
    restore = run(protection.request_restore(project, RestoreTarget.parse(point)))
    project = Project.objects.select_related("port_block").get(pk=project.pk)
    assert project.status == Status.ACTIVE_HEALTHY and project.port_block.first_port == port
    assert count(project) == 150, "every row committed before the point is back, the drop undone"
    assert "restored to" in restore.result_message

    run(protection.request_verify(project))
    assert Protection.objects.get(project=project).last_verify_ok is True
