from unittest import mock

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry
from operations.models import Kind, Operation, State
from operations.tasks import request_migration
from projects.models import Project
from tests.dashboard_helpers import placed_project, process_host, register_template

pytestmark = pytest.mark.django_db


def test_it_rejects_post(staff_client):
    assert staff_client.post(reverse("dashboard:templates")).status_code == 405


def test_it_says_how_to_register_templates(staff_client):
    assert b"templates sync" in staff_client.get(reverse("dashboard:templates")).content


def test_it_lists_versions_with_their_project_counts(staff_client, tmp_path):
    old = register_template(tmp_path)
    placed_project(old, process_host())
    register_template(tmp_path, readme="new\n")
    html = staff_client.get(reverse("dashboard:templates")).content.decode()
    assert "r2" in html and "latest" in html
    assert "0 of 1 project(s) on r2" in html
    assert "Migrate to r2" in html


def test_migrate_rejects_get(staff_client, tmp_path):
    register_template(tmp_path)
    assert staff_client.get(reverse("dashboard:migrate_template", args=["postgres"])).status_code == 405


@pytest.fixture
def enqueued():
    with mock.patch("django_q.tasks.async_task", return_value="task-1") as async_task:
        yield async_task


def test_migrate_queues_one_task_on_commit_and_audits_it(
    staff_client, staff_user, tmp_path, enqueued, django_capture_on_commit_callbacks
):
    old = register_template(tmp_path)
    placed_project(old, process_host())
    latest = register_template(tmp_path, readme="new\n")
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(reverse("dashboard:migrate_template", args=["postgres"]), follow=True)
    assert "Migration of postgres to r2 started" in response.content.decode()
    enqueued.assert_called_once()
    assert enqueued.call_args.args == ("operations.tasks.request_migration", latest.pk, staff_user.pk, None)
    assert not Operation.objects.filter(kind=Kind.RESYNC).exists()  # the worker requests them, not the web request
    entry = AuditEntry.objects.get(action="template.migrate")
    assert entry.actor == staff_user and entry.detail["version"] == latest.pk


def test_it_shows_a_migration_waiting_for_a_worker_and_polls(staff_client, tmp_path, enqueued):
    old = register_template(tmp_path)
    placed_project(old, process_host())
    register_template(tmp_path, readme="new\n")
    staff_client.post(reverse("dashboard:migrate_template", args=["postgres"]))
    progress = staff_client.get(reverse("dashboard:migration_progress", args=["postgres"]))
    assert progress.status_code == 200
    assert "waiting for a worker" in progress.content.decode()


def test_the_task_requests_a_resync_per_project_behind_and_progress_counts_them(
    staff_client, staff_user, tmp_path, enqueued
):
    old = register_template(tmp_path)
    host = process_host()
    first, second, third = (placed_project(old, host, name=n) for n in ("First", "Second", "Third"))
    busy = Operation.objects.create(project=third, kind=Kind.RESTART, deadline=timezone.now())
    never_placed = Project.objects.create(name="Draft", postgres_major=15, template="postgres", template_version=old)
    latest = register_template(tmp_path, readme="new\n")
    current = placed_project(latest, host, name="Current")

    detail = request_migration(latest.pk, staff_user.pk)

    resyncs = Operation.objects.filter(kind=Kind.RESYNC)
    assert set(resyncs.values_list("project", flat=True)) == {first.pk, second.pk}
    assert all(op.params == {"template_version": latest.pk} and op.requested_by == staff_user for op in resyncs)
    assert detail["queued"] == 2 and set(detail["refused"]) == {third.ref, never_placed.ref}
    assert current.pk not in resyncs.values_list("project", flat=True)
    progress = staff_client.get(reverse("dashboard:migration_progress", args=["postgres"]))
    html = progress.content.decode()
    assert progress.status_code == 200 and "2 queued" in html and "1 of 5 project(s) on r2" in html
    assert "2 project(s) refused" in html and "an operation is already in progress" in html

    resyncs.filter(project=first).update(state=State.SUCCEEDED)
    resyncs.filter(project=second).update(state=State.FAILED, error_code="conflict")
    busy.delete()
    progress = staff_client.get(reverse("dashboard:migration_progress", args=["postgres"]))
    html = progress.content.decode()
    assert progress.status_code == 286  # settled: htmx stops polling
    assert "1 succeeded" in html and "1 conflict" in html and "0 failed" in html and "hx-trigger" not in html


def test_progress_counts_only_the_latest_resync_of_each_project(staff_client, staff_user, tmp_path, enqueued):
    old = register_template(tmp_path)
    project = placed_project(old, process_host())
    latest = register_template(tmp_path, readme="new\n")
    request_migration(latest.pk, staff_user.pk)
    Operation.objects.filter(kind=Kind.RESYNC).update(state=State.FAILED, error_code="conflict")
    request_migration(latest.pk, staff_user.pk)  # after the conflict was resolved on the host
    assert project.operations.filter(kind=Kind.RESYNC).count() == 2
    html = staff_client.get(reverse("dashboard:migration_progress", args=["postgres"])).content.decode()
    assert "1 queued" in html and "0 conflict" in html


def test_progress_answers_404_for_an_unknown_template(staff_client):
    assert staff_client.get(reverse("dashboard:migration_progress", args=["nope"])).status_code == 404


def test_migrate_answers_404_for_an_unknown_template(staff_client):
    assert staff_client.post(reverse("dashboard:migrate_template", args=["nope"])).status_code == 404


def test_the_settled_progress_brings_the_revision_counts_up_to_date(staff_client, tmp_path):
    old = register_template(tmp_path)
    project = placed_project(old, process_host())
    latest = register_template(tmp_path, readme="new\n")
    in_flight = Operation.objects.create(
        project=project, kind=Kind.RESYNC, params={"template_version": latest.pk}, deadline=timezone.now()
    )
    polling = staff_client.get(reverse("dashboard:migration_progress", args=["postgres"])).content.decode()
    assert "hx-swap-oob" not in polling
    Project.objects.filter(pk=project.pk).update(template_version=latest)
    Operation.objects.filter(pk=in_flight.pk).update(state=State.SUCCEEDED)
    settled = staff_client.get(reverse("dashboard:migration_progress", args=["postgres"]))
    html = settled.content.decode()
    assert settled.status_code == 286
    table = html[html.index('id="versions-postgres"') :]
    assert 'hx-swap-oob="true"' in table[:60]
    # r2 (first row) now counts the project, r1 none.
    r2, r1 = table.split("<tr><td>r")[1:3]
    assert ">1</a>" in r2 and "<td>0</td>" in r1


def test_it_shows_what_each_template_is(staff_client, tmp_path):
    register_template(tmp_path)
    html = staff_client.get(reverse("dashboard:templates")).content.decode()
    assert "<dt>Driver</dt><dd>process</dd>" in html
    assert "<code>db</code>+0" in html
    assert "<code>runtime.toml</code>" in html


def test_diff_shows_what_changed_between_two_revisions(staff_client, tmp_path):
    register_template(tmp_path)
    register_template(tmp_path, readme="a newer readme\n")
    html = staff_client.get(reverse("dashboard:template_diff", args=["postgres"]), {"a": 1, "b": 2}).content.decode()
    assert "r1/README.md" in html and "+a newer readme" in html
    assert "<code>runtime.toml</code>" not in html and html.count('class="diff"') == 1
    same = staff_client.get(reverse("dashboard:template_diff", args=["postgres"]), {"a": 2, "b": 2}).content.decode()
    assert "r2 and r2 are the same" in same
    missing = staff_client.get(reverse("dashboard:template_diff", args=["postgres"]), {"a": 9, "b": 2})
    assert b"has no revision r9" in missing.content


def test_diff_answers_404_for_an_unknown_template(staff_client):
    assert staff_client.get(reverse("dashboard:template_diff", args=["nothing"])).status_code == 404
