import pytest
from django.urls import reverse

from operations.models import Kind, Operation
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


def test_migrate_queues_a_resync_per_project_behind_and_shows_progress(staff_client, tmp_path):
    old = register_template(tmp_path)
    host = process_host()
    first, second = placed_project(old, host), placed_project(old, host)
    register_template(tmp_path, readme="new\n")
    response = staff_client.post(reverse("dashboard:migrate_template", args=["postgres"]), follow=True)
    assert "2 re-sync(s) queued" in response.content.decode()
    assert Operation.objects.filter(kind=Kind.RESYNC, project__in=[first, second]).count() == 2
    progress = staff_client.get(reverse("dashboard:migration_progress", args=["postgres"]))
    assert progress.status_code == 200 and "2 re-sync(s) running" in progress.content.decode()
    Operation.objects.update(state="succeeded")
    assert staff_client.get(reverse("dashboard:migration_progress", args=["postgres"])).status_code == 286


def test_migrate_answers_404_for_an_unknown_template(staff_client):
    assert staff_client.post(reverse("dashboard:migrate_template", args=["nope"])).status_code == 404
