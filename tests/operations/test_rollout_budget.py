"""The failure budget counts failures since the rollout started (or last resumed), across its
waves: failures spread over waves, none of which reaches the budget alone, halt it before
the next wave (docs/architecture.md, Rollouts: the driver's budget step)."""

import pytest
from django.utils import timezone

from operations import rollouts
from operations.models import Kind, Operation, Outcome, Rollout, State
from projects.models import Project, Status
from tests.dashboard_helpers import placed_project, process_host, register_template

pytestmark = [pytest.mark.postgres, pytest.mark.django_db, pytest.mark.usefixtures("enqueued")]


def behind(old, count):
    host = process_host(port_range_start=20000, port_range_end=20999, block_size=10)
    projects = [placed_project(old, host, name=f"P{n}") for n in range(count)]
    return sorted(projects, key=lambda project: project.ref)  # the rollout's order


def settle(project: Project, *, failed: bool) -> None:
    """What a worker leaves: the queued re-sync settled, without a restart (so the gate waits on no health)."""
    operation = Operation.objects.get(project=project, kind=Kind.RESYNC, state=State.QUEUED)
    operation.state = State.FAILED if failed else State.SUCCEEDED
    operation.finished_at, operation.restarted = timezone.now(), False
    if failed:
        operation.error_code, operation.error_message = "agent", f"{project.name} broke"
    else:
        operation.result, operation.result_message = Outcome.UPDATED, "ok"
    operation.save()


def queued(projects) -> set[str]:
    return set(Operation.objects.filter(project__in=projects, kind=Kind.RESYNC).values_list("project__ref", flat=True))


def test_failures_in_different_waves_add_up_to_the_budget(tmp_path):
    old = register_template(tmp_path)
    projects = behind(old, 5)
    target = register_template(tmp_path, readme="new\n")
    rollout = rollouts.start_rollout(target, canary=1, wave_size=2, concurrency=2, max_failures=2)

    rollouts.drive(rollout.pk)
    settle(projects[0], failed=True)  # the canary: one failure, within the budget
    rollouts.drive(rollout.pk)
    assert Rollout.objects.get(pk=rollout.pk).state == Rollout.State.RUNNING
    assert queued(projects[1:3]) == {projects[1].ref, projects[2].ref}  # wave 1 started

    settle(projects[1], failed=True)  # the second failure, the first of its wave
    settle(projects[2], failed=False)
    rollouts.drive(rollout.pk)

    rollout.refresh_from_db()
    assert rollout.state == Rollout.State.HALTED
    assert "2 project(s) failed (budget 2)" in rollout.reason
    assert f"{projects[0].ref}: " in rollout.reason and f"{projects[1].ref}: " in rollout.reason
    assert queued(projects[3:]) == set()  # the last wave never started
    assert Project.objects.filter(pk__in=[p.pk for p in projects[3:]], status=Status.ACTIVE_HEALTHY).count() == 2
