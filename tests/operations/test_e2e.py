"""End to end: a real django-q2 cluster, a real agent and the process driver's real Postgres."""

import socket

import psycopg
import pytest
from django.conf import settings

from hosts.models import RuntimeHost
from operations.actions import OperationInProgress, request_operation, retry_project
from operations.creation import create_project
from operations.models import Kind, Operation, OperationEvent, State
from operations.reaper import reap
from ports.models import BlockState, PortBlock
from projects.models import TRANSITIONAL_STATUSES, Project, Status
from templating.actions import sync_templates
from tests.stack import SilentServer, Worker, agent_host, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DEADLINE = 40  # seconds an operation may run in these tests


@pytest.fixture
def worker_factory(tmp_path):
    workers = []

    def start(**overrides):
        settings_overrides = {"BERTH_OPERATION_DEADLINE": DEADLINE, "BERTH_AGENT_CALL_DEADLINE": 10}
        worker = Worker(tmp_path, **{**settings_overrides, **overrides})
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def local_host(agent_factory):
    return agent_host(agent_factory())


def status_of(project) -> str:
    return Project.objects.values_list("status", flat=True).get(pk=project.pk)


def wait_status(project, status, timeout=60):
    wait_for(lambda: status_of(project) == status, timeout=timeout, what=f"{project.ref} to be {status}")


def last_operation(project) -> Operation:
    return Operation.objects.filter(project=project).order_by("-created_at").first()


def test_a_project_lives_its_whole_life(local_host, worker_factory):
    worker_factory()
    project = create_project(name="Orders", postgres_major=15, template="postgres")
    wait_status(project, Status.ACTIVE_HEALTHY)
    project.refresh_from_db()
    block = project.port_block
    assert local_host.port_range_start <= block.first_port <= block.last_port <= local_host.port_range_end

    with psycopg.connect(
        host="127.0.0.1",
        port=block.first_port,
        user="postgres",
        password=project.secrets["postgres_password"],
        dbname="postgres",
        connect_timeout=5,
    ) as conn:
        assert conn.info.server_version // 10000 == 15

    with pytest.raises(OperationInProgress):
        request_operation(project, Kind.STOP)
        request_operation(project, Kind.START)
    wait_status(project, Status.INACTIVE)
    request_operation(project, Kind.START)
    wait_status(project, Status.ACTIVE_HEALTHY)
    kinds = list(project.operations.order_by("created_at").values_list("kind", "state"))
    assert kinds == [("provision", "succeeded"), ("stop", "succeeded"), ("start", "succeeded")]

    request_operation(project, Kind.DELETE, params={"purge_data": True})
    wait_status(project, Status.REMOVED)
    block.refresh_from_db()
    assert block.state == BlockState.COOLING
    assert block.last_project_ref == project.ref
    assert project.operations.count() == 4


@pytest.mark.parametrize("trickle", [False, True], ids=["never-answers", "trickles"])
def test_a_wedged_agent_fails_the_operation_within_its_deadline(trickle, worker_factory, tmp_path):
    sync_templates()
    wedged = SilentServer(trickle)
    try:
        host = RuntimeHost.objects.create(
            name="wedged",
            agent_url=wedged.url,
            agent_token="t",
            port_range_start=42000,
            port_range_end=42099,
            block_size=20,
            capabilities={"driver": "process", "postgres_versions": [15]},
        )
        deadline, call_deadline = 20, 4  # the shortest the startup check allows: a call plus the 15 s reserve
        worker_factory(BERTH_OPERATION_DEADLINE=deadline, BERTH_AGENT_CALL_DEADLINE=call_deadline)
        project = create_project(name="Wedged", postgres_major=15, template="postgres", host=host)
        operation = wait_for(
            lambda: Operation.objects.filter(pk=last_operation(project).pk, started_at__isnull=False).first(),
            timeout=30,
            what="the operation to be claimed",
        )
        settled = wait_for(
            lambda: Operation.objects.filter(pk=operation.pk).exclude(state__in=["queued", "running"]).first(),
            timeout=deadline + 10,
            what="the operation to settle",
        )
        took = (settled.finished_at - settled.started_at).total_seconds()
        assert took <= deadline + 2, took
        assert settled.state in (State.FAILED, State.TIMED_OUT)
        assert status_of(project) not in TRANSITIONAL_STATUSES
        assert status_of(project) == Status.INIT_FAILED
    finally:
        wedged.close()


def test_a_worker_killed_mid_provision_is_recovered_by_the_reaper_and_retry_succeeds(local_host, worker_factory):
    # The runtime's Postgres cannot come up on a port held here, so provisioning waits for health.
    worker = worker_factory(BERTH_OPERATION_DEADLINE=20, BERTH_AGENT_CALL_DEADLINE=5)
    project = create_project(name="Killed", postgres_major=15, template="postgres")
    wait_for(
        lambda: Operation.objects.filter(project=project, state=State.RUNNING).exists(),
        timeout=30,
        what="the provisioning to start",
    )
    worker.kill()
    operation = last_operation(project)
    assert operation.state == State.RUNNING
    wait_for(lambda: reap() and True, timeout=40, interval=1, what="the reaper to act after the deadline")
    operation.refresh_from_db()
    assert operation.state == State.TIMED_OUT
    assert status_of(project) == Status.INIT_FAILED

    worker_factory()
    retry = retry_project(project)
    assert retry.attempt == 2
    wait_status(project, Status.ACTIVE_HEALTHY)
    assert PortBlock.objects.filter(project=project).count() == 1
    assert settings.BERTH_OPERATION_DEADLINE  # settings untouched in this process


def test_cancelling_a_provisioning_kills_its_work_and_stops_its_postgres(local_host, worker_factory, tmp_path):
    import shutil

    from agent.client import AgentClient
    from operations.actions import cancel_operation
    from tests.factories import register_template
    from tests.stack import RUNTIMES

    # The postgres template plus a probe of a port nothing listens on: Postgres runs, health never comes.
    folder = tmp_path / "pgsick"
    shutil.copytree(RUNTIMES / "postgres", folder)
    manifest = (folder / "manifest.toml").read_text().replace("db = 0\n", "db = 0\nnever = 1\n")
    (folder / "manifest.toml").write_text(manifest + '\n[[probes]]\nname = "never"\nkind = "tcp"\nslot = "never"\n')
    register_template(folder)
    worker_factory(Q_WORKERS=2)  # one waits for health, the other runs the cleanup
    project = create_project(name="Cancelled", postgres_major=15, template="pgsick")
    operation = wait_for(
        lambda: Operation.objects.filter(project=project, events__message="Runtime is running").first(),
        timeout=30,
        what="the runtime to come up",
    )
    agent = AgentClient(local_host.agent_url, local_host.agent_token, deadline=10)
    assert agent.status(project.ref).state == "running"

    assert cancel_operation(operation) is True

    wait_for(
        lambda: Project.objects.get(pk=project.pk).status_reason.endswith("its runtime is stopped"),
        timeout=30,
        what="the cleanup to stop the runtime",
    )
    assert agent.status(project.ref).state == "stopped"
    assert status_of(project) == Status.INIT_FAILED
    from django_q.models import Task

    operation.refresh_from_db()
    wait_for(lambda: Task.objects.filter(id=operation.task_id).exists(), timeout=30, what="the worker to finish")
    operation.refresh_from_db()
    assert operation.state == State.CANCELLED, "the worker's late verdict did not overwrite the cancel"


def test_a_start_whose_port_was_taken_meanwhile_fails_at_once_with_postgres_own_message(local_host, worker_factory):
    # A deadline far longer than the wait below: failing only at the health deadline would not pass.
    worker_factory(BERTH_OPERATION_DEADLINE=180)
    project = create_project(name="Taken", postgres_major=15, template="postgres")
    wait_status(project, Status.ACTIVE_HEALTHY)
    request_operation(project, Kind.STOP)
    wait_status(project, Status.INACTIVE)
    port = PortBlock.objects.get(project=project).first_port

    # While it was stopped, an outgoing connection took its port on IPv4.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        start = request_operation(project, Kind.START)
        failed = wait_for(
            lambda: Operation.objects.filter(pk=start.pk, state=State.FAILED).first(),
            timeout=30,
            what="the start to fail",
        )
    bind_message = 'could not bind IPv4 address "127.0.0.1": Address already in use'
    assert bind_message in failed.error_message
    finished = OperationEvent.objects.get(operation=failed, step="finished")
    assert finished.level == OperationEvent.Level.ERROR and bind_message in finished.message
    assert status_of(project) not in TRANSITIONAL_STATUSES

    retry = request_operation(project, Kind.START)  # the port is free again
    wait_status(project, Status.ACTIVE_HEALTHY)
    assert Operation.objects.get(pk=retry.pk).state == State.SUCCEEDED
