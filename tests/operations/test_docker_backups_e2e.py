"""Backups of a docker project end to end: the control plane's operations (run in this process,
as a worker runs them) against a real agent with the docker driver on a real engine and a
file:// repository. Provisioning turns WAL archiving on, a base backup is recorded, a dropped
table is undone by a point-in-time restore in place (same ref, same port) and in a clone on the
same host, a restore test passes: the control plane asks a docker host what it asks a process
host. SKIPs without an engine (require_engine)."""

import subprocess
import time

import pytest

from backups.models import Backup, BackupStatus, Protection
from hosts.actions import refresh_host
from operations import protection
from operations.creation import create_project
from operations.protection import RestoreTarget
from projects.models import Project, Status
from tests.agent.test_docker_engine import require_engine
from tests.operations.backup_stack import archived_past, count, run, use_repository
from tests.stack import PORT_BASE, agent_host, connect

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def engine():
    return require_engine()


@pytest.fixture
def docker_host(engine, agent_factory, settings, repository_folder):
    use_repository(settings, repository_folder)
    agent = agent_factory(driver="docker", env={"DOCKER_HOST": engine["host"]})
    host = agent_host(agent, name="docker", block_size=10, blocks=4, start=PORT_BASE + 1050)
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
