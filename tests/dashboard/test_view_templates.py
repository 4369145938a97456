import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from operations.models import Kind, Operation, Rollout
from projects.models import Project, Status
from tests.dashboard_helpers import placed_project, process_host, register_template
from tests.factories import make_project

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


def test_its_counts_stop_at_the_cap_and_say_so(staff_client, tmp_path, monkeypatch):
    monkeypatch.setattr("dashboard.queries.COUNT_CAP", 2)
    old = register_template(tmp_path)
    for n in range(3):
        make_project(name=f"Old {n}", template_version=old)
    removed = make_project(name="Gone", template_version=old, status=Status.REMOVED)
    latest = register_template(tmp_path, readme="new\n")
    make_project(name="New", template_version=latest)
    with CaptureQueriesContext(connection) as captured:
        html = staff_client.get(reverse("dashboard:templates")).content.decode()
    (counts,) = [q["sql"] for q in captured if "COUNT(*)" in q["sql"]]
    assert counts.count("LIMIT 3") == 2, counts  # each revision's count reads at most cap + 1 rows
    assert "1 of 3+ project(s) on r2" in html
    assert "(counts stop at 2 per revision)" in html
    assert "Migrate to r2" in html
    assert removed.ref not in html


def test_it_offers_no_migration_when_every_live_project_is_on_the_latest(staff_client, tmp_path):
    old = register_template(tmp_path)
    make_project(name="Gone", template_version=old, status=Status.REMOVED)
    latest = register_template(tmp_path, readme="new\n")
    make_project(name="New", template_version=latest)
    html = staff_client.get(reverse("dashboard:templates")).content.decode()
    assert "1 of 1 project(s) on r2" in html
    assert "Migrate to r2" not in html
    assert "counts stop at" not in html


def test_it_costs_the_same_queries_for_3_and_300_projects(staff_client, tmp_path):
    old = register_template(tmp_path)
    latest = register_template(tmp_path, readme="new\n")
    staff_client.get(reverse("dashboard:templates"))  # session and user lookups warm up alike

    def queries_for(count):
        Project.objects.all().delete()
        Project.objects.bulk_create(
            Project(name=f"P{n}", postgres_major=15, template="postgres", template_version=(old, latest)[n % 2])
            for n in range(count)
        )
        with CaptureQueriesContext(connection) as captured:
            html = staff_client.get(reverse("dashboard:templates")).content.decode()
        assert f"{count // 2} of {count} project(s) on r2" in html
        return len(captured)

    assert queries_for(4) == queries_for(300)


def test_migrate_rejects_get(staff_client, tmp_path):
    register_template(tmp_path)
    assert staff_client.get(reverse("dashboard:migrate_template", args=["postgres"])).status_code == 405


def test_migrate_starts_a_rollout_with_the_form_s_waves_and_opens_its_page(
    staff_client, staff_user, tmp_path, enqueued, django_capture_on_commit_callbacks
):
    old = register_template(tmp_path)
    placed_project(old, process_host())
    latest = register_template(tmp_path, readme="new\n")
    url = reverse("dashboard:migrate_template", args=["postgres"])
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(url, {"canary": "0", "wave_size": "3", "concurrency": "4"}, follow=True)
    rollout = Rollout.objects.get()
    assert (rollout.target, rollout.canary, rollout.wave_size, rollout.concurrency) == (latest, 0, 3, 4)
    assert rollout.created_by == staff_user
    assert f"Rollout #{rollout.pk} of postgres to r2 started" in response.content.decode()
    assert response.redirect_chain[-1][0] == reverse("dashboard:rollout", args=[rollout.pk])
    enqueued.assert_called_once()
    assert enqueued.call_args.args == ("operations.tasks.drive_rollout", rollout.pk)
    assert not Operation.objects.filter(kind=Kind.RESYNC).exists()  # the worker requests them, not the web request
    html = staff_client.get(reverse("dashboard:templates")).content.decode()
    assert "latest rollout" in html and "Running" in html


def test_migrate_says_why_when_a_rollout_is_refused(staff_client, tmp_path, enqueued):
    register_template(tmp_path)
    response = staff_client.post(reverse("dashboard:migrate_template", args=["postgres"]), follow=True)
    assert "no postgres project to move" in response.content.decode()
    assert not Rollout.objects.exists()


def test_migrate_answers_404_for_an_unknown_template(staff_client):
    assert staff_client.post(reverse("dashboard:migrate_template", args=["nope"])).status_code == 404


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
