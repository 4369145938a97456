"""The status gate: every write of a project's observed status is one conditional move,
checked against the state machine, with a typed StatusChange row for each status it changes."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from projects.models import (
    STATUS_MOVES,
    TRANSITIONAL_STATUSES,
    Project,
    Status,
    StatusCause,
    StatusChange,
    StatusMove,
    StatusMoveRefused,
)
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def gate(project, to, reason="", **kwargs):
    return Project.objects.filter(pk=project.pk).move_status(StatusMove(to, reason), cause=StatusCause.HEALTH, **kwargs)


def test_a_move_writes_the_status_and_a_typed_change_row():
    project = make_project(status=Status.UNKNOWN)
    assert gate(project, Status.COMING_UP, "provisioning", operation_id=42) == {project.pk: Status.UNKNOWN}
    project.refresh_from_db()
    assert (project.status, project.status_reason) == (Status.COMING_UP, "provisioning")
    assert project.status_changed_at is not None
    change = project.status_changes.get()
    assert (change.old, change.new, change.reason, change.cause, change.operation_id) == (
        Status.UNKNOWN,
        Status.COMING_UP,
        "provisioning",
        StatusCause.HEALTH,
        42,
    )


def test_writing_the_same_status_changes_only_its_reason_and_records_no_change():
    project = make_project(status=Status.ACTIVE_HEALTHY)
    gate(project, Status.ACTIVE_HEALTHY, "probe misconfigured")
    project.refresh_from_db()
    assert (project.status, project.status_reason) == (Status.ACTIVE_HEALTHY, "probe misconfigured")
    assert project.status_changed_at is None
    assert not StatusChange.objects.exists()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (Status.INACTIVE, Status.ACTIVE_HEALTHY),  # a stopped project starts only through an operation
        (Status.INIT_FAILED, Status.UNKNOWN),  # a failed provisioning ends only through an operation
        (Status.ACTIVE_HEALTHY, Status.REMOVED),  # only a delete (GOING_DOWN) removes
        (Status.UNKNOWN, Status.INIT_FAILED),  # only an operation's end says INIT_FAILED
        (Status.REMOVED, Status.COMING_UP),  # nothing leaves REMOVED
        (Status.REMOVED, Status.REMOVED),  # not even its reason changes
    ],
)
def test_it_refuses_a_move_the_state_machine_does_not_allow_and_writes_nothing(old, new):
    project = make_project(status=old, status_reason="as it was")
    with pytest.raises(StatusMoveRefused, match=f"from {old} to {new}"):
        gate(project, new, "no")
    project.refresh_from_db()
    assert (project.status, project.status_reason) == (old, "as it was")
    assert not StatusChange.objects.exists()


def test_one_refused_move_among_many_writes_none_of_them():
    fine, refused = make_project(status=Status.UNKNOWN), make_project(status=Status.INACTIVE)
    moves = {fine.pk: StatusMove(Status.ACTIVE_HEALTHY), refused.pk: StatusMove(Status.ACTIVE_HEALTHY)}
    with pytest.raises(StatusMoveRefused):
        Project.objects.all().move_status(moves, cause=StatusCause.HEALTH)
    assert set(Project.objects.values_list("status", flat=True)) == {Status.UNKNOWN, Status.INACTIVE}
    assert not StatusChange.objects.exists()


def test_a_project_that_no_longer_matches_the_callers_conditions_is_left_alone():
    project = make_project(status=Status.ACTIVE_UNHEALTHY)
    read_as_healthy = Project.objects.filter(status=Status.ACTIVE_HEALTHY)
    assert read_as_healthy.move_status({project.pk: StatusMove(Status.ACTIVE_UNHEALTHY, "x")}, cause="health") == {}
    project.refresh_from_db()
    assert (project.status, project.status_reason) == (Status.ACTIVE_UNHEALTHY, "")
    assert not StatusChange.objects.exists()


def test_many_projects_move_in_one_update_and_one_insert_each_with_its_own_values():
    sick, well, still = (make_project(status=Status.ACTIVE_HEALTHY) for _ in range(3))
    moves = {
        sick.pk: StatusMove(Status.ACTIVE_UNHEALTHY, "db: fail", probe_failures=3),
        well.pk: StatusMove(Status.ACTIVE_HEALTHY, "", probe_failures=0),
        still.pk: StatusMove(Status.ACTIVE_HEALTHY, "db: fail", probe_failures=1),
    }
    with CaptureQueriesContext(connection) as captured:
        moved = Project.objects.all().move_status(moves, cause=StatusCause.HEALTH)
    assert set(moved) == {sick.pk, well.pk, still.pk}
    statements = [q["sql"].split()[0] for q in captured.captured_queries]
    assert statements.count("UPDATE") == 1 and statements.count("INSERT") == 1
    rows = {p.pk: (p.status, p.status_reason, p.probe_failures) for p in Project.objects.all()}
    assert rows == {
        sick.pk: (Status.ACTIVE_UNHEALTHY, "db: fail", 3),
        well.pk: (Status.ACTIVE_HEALTHY, "", 0),
        still.pk: (Status.ACTIVE_HEALTHY, "db: fail", 1),
    }
    assert list(StatusChange.objects.values_list("project", "old", "new")) == [
        (sick.pk, Status.ACTIVE_HEALTHY, Status.ACTIVE_UNHEALTHY)
    ]


def test_the_state_machine_names_every_status_and_keeps_its_rules():
    assert set(STATUS_MOVES) == set(Status)
    assert STATUS_MOVES[Status.REMOVED] == frozenset()
    assert {old for old, news in STATUS_MOVES.items() if Status.REMOVED in news} == {Status.GOING_DOWN}
    for at_rest in (Status.INACTIVE, Status.INIT_FAILED):
        assert STATUS_MOVES[at_rest] == frozenset(TRANSITIONAL_STATUSES)
    for live in set(Status) - {Status.REMOVED}:
        assert TRANSITIONAL_STATUSES <= STATUS_MOVES[live], f"an operation can start from {live}"
