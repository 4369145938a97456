"""A project's major upgrade end to end: a real worker, a real agent started from the checkout
and real clusters. The upgrade keeps the data and serves the new major on the same port; a
rollback returns to the old one; discard removes it; a refused upgrade starts nothing; a
cancelled upgrade leaves the old major serving; a fleet moves in waves through a rollout."""

import pytest
from django.core.management import call_command

from operations.actions import cancel_operation
from operations.creation import create_project
from operations.models import Kind, Operation, Rollout, State
from operations.rollouts import start_upgrade_rollout
from operations.upgrades import (
    UpgradeRefused,
    request_upgrade,
    request_upgrade_discard,
    request_upgrade_rollback,
    upgrade_status,
)
from projects.models import Project, Status
from tests.stack import Worker, agent_host, connect, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(tmp_path):
    worker = Worker(tmp_path, BERTH_OPERATION_DEADLINE=240, BERTH_AGENT_CALL_DEADLINE=60, BERTH_AGENT_PAGE_DEADLINE=20)
    yield worker
    worker.stop()


@pytest.fixture
def agent(agent_factory, settings):
    settings.BERTH_AGENT_PAGE_DEADLINE = 20  # the check runs commands; this machine is shared and loaded
    agent = agent_factory()
    agent_host(agent, block_size=1, blocks=4)
    return agent


def healthy(project: Project, timeout: float = 180) -> Project:
    wait_for(
        lambda: Project.objects.get(pk=project.pk).status == Status.ACTIVE_HEALTHY,
        timeout=timeout,
        what=f"{project.ref} to be healthy",
    )
    return Project.objects.get(pk=project.pk)


def finished(operation: Operation, timeout: float = 300) -> Operation:
    return wait_for(
        lambda: Operation.objects.filter(pk=operation.pk).exclude(state__in=[State.QUEUED, State.RUNNING]).first(),
        timeout=timeout,
        what=f"operation {operation.pk} to finish",
    )


def major_of(project: Project) -> int:
    with connect(project) as conn:
        return conn.execute("select current_setting('server_version_num')::int / 10000").fetchone()[0]


def test_a_project_is_upgraded_rolled_back_upgraded_again_and_its_old_cluster_discarded(agent, worker):
    project = healthy(create_project(name="Orders", postgres_major=15, template="postgres"))
    with connect(project) as conn:
        conn.execute("create table orders (id bigserial primary key, note text)")
        conn.execute("insert into orders (note) select 'order ' || i from generate_series(1, 5000) i")

    upgrade = finished(request_upgrade(project, 17))
    assert upgrade.state == State.SUCCEEDED, upgrade.error_message
    project = healthy(project)
    assert (project.postgres_major, project.previous_postgres_major) == (17, 15)
    assert project.previous_kept_until is not None
    assert major_of(project) == 17
    with connect(project) as conn:
        assert conn.execute("select count(*) from orders").fetchone() == (5000,)
        conn.execute("insert into orders (note) values ('on 17')")
    steps = list(upgrade.events.values_list("step", flat=True))
    assert steps.index("backup") < steps.index("prepare") < steps.index("switch") < steps.index("health")
    status = upgrade_status(project)["databaseUpgradeStatus"]
    assert (status["status"], status["target_version"], status["progress"]) == (1, 17, "9_completed_upgrade")

    rollback = finished(request_upgrade_rollback(project))
    assert rollback.state == State.SUCCEEDED, rollback.error_message
    project = healthy(project)
    assert (project.postgres_major, project.previous_postgres_major) == (15, None)
    assert major_of(project) == 15
    with connect(project) as conn:
        assert conn.execute("select count(*) from orders").fetchone() == (5000,)  # the write on 17 went with it

    assert finished(request_upgrade(project, 16)).state == State.SUCCEEDED
    project = healthy(project)
    discard = finished(request_upgrade_discard(project))
    assert discard.state == State.SUCCEEDED, discard.error_message
    project.refresh_from_db()
    assert (project.postgres_major, project.previous_postgres_major) == (16, None)
    assert not list((agent.root / project.ref / ".berth-pg").glob("previous*"))
    with pytest.raises(UpgradeRefused, match="no earlier major"):
        request_upgrade_rollback(project)


def test_a_refused_upgrade_names_the_reason_and_starts_nothing(agent, worker):
    project = healthy(create_project(name="Admin", postgres_major=16, template="postgres"))
    with connect(project) as conn:
        conn.execute("create extension adminpack")  # 17 no longer ships it
    before = project.operations.count()
    with pytest.raises(UpgradeRefused) as refused:
        request_upgrade(project, 17)
    assert "adminpack" in str(refused.value)
    with pytest.raises(UpgradeRefused, match="not offered"):
        request_upgrade(project, 18)
    assert project.operations.count() == before
    assert Project.objects.get(pk=project.pk).status == Status.ACTIVE_HEALTHY


def test_a_cancelled_upgrade_leaves_the_old_major_serving_with_its_data(agent, worker):
    project = healthy(create_project(name="Cancel", postgres_major=15, template="postgres"))
    with connect(project) as conn:
        conn.execute("create table t (id int primary key)")
        conn.execute("insert into t select generate_series(1, 1000)")
    operation = request_upgrade(project, 17)
    wait_for(
        lambda: operation.events.filter(step="prepare").exists(), timeout=120, what="the new cluster to be building"
    )
    assert cancel_operation(Operation.objects.get(pk=operation.pk))
    wait_for(
        lambda: (
            Operation.objects.get(pk=operation.pk).events.filter(step="cleanup").exists()
            or Project.objects.get(pk=project.pk).status in (Status.ACTIVE_HEALTHY, Status.UNKNOWN)
        ),
        timeout=60,
        what="the cleanup",
    )
    wait_for(
        lambda: not (agent.root / project.ref / ".berth-pg" / "next").exists(),
        timeout=60,
        what="the cluster it was building to be removed",
    )
    project.refresh_from_db()
    assert project.postgres_major == 15
    assert major_of(project) == 15
    assert upgrade_status(project)["databaseUpgradeStatus"]["status"] == 2
    with connect(project) as conn:
        assert conn.execute("select count(*) from t").fetchone() == (1000,)


def test_a_fleet_is_upgraded_in_waves(agent, worker):
    projects = [healthy(create_project(name=f"Fleet {n}", postgres_major=16, template="postgres")) for n in range(3)]
    rollout = start_upgrade_rollout("postgres", 17, canary=1, wave_size=2, concurrency=2, label="test")
    wait_for(
        lambda: Rollout.objects.get(pk=rollout.pk).state not in (Rollout.State.RUNNING,),
        timeout=600,
        what="the rollout to end",
    )
    rollout.refresh_from_db()
    assert rollout.state == Rollout.State.FINISHED, rollout.reason
    for project in projects:
        project.refresh_from_db()
        assert project.postgres_major == 17 and major_of(project) == 17
    waves = dict(rollout.projects.values_list("project__ref", "wave"))
    assert sorted(waves.values()) == [0, 1, 1]
    kinds = set(Operation.objects.filter(project__in=projects, kind=Kind.UPGRADE).values_list("state", flat=True))
    assert kinds == {State.SUCCEEDED}
    call_command("migrate_runtimes", "--show", str(rollout.pk))
