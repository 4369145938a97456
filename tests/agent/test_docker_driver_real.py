"""The agent's docker driver against a real engine, end to end.

A real agent runs with BERTH_AGENT_DRIVER=docker (and the engine's DOCKER_HOST); the
operations run in a real django-q2 worker, as in tests/operations/test_e2e.py. Runtimes
use the docker-test template (Debian's PostgreSQL 15 and a tiny gateway, images built
locally by scripts/docker-images). Without an engine, docker-compose or the images these
tests are SKIPPED with the reason, never failed.
"""

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent.api import FileSpec
from agent.client import AgentTimeout
from hosts.actions import refresh_host
from operations.actions import request_operation
from operations.creation import create_project
from operations.health import probe_requests
from operations.models import Kind, Operation, State
from projects.models import Project, Status
from tests.agent.test_docker_engine import require_engine
from tests.factories import register_template
from tests.stack import PORT_BASE, ROOT, SilentServer, Worker, agent_host, connect, wait_for

TEMPLATE = ROOT / "runtimes" / "docker-test"
DEADLINE = 90  # seconds an operation may run here (a cold Postgres initdb takes a few)


@pytest.fixture(scope="module")
def engine():
    return require_engine()


def docker(engine, *args: str, check: bool = True) -> str:
    done = subprocess.run(
        [engine["docker"], *args], env=engine["env"], capture_output=True, text=True, timeout=60, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def containers(engine, ref: str) -> dict[str, dict]:
    """The compose project's containers by service: state and published ports {container: host}."""
    listing = docker(
        engine,
        "ps",
        "--all",
        "--filter",
        f"label=com.docker.compose.project={ref}",
        "--format",
        '{{.Label "com.docker.compose.service"}}\t{{.State}}\t{{.ID}}\t{{.Ports}}',
    )
    found = {}
    for line in listing.splitlines():
        service, state, ident, ports = (line.split("\t") + [""])[:4]
        published = {int(c): int(h) for h, c in re.findall(r"0\.0\.0\.0:(\d+)->(\d+)/tcp", ports)}
        found[service] = {"state": state, "id": ident, "ports": published}
    return found


def volumes(engine, ref: str) -> list[str]:
    return sorted(docker(engine, "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={ref}").split())


def label_of(engine, container_id: str, label: str) -> str:
    return docker(engine, "inspect", "-f", f'{{{{ index .Config.Labels "{label}" }}}}', container_id).strip()


@pytest.fixture
def cleanup(engine):
    """Refs whose containers and volumes are removed after the test, whatever happened."""
    refs: list[str] = []
    yield refs
    for ref in refs:
        ids = docker(engine, "ps", "-aq", "--filter", f"label=com.docker.compose.project={ref}", check=False).split()
        if ids:
            docker(engine, "rm", "-f", "-v", *ids, check=False)
        if names := volumes(engine, ref):
            docker(engine, "volume", "rm", "-f", *names, check=False)
        docker(engine, "network", "rm", f"{ref}_default", check=False)


# --- the agent alone ----------------------------------------------------------------------


def compose_processes(ref: str) -> list[int]:
    """Pids of compose processes still running for project `ref`."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"compose" in arg for arg in argv[:3]) and ref.encode() in argv:
            pids.append(int(cmdline.parent.name))
    return pids


def test_a_compose_command_that_hangs_is_killed_at_its_deadline(engine, agent_factory, cleanup):
    registry = SilentServer()
    agent = agent_factory(driver="docker", env={"DOCKER_HOST": engine["host"]})
    client, ref = agent.client(deadline=30), "hangs" + str(registry.port)
    cleanup.append(ref)
    compose = f'services:\n  web:\n    image: "127.0.0.1:{registry.port}/berth/never-answers:1"\n'
    client.put_files(
        ref,
        [
            FileSpec("runtime.toml", b'driver = "docker"\ncompose_file = "docker-compose.yml"\n'),
            FileSpec("docker-compose.yml", compose.encode()),
        ],
    )
    statuses = []
    watcher = threading.Thread(target=lambda: (time.sleep(1.5), statuses.append(client.status(ref))))
    try:
        started = time.monotonic()
        watcher.start()
        with pytest.raises(AgentTimeout) as timed_out:
            client.up(ref, deadline_s=4)
        took = time.monotonic() - started
        watcher.join()
    finally:
        registry.close()

    assert 4 <= took <= 6.5, took
    assert "outlived its 4s deadline and was killed" in str(timed_out.value)
    assert compose_processes(ref) == []  # the whole process group is gone
    # A read-only call was answered while the up hung (no lock, no wait).
    assert [s.state for s in statuses] == ["stopped"]
    client.delete(ref, purge_data=True)


# --- operations through a real worker -----------------------------------------------------


@pytest.fixture
def docker_host(engine, agent_factory, db):
    agent = agent_factory(driver="docker", env={"DOCKER_HOST": engine["host"]})
    host = agent_host(agent, name="docker", block_size=10, blocks=4, start=PORT_BASE + 1000)
    assert refresh_host(host, deadline=10), host.last_error
    assert host.driver == "docker" and host.capabilities["compose"]
    host.agent = agent
    return host


@pytest.fixture
def worker_factory(tmp_path):
    workers = []

    def start(**overrides):
        settings = {
            "BERTH_OPERATION_DEADLINE": DEADLINE,
            "BERTH_AGENT_CALL_DEADLINE": 15,
            "BERTH_HEALTH_POLL_INITIAL": 0.5,
            "BERTH_HEALTH_POLL_MAX": 1,
        }
        worker = Worker(tmp_path, **{**settings, **overrides})
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def status_of(project) -> str:
    return Project.objects.values_list("status", flat=True).get(pk=project.pk)


def timeline(project) -> str:
    """The project's operations and their events, for failure messages."""
    lines = []
    for operation in Operation.objects.filter(project=project).order_by("created_at"):
        lines.append(f"{operation.kind} {operation.state} {operation.error_code} {operation.error_message}")
        lines += [f"    {e.step}: {e.message}" for e in operation.events.order_by("pk")]
    return "\n".join(lines)


def wait_status(project, status, timeout=DEADLINE + 10):
    try:
        wait_for(lambda: status_of(project) == status, timeout=timeout, what=f"{project.ref} to be {status}")
    except AssertionError as error:
        raise AssertionError(f"{error}; status {status_of(project)}\n{timeline(project)}") from None


def settled(operation, timeout=DEADLINE + 10) -> Operation:
    return wait_for(
        lambda: Operation.objects.filter(pk=operation.pk).exclude(state__in=["queued", "running"]).first(),
        timeout=timeout,
        what=f"operation {operation.pk} to settle",
    )


def last_operation(project) -> Operation:
    return Operation.objects.filter(project=project).order_by("-created_at").first()


def variant(tmp_path: Path, name: str) -> Path:
    """A copy of runtimes/docker-test under another folder name, to be edited by a test."""
    folder = tmp_path / "templates" / name
    shutil.copytree(TEMPLATE, folder)
    return folder


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_docker_project_lives_its_whole_life(engine, docker_host, worker_factory, cleanup, tmp_path):
    worker_factory(Q_WORKERS=2)
    kept = create_project(name="Kept", postgres_major=15, template="docker-test", host=docker_host)
    purged = create_project(name="Purged", postgres_major=15, template="docker-test", host=docker_host)
    cleanup.extend([kept.ref, purged.ref])

    # Provisioned through the agent's docker driver: containers up on the leased ports.
    wait_status(kept, Status.ACTIVE_HEALTHY)
    wait_status(purged, Status.ACTIVE_HEALTHY)
    kept.refresh_from_db()
    block = kept.port_block
    running = containers(engine, kept.ref)
    assert {s: c["state"] for s, c in running.items()} == {"db": "running", "api": "running"}
    assert running["db"]["ports"] == {5432: block.first_port}
    assert running["api"]["ports"] == {8000: block.first_port + 1}
    assert docker_host.agent.client().status(kept.ref).state == "running"

    # The template's probes, run by the agent on its probe host, all pass, and the db probe
    # read the requested major from the server. The agent runs beside the engine here (bare
    # metal, or a container whose own dockerd publishes the ports), so it probes loopback.
    info = docker_host.agent.client().info()
    assert (info.driver, info.probe_host) == ("docker", "127.0.0.1")
    assert info.probe_host_source in ("loopback", "engine-network")
    results = {r.name: r for r in docker_host.agent.client().health(probe_requests(kept), deadline_s=10)}
    assert {name: r.status for name, r in results.items()} == {"db": "pass", "api": "pass"}
    assert results["db"].server_major == 15
    with connect(kept) as conn:
        assert conn.info.server_version // 10000 == 15
        conn.execute("CREATE TABLE kept_rows (id int); INSERT INTO kept_rows VALUES (1)")

    # Delete with purge removes containers and volumes, while the other project runs on.
    assert volumes(engine, purged.ref) == [f"{purged.ref}_db-data"]
    request_operation(purged, Kind.DELETE, params={"purge_data": True})
    # Stop and start: the containers go, the data stays, and come back on the same ports.
    request_operation(kept, Kind.STOP)
    wait_status(purged, Status.REMOVED)
    assert containers(engine, purged.ref) == {} and volumes(engine, purged.ref) == []
    wait_status(kept, Status.INACTIVE)
    assert containers(engine, kept.ref) == {}
    assert volumes(engine, kept.ref) == [f"{kept.ref}_db-data"]
    assert docker_host.agent.client().status(kept.ref).state == "stopped"
    request_operation(kept, Kind.START)
    wait_status(kept, Status.ACTIVE_HEALTHY)
    assert containers(engine, kept.ref)["db"]["ports"] == {5432: block.first_port}
    with connect(kept) as conn:
        assert conn.execute("SELECT id FROM kept_rows").fetchall() == [(1,)]

    # A re-sync that changes the compose file, and the restart that applies it.
    before = containers(engine, kept.ref)["api"]["id"]
    folder = variant(tmp_path, "docker-test")
    compose = (folder / "docker-compose.yml").read_text()
    edited = compose.replace('      GATEWAY_PORT: "8000"\n', '      GATEWAY_PORT: "8000"\n      BERTH_VARIANT: "r2"\n')
    edited = edited.replace(
        "    labels:\n      berth.project: {{ project.ref | tojson }}\n\nvolumes:",
        '    labels:\n      berth.project: {{ project.ref | tojson }}\n      berth.variant: "r2"\n\nvolumes:',
    )
    assert edited.count("r2") == 2
    (folder / "docker-compose.yml").write_text(edited)
    target = register_template(folder)
    resync = request_operation(kept, Kind.RESYNC)
    assert settled(resync).state == State.SUCCEEDED, settled(resync).error_message
    kept.refresh_from_db()
    assert kept.template_version == target and kept.status == Status.ACTIVE_HEALTHY
    events = list(resync.events.values_list("step", "message"))
    steps = [step for step, _ in events]
    after = steps[steps.index("resync") :]
    # The restarted stack may still be starting at the first probe: the wait then says
    # "Waiting for probes" before "All probes pass".
    assert after[:2] == ["resync", "restart"] and after[-1] == "finished", events
    assert after[2:-1] and set(after[2:-1]) == {"health"} and events[-2][1] == "All probes pass", events
    after = containers(engine, kept.ref)["api"]["id"]
    assert after != before and label_of(engine, after, "berth.variant") == "r2"
    with connect(kept) as conn:  # a restart keeps the data
        assert conn.execute("SELECT id FROM kept_rows").fetchall() == [(1,)]

    # Delete without purge: the containers go, the volume stays.
    request_operation(kept, Kind.DELETE)
    wait_status(kept, Status.REMOVED)
    assert containers(engine, kept.ref) == {}
    assert volumes(engine, kept.ref) == [f"{kept.ref}_db-data"]
    assert docker_host.agent.client().status(kept.ref).state == "absent"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_stack_that_never_becomes_healthy_ends_init_failed_within_its_deadline(
    engine, docker_host, worker_factory, cleanup, tmp_path
):
    folder = variant(tmp_path, "docker-sick")
    manifest = (folder / "manifest.toml").read_text()
    # The gateway answers 200 on /health; this probe waits for a status it never sends.
    (folder / "manifest.toml").write_text(manifest.replace("expect_status = 200", "expect_status = 418"))
    register_template(folder)
    deadline = 30
    worker_factory(BERTH_OPERATION_DEADLINE=deadline)
    project = create_project(name="Sick", postgres_major=15, template="docker-sick", host=docker_host)
    cleanup.append(project.ref)

    operation = settled(last_operation(project), timeout=deadline + 30)

    took = (operation.finished_at - operation.started_at).total_seconds()
    assert took <= deadline + 2, took
    assert (operation.state, operation.error_code) == (State.FAILED, "unhealthy")
    assert status_of(project) == Status.INIT_FAILED
    waits = operation.events.filter(step="health").values_list("message", flat=True)
    assert any("api: fail" in message for message in waits), list(waits)
    # The stack was stopped (data kept), not left running and not torn down.
    assert containers(engine, project.ref) == {}
    assert volumes(engine, project.ref) == [f"{project.ref}_db-data"]
    assert docker_host.agent.client().status(project.ref).state == "stopped"
