"""/v1/projects/{ref}/database/backups and .../restore-pitr in the platform's shapes (as
Supabase CLI 2.117.0 reads and sends them), on records the scripted agent's operations wrote."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from backups.models import Backup, BackupStatus, BackupTrigger, Protection, Repository
from operations.models import Kind, Operation
from orgs.models import Role
from projects.models import Status
from tests.api_helpers import api_as, join, make_org, make_user
from tests.factories import make_runtime_project

pytestmark = pytest.mark.django_db

EARLIEST = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def project(alice, postgres):
    org = make_org("Acme")
    join(alice, org, Role.DEVELOPER)
    project = make_runtime_project(postgres, organization=org, status=Status.ACTIVE_HEALTHY)
    repository = Repository.objects.default()
    Protection.objects.create(
        project=project,
        repository=repository,
        configured_at=timezone.now(),
        earliest_restorable_at=EARLIEST,
        latest_restorable_at=timezone.now(),
    )
    Backup.objects.create(
        project=project,
        repository=repository,
        trigger=BackupTrigger.SCHEDULE,
        status=BackupStatus.COMPLETED,
        started_at=EARLIEST - timedelta(minutes=1),
    )
    return project


def test_the_list_is_the_platforms_shape(alice, project):
    reply = api_as(alice).get(f"/v1/projects/{project.ref}/database/backups")
    assert reply.status_code == 200
    body = reply.json()
    assert body["walg_enabled"] is True and body["pitr_enabled"] is True
    assert body["physical_backup_data"]["earliest_physical_backup_date_unix"] == int(EARLIEST.timestamp())
    (backup,) = body["backups"]
    assert backup["status"] == "COMPLETED" and backup["is_physical_backup"] is True
    assert backup["inserted_at"].startswith("2026-12-01T07:59")


def test_an_unprotected_project_lists_nothing_and_says_so(alice, project):
    Protection.objects.filter(project=project).update(enabled=False)
    body = api_as(alice).get(f"/v1/projects/{project.ref}/database/backups").json()
    assert (body["walg_enabled"], body["backups"]) == (False, [])


def test_a_restore_inside_the_window_is_started(alice, project):
    at = int((EARLIEST + timedelta(hours=1)).timestamp())
    reply = api_as(alice).post(
        f"/v1/projects/{project.ref}/database/backups/restore-pitr", {"recovery_time_target_unix": at}
    )
    assert reply.status_code == 201, reply.content
    operation = Operation.objects.get(project=project, kind=Kind.RESTORE)
    assert operation.params["target_unix"] == at


def test_a_restore_before_the_window_is_refused_with_the_window(alice, project):
    at = int((EARLIEST - timedelta(days=1)).timestamp())
    reply = api_as(alice).post(
        f"/v1/projects/{project.ref}/database/backups/restore-pitr", {"recovery_time_target_unix": at}
    )
    assert reply.status_code == 400
    assert "the restorable window is 2026-12-01 08:00:00 UTC to " in reply.json()["message"]
    assert not Operation.objects.filter(project=project, kind=Kind.RESTORE).exists()


def test_an_unparsable_time_is_a_clear_error(alice, project):
    reply = api_as(alice).post(
        f"/v1/projects/{project.ref}/database/backups/restore-pitr", {"recovery_time_target_unix": "noon"}
    )
    assert reply.status_code == 400
    assert "is not a point in time" in reply.json()["message"]


def test_read_only_members_may_list_but_not_restore(project):
    bob = make_user("bob")
    join(bob, project.organization, Role.READ_ONLY)
    assert api_as(bob).get(f"/v1/projects/{project.ref}/database/backups").status_code == 200
    at = int((EARLIEST + timedelta(hours=1)).timestamp())
    reply = api_as(bob).post(
        f"/v1/projects/{project.ref}/database/backups/restore-pitr", {"recovery_time_target_unix": at}
    )
    assert reply.status_code == 403
    assert not Operation.objects.filter(project=project, kind=Kind.RESTORE).exists()


def test_another_organizations_project_is_not_found(project):
    eve = make_user("eve")
    join(eve, make_org("Other"), Role.OWNER)
    assert api_as(eve).get(f"/v1/projects/{project.ref}/database/backups").status_code == 404
