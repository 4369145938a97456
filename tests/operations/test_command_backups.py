"""manage.py backups (list, run, restore, verify, protect, each with --json) and the alert
rule for failing protection, on records as the operations write them."""

import json
from datetime import UTC, datetime
from io import StringIO
from unittest import mock

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from alerts.models import Incident, Rule
from alerts.rules import evaluate, protection_failing
from backups.models import Protection, Repository
from operations.models import Kind, Operation
from projects.models import Project, Status
from tests.factories import make_runtime_project

pytestmark = pytest.mark.django_db

EARLIEST = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def project(postgres):
    project = make_runtime_project(postgres, status=Status.ACTIVE_HEALTHY)
    Protection.objects.create(
        project=project,
        repository=Repository.objects.default(),
        configured_at=timezone.now(),
        earliest_restorable_at=EARLIEST,
        latest_restorable_at=timezone.now(),
    )
    return project


def backups(*args) -> str:
    out = StringIO()
    with mock.patch("django_q.tasks.async_task"):
        call_command("backups", *args, stdout=out)
    return out.getvalue()


def test_list_json_has_the_window(project):
    body = json.loads(backups("list", project.ref, "--json"))
    assert body["protected"] is True and body["earliest"] == EARLIEST.isoformat()


def test_run_and_verify_queue_their_operations(project):
    assert json.loads(backups("run", project.ref, "--json"))["kind"] == Kind.BACKUP
    Operation.objects.all().delete()
    assert json.loads(backups("verify", project.ref, "--json"))["kind"] == Kind.VERIFY


def test_restore_to_a_time_in_the_window_is_queued(project):
    at = int(EARLIEST.timestamp()) + 60
    body = json.loads(backups("restore", project.ref, "--to", str(at), "--json"))
    assert (body["kind"], body["params"]["target_unix"]) == (Kind.RESTORE, at)


def test_restore_before_the_window_is_refused_with_it_and_queues_nothing(project):
    with pytest.raises(CommandError, match="the restorable window is 2026-12-01 08:00:00 UTC"):
        backups("restore", project.ref, "--to", "1000")
    with pytest.raises(CommandError, match="is not a point in time"):
        backups("restore", project.ref, "--to", "tomorrow")
    assert not Operation.objects.exists()


def test_restore_into_a_new_name_is_a_clone(project):
    body = json.loads(backups("restore", project.ref, "--to", "latest", "--into", "Branch", "--json"))
    clone = Project.objects.get(ref=body["ref"])
    assert (clone.name, body["kind"], body["params"]["source_ref"]) == ("Branch", Kind.CLONE, project.ref)


def test_protect_all_protects_projects_made_before_backups(project, postgres):
    older = make_runtime_project(postgres, status=Status.ACTIVE_HEALTHY, first_port=21000)
    body = json.loads(backups("protect", "--all", "--json"))
    assert Operation.objects.get(pk__in=body["queued"]).project == older
    assert Protection.objects.filter(project=older).exists()


def test_a_failing_protection_opens_one_incident_and_resolves_when_it_recovers(project):
    found = Protection.objects.get(project=project)
    found.backup_error = "repository unreachable: connection refused"
    found.judge()
    found.save()
    assert "repository unreachable" in protection_failing(timezone.now())[project.ref].summary
    rules = {Rule.PROTECTION_FAILING: protection_failing}
    assert evaluate(rules) == (1, 0)
    assert evaluate(rules) == (0, 0)
    found.backup_error = ""
    found.judge()
    found.save()
    assert evaluate(rules) == (0, 1)
    assert Incident.objects.get(rule=Rule.PROTECTION_FAILING).resolved_at is not None


def test_metrics_show_failing_protection_fleet_wide_and_per_project(project):
    from metrics.exposition import render_berth, render_project

    assert b"berth_projects_protection_failing 0.0" in render_berth()
    found = Protection.objects.get(project=project)
    found.last_failed_at, found.archive_error = timezone.now(), "archive command failed"
    found.judge()
    found.save()
    assert b"berth_projects_protection_failing 1.0" in render_berth()
    text = render_project(project, None).decode()
    assert f'berth_project_wal_archive_failing{{ref="{project.ref}"}} 1.0' in text
    assert f'berth_project_restorable_earliest_timestamp_seconds{{ref="{project.ref}"}} 1.796112e+09' in text


def test_restore_onto_another_host_names_it_and_an_unknown_host_is_refused(project):
    from tests.factories import make_host

    spare = make_host(name="spare", port_range_start=29000, port_range_end=29099)
    body = json.loads(backups("restore", project.ref, "--to", "latest", "--host", "spare", "--json"))
    assert body["params"]["host"] == spare.pk and body["params"]["target_unix"] is None
    Operation.objects.all().delete()
    with pytest.raises(CommandError, match="nowhere: no such host"):
        backups("restore", project.ref, "--to", "latest", "--host", "nowhere")
    assert not Operation.objects.exists()
