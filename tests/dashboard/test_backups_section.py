"""The project page's Backups section and the fleet view's failing protections: what a
protected, an unprotected and a failing project show; restore and clone asked twice with
the chosen time in words; polling that stops (286) once no backup operation is unfinished."""

from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.urls import reverse
from django.utils import timezone

from backups.models import Backup, BackupStatus, BackupTrigger, Protection, Repository
from operations.actions import request_operation
from operations.models import Kind, Operation
from projects.models import Project, Status
from tests.factories import make_runtime_project

pytestmark = pytest.mark.django_db

EARLIEST = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def project(postgres):
    project = make_runtime_project(postgres, status=Status.ACTIVE_HEALTHY)
    repository = Repository.objects.default()
    Protection.objects.create(
        project=project,
        repository=repository,
        configured_at=timezone.now(),
        earliest_restorable_at=EARLIEST,
        latest_restorable_at=timezone.now(),
        last_archived_wal="000000010000000000000009",
        last_archived_at=timezone.now(),
    )
    Backup.objects.create(
        project=project,
        repository=repository,
        trigger=BackupTrigger.SCHEDULE,
        status=BackupStatus.COMPLETED,
        size_bytes=5 << 20,
        started_at=EARLIEST,
    )
    return project


def page(client, project) -> str:
    return client.get(reverse("dashboard:project", args=[project.ref])).content.decode()


def test_the_project_page_shows_backups_window_and_archiving(staff_client, project):
    html = page(staff_client, project)
    assert "2026-12-01 08:00:00 UTC to " in html
    assert "last archived 000000010000000000000009" in html
    assert "5.0\xa0MB" in html
    assert 'Last verified restore</dt><dd id="last-verified">never' in html


def test_failing_archiving_is_a_warning_with_postgresqls_reason_here_and_in_the_fleet_view(staff_client, project):
    found = Protection.objects.get(project=project)
    found.last_failed_at, found.last_failed_wal = timezone.now(), "00000001000000000000000A"
    found.archive_error = 'archive command failed with exit code 1: "NoSuchBucket"'
    found.judge()
    found.save()
    assert "Protection failing" in page(staff_client, project)
    assert "NoSuchBucket" in page(staff_client, project)
    fleet = staff_client.get(reverse("dashboard:projects")).content.decode()
    assert 'id="protection-failing"' in fleet and project.ref in fleet and "NoSuchBucket" in fleet


def test_an_unprotected_project_offers_protection(staff_client, project):
    Protection.objects.filter(project=project).delete()
    html = page(staff_client, project)
    assert "Not protected" in html
    with mock.patch("django_q.tasks.async_task"):
        staff_client.post(reverse("dashboard:backups_action", args=[project.ref]), {"do": "protect"})
    assert Operation.objects.get(project=project).kind == Kind.PROTECT


def test_a_restore_is_confirmed_with_the_chosen_time_before_it_is_queued(staff_client, project):
    at = int((EARLIEST + timedelta(hours=2)).timestamp())
    url = reverse("dashboard:backups_action", args=[project.ref])
    reply = staff_client.post(url, {"do": "restore", "to": str(at)})
    assert "Restore " in reply.content.decode() and "to 2026-12-01 10:00:00 UTC?" in reply.content.decode()
    assert "does not serve while the restore runs" in reply.content.decode()
    assert not Operation.objects.exists()
    with mock.patch("django_q.tasks.async_task"):
        staff_client.post(url, {"do": "restore", "to": str(at), "confirm": "yes"})
    assert Operation.objects.get(project=project, kind=Kind.RESTORE).params["target_unix"] == at


def test_a_restore_outside_the_window_is_refused_with_the_window(staff_client, project):
    url = reverse("dashboard:backups_action", args=[project.ref])
    reply = staff_client.post(url, {"do": "restore", "to": "1000", "confirm": "yes"}, follow=True)
    assert "the restorable window is 2026-12-01 08:00:00 UTC" in reply.content.decode()
    assert not Operation.objects.exists()


def test_a_clone_is_confirmed_then_made(staff_client, project):
    url = reverse("dashboard:backups_action", args=[project.ref])
    reply = staff_client.post(url, {"do": "clone", "to": "latest", "name": "Preview"})
    assert "as of the latest archived point into a new project “Preview”" in reply.content.decode()
    with mock.patch("django_q.tasks.async_task"):
        staff_client.post(url, {"do": "clone", "to": "latest", "name": "Preview", "confirm": "yes"})
    clone = Project.objects.get(name="Preview")
    assert clone.operations.get().kind == Kind.CLONE


def test_the_section_polls_only_while_a_backup_operation_is_unfinished(staff_client, project):
    url = reverse("dashboard:backups", args=[project.ref])
    assert staff_client.get(url, headers={"HX-Request": "true"}).status_code == 286
    with mock.patch("django_q.tasks.async_task"):
        request_operation(project, Kind.BACKUP)
    reply = staff_client.get(url, headers={"HX-Request": "true"})
    assert reply.status_code == 200 and 'hx-trigger="every 2s"' in reply.content.decode()
