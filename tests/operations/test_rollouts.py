"""The rollout driver step by step, on PostgreSQL, with the operations' work done by hand (no worker)."""

from unittest import mock

import pytest
from django.utils import timezone

from operations import rollouts
from operations.models import Kind, Operation, Outcome, Rollout, State
from projects.models import DesiredState, Project, Status
from tests.dashboard_helpers import placed_project, process_host, register_template

pytestmark = [pytest.mark.postgres, pytest.mark.django_db, pytest.mark.usefixtures("enqueued")]


@pytest.fixture
def versions(tmp_path):
    old = register_template(tmp_path)
    return old, tmp_path


def behind(old, count, **fields):
    host = process_host(port_range_start=20000, port_range_end=20999, block_size=10)
    projects = [placed_project(old, host, name=f"P{n}", **fields) for n in range(count)]
    return sorted(projects, key=lambda project: project.ref)  # the rollout's order


def finish(entry_project: Project, *, state=State.SUCCEEDED, status="updated", restart=True, error_code=""):
    """What a worker would leave: the re-sync operation settled with its typed outcome, the
    project's status. No events: nothing that decides reads them."""
    operation = Operation.objects.get(project=entry_project, kind=Kind.RESYNC, state__in=[State.QUEUED])
    operation.state, operation.finished_at, operation.error_code = state, timezone.now(), error_code
    operation.error_message = "" if state == State.SUCCEEDED else "it broke"
    operation.restarted = restart
    if state == State.SUCCEEDED:
        operation.result, operation.result_message = status, "ok"
        Project.objects.filter(pk=entry_project.pk).update(status=Status.ACTIVE_HEALTHY)
    elif error_code == "conflict":
        operation.result, operation.conflict_paths = Outcome.CONFLICTED, ["a.toml"]
    else:
        Project.objects.filter(pk=entry_project.pk).update(status=Status.ACTIVE_UNHEALTHY)
    operation.save()
    return operation


def in_flight(rollout) -> set[str]:
    return set(rollout.projects.filter(outcome=Outcome.RUNNING).values_list("project__ref", flat=True))


def test_waves_are_a_canary_then_groups_of_the_wave_size():
    assert [rollouts.wave_of(p, 1, 2) for p in range(7)] == [0, 1, 1, 2, 2, 3, 3]
    assert [rollouts.wave_of(p, 0, 3) for p in range(4)] == [0, 0, 0, 1]
    assert [rollouts.wave_of(p, 2, 5) for p in range(4)] == [0, 0, 1, 1]


def test_it_starts_the_next_wave_only_once_every_restarted_project_of_this_one_is_healthy(versions):
    old, tmp_path = versions
    projects = behind(old, 4)
    target = register_template(tmp_path, readme="new\n")
    rollout = rollouts.start_rollout(target, canary=1, wave_size=2, concurrency=2)

    rollouts.drive(rollout.pk)
    assert in_flight(rollout) == {projects[0].ref}  # the canary alone
    op = Operation.objects.get(project=projects[0], kind=Kind.RESYNC)
    assert op.params == {"template_version": target.pk, "restart": "changed"}

    finish(projects[0])
    Project.objects.filter(pk=projects[0].pk).update(status=Status.ACTIVE_UNHEALTHY)  # sick again at the gate
    rollouts.drive(rollout.pk)
    rollout.refresh_from_db()
    assert rollout.state == Rollout.State.HALTED and projects[0].ref in rollout.reason
    assert in_flight(rollout) == set()
    assert not Operation.objects.filter(project__in=projects[1:], kind=Kind.RESYNC).exists()

    Project.objects.filter(pk=projects[0].pk).update(status=Status.ACTIVE_HEALTHY)
    assert rollouts.resume(rollout)
    rollouts.drive(rollout.pk)
    assert in_flight(rollout) == {projects[1].ref, projects[2].ref}  # wave 1, both at once
    finish(projects[1])
    rollouts.drive(rollout.pk)
    assert in_flight(rollout) == {projects[2].ref}  # wave 2 waits for the rest of wave 1
    finish(projects[2], status="unchanged", restart=False)
    rollouts.drive(rollout.pk)
    assert in_flight(rollout) == {projects[3].ref}
    finish(projects[3])
    rollouts.drive(rollout.pk)
    rollout.refresh_from_db()
    assert rollout.state == Rollout.State.FINISHED
    outcomes = dict(rollout.projects.values_list("project__ref", "outcome"))
    assert [outcomes[p.ref] for p in projects] == ["updated", "updated", "unchanged", "updated"]


def test_concurrency_limits_operations_in_flight_within_a_wave(versions):
    old, tmp_path = versions
    projects = behind(old, 5)
    target = register_template(tmp_path, readme="new\n")
    rollout = rollouts.start_rollout(target, canary=0, wave_size=5, concurrency=2)
    rollouts.drive(rollout.pk)
    assert in_flight(rollout) == {projects[0].ref, projects[1].ref}
    finish(projects[0])
    rollouts.drive(rollout.pk)
    assert in_flight(rollout) == {projects[1].ref, projects[2].ref}


def test_the_failure_budget_halts_with_the_cause_and_a_resume_retries_with_a_restart(versions):
    old, tmp_path = versions
    projects = behind(old, 3)
    target = register_template(tmp_path, readme="new\n")
    rollout = rollouts.start_rollout(target, canary=0, wave_size=3, concurrency=3, max_failures=2)
    rollouts.drive(rollout.pk)
    finish(projects[0], state=State.FAILED)
    rollouts.drive(rollout.pk)
    assert Rollout.objects.get(pk=rollout.pk).state == Rollout.State.RUNNING  # one failure is within budget
    finish(projects[1], state=State.FAILED)
    rollouts.drive(rollout.pk)
    rollout.refresh_from_db()
    assert rollout.state == Rollout.State.HALTED
    assert "2 project(s) failed" in rollout.reason and "it broke" in rollout.reason

    assert rollouts.resume(rollout)
    rollouts.drive(rollout.pk)
    retried = Operation.objects.filter(project=projects[0], state=State.QUEUED).get()
    assert retried.params["restart"] == "always"


def test_conflicts_do_not_halt_unless_asked(versions):
    old, tmp_path = versions
    projects = behind(old, 2)
    target = register_template(tmp_path, readme="new\n")
    rollout = rollouts.start_rollout(target, canary=1, wave_size=1)
    rollouts.drive(rollout.pk)
    finish(projects[0], state=State.FAILED, error_code="conflict", restart=False)
    rollouts.drive(rollout.pk)
    entry = rollout.projects.get(project=projects[0])
    assert (entry.outcome, entry.conflicts) == (Outcome.CONFLICTED, ["a.toml"])
    assert in_flight(rollout) == {projects[1].ref}

    Rollout.objects.filter(pk=rollout.pk).update(state=Rollout.State.CANCELLED)
    strict = rollouts.start_rollout(target, refs=[projects[1].ref], fail_on_conflict=True)
    Operation.objects.filter(project=projects[1], kind=Kind.RESYNC).update(state=State.CANCELLED)
    rollouts.drive(strict.pk)
    finish(projects[1], state=State.FAILED, error_code="conflict", restart=False)
    rollouts.drive(strict.pk)
    assert Rollout.objects.get(pk=strict.pk).state == Rollout.State.HALTED


def test_projects_that_do_not_run_get_files_without_a_restart(versions):
    old, tmp_path = versions
    stopped, failed = behind(old, 2)
    Project.objects.filter(pk=stopped.pk).update(desired_state=DesiredState.STOPPED, status=Status.INACTIVE)
    Project.objects.filter(pk=failed.pk).update(status=Status.INIT_FAILED)
    target = register_template(tmp_path, readme="new\n")
    rollout = rollouts.start_rollout(target, canary=0, wave_size=2)
    rollouts.drive(rollout.pk)
    params = {op.project_id: op.params["restart"] for op in Operation.objects.filter(kind=Kind.RESYNC)}
    assert params == {stopped.pk: "never", failed.pk: "never"}


def test_a_never_provisioned_project_has_its_revision_recorded_and_no_operation(versions):
    old, tmp_path = versions
    draft = Project.objects.create(name="Draft", postgres_major=15, template="postgres", template_version=old)
    target = register_template(tmp_path, readme="new\n")
    rollout = rollouts.start_rollout(target)
    rollouts.drive(rollout.pk)
    draft.refresh_from_db()
    assert draft.template_version == target and not draft.operations.exists()
    assert Rollout.objects.get(pk=rollout.pk).state == Rollout.State.FINISHED


def test_a_busy_project_waits_its_turn_instead_of_failing(versions):
    old, tmp_path = versions
    (project,) = behind(old, 1)
    busy = Operation.objects.create(project=project, kind=Kind.RESTART, deadline=timezone.now())
    target = register_template(tmp_path, readme="new\n")
    rollout = rollouts.start_rollout(target)
    rollouts.drive(rollout.pk)
    assert rollout.projects.get().outcome == Outcome.PENDING
    busy.state = State.SUCCEEDED
    busy.save()
    rollouts.drive(rollout.pk)
    assert rollout.projects.get().outcome == Outcome.RUNNING


def test_a_step_is_claimed_once_so_a_stale_driver_does_nothing(versions):
    old, tmp_path = versions
    behind(old, 2)
    target = register_template(tmp_path, readme="new\n")
    rollout = rollouts.start_rollout(target, canary=0, wave_size=2, concurrency=2)
    stale = Rollout.objects.get(pk=rollout.pk)
    assert rollouts.advance(rollout.pk)  # one step: one operation requested
    with mock.patch.object(Rollout.objects, "select_related") as select:
        select.return_value.get.return_value = stale  # a driver still holding the old step counter
        assert rollouts.advance(rollout.pk) is True  # told to read it afresh...
    assert Operation.objects.filter(kind=Kind.RESYNC).count() == 1  # ...and it requested nothing


def test_cancel_skips_pending_projects_and_cancels_queued_operations(versions):
    old, tmp_path = versions
    projects = behind(old, 3)
    target = register_template(tmp_path, readme="new\n")
    rollout = rollouts.start_rollout(target, canary=1, wave_size=2)
    rollouts.drive(rollout.pk)
    assert rollouts.cancel(rollout)
    outcomes = dict(rollout.projects.values_list("project__ref", "outcome"))
    assert set(outcomes.values()) == {Outcome.SKIPPED}
    assert Operation.objects.get(project=projects[0], kind=Kind.RESYNC).state == State.CANCELLED
    assert not rollouts.cancel(rollout)


def test_rollback_moves_only_what_the_rollout_moved_back_to_where_each_came_from(versions):
    old, tmp_path = versions
    moved, conflicted = behind(old, 2)
    target = register_template(tmp_path, readme="new\n")
    rollout = rollouts.start_rollout(target, canary=0, wave_size=2, concurrency=2)
    rollouts.drive(rollout.pk)
    finish(moved)
    Project.objects.filter(pk=moved.pk).update(template_version=target)
    finish(conflicted, state=State.FAILED, error_code="conflict", restart=False)
    rollouts.drive(rollout.pk)
    assert Rollout.objects.get(pk=rollout.pk).state == Rollout.State.FINISHED

    back = rollouts.rollback(rollout)

    assert back.rollback_of == rollout and back.target == old
    assert list(back.projects.values_list("project", "from_version", "target_version")) == [
        (moved.pk, target.pk, old.pk)
    ]


def test_it_refuses_a_rollout_with_nothing_to_move(versions):
    old, tmp_path = versions
    with pytest.raises(rollouts.RolloutRefused, match="no postgres project to move"):
        rollouts.start_rollout(old)


def test_rolling_back_a_halted_rollout_cancels_it_first(versions):
    old, tmp_path = versions
    canary, untouched = behind(old, 2)
    target = register_template(tmp_path, readme="new\n")
    rollout = rollouts.start_rollout(target, canary=1, wave_size=1)
    rollouts.drive(rollout.pk)
    finish(canary)
    Project.objects.filter(pk=canary.pk).update(template_version=target, status=Status.ACTIVE_UNHEALTHY)
    rollouts.drive(rollout.pk)
    rollout.refresh_from_db()
    assert rollout.state == Rollout.State.HALTED

    back = rollouts.rollback(rollout)

    rollout.refresh_from_db()
    assert rollout.state == Rollout.State.CANCELLED
    assert rollout.projects.get(project=untouched).outcome == Outcome.SKIPPED
    assert list(back.projects.values_list("project", "target_version")) == [(canary.pk, old.pk)]
