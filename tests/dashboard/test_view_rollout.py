import pytest
from django.urls import reverse
from django.utils import timezone

from operations import rollouts
from operations.models import Kind, Operation, Outcome, Rollout, State
from tests.dashboard_helpers import placed_project, process_host, register_template

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("enqueued")]


@pytest.fixture
def rollout(tmp_path):
    old = register_template(tmp_path)
    host = process_host()
    projects = [placed_project(old, host, name=f"P{n}") for n in range(3)]
    target = register_template(tmp_path, readme="new\n")
    item = rollouts.start_rollout(target, canary=1, wave_size=2)
    item.test_projects = sorted(projects, key=lambda p: p.ref)
    return item


def page(client, rollout, **headers):
    return client.get(reverse("dashboard:rollout", args=[rollout.pk]), **headers)


def test_it_rejects_post(staff_client, rollout):
    assert staff_client.post(reverse("dashboard:rollout", args=[rollout.pk])).status_code == 405


def test_it_answers_404_for_an_unknown_rollout(staff_client):
    assert staff_client.get(reverse("dashboard:rollout", args=[999])).status_code == 404


def test_it_shows_each_wave_with_its_projects_and_outcomes(staff_client, rollout):
    html = page(staff_client, rollout).content.decode()
    assert "Canary" in html and "Wave 1" in html
    for project in rollout.test_projects:
        assert project.ref in html
    assert "0 of 3 project(s) settled" in html and "Pause" in html


def test_progress_polls_while_running_and_answers_286_once_settled(staff_client, rollout):
    live = page(staff_client, rollout, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="rollout-progress")
    assert live.status_code == 200 and 'hx-trigger="every 2s"' in live.content.decode()
    rollouts.cancel(rollout)
    settled = page(staff_client, rollout, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="rollout-progress")
    assert settled.status_code == 286 and "hx-trigger" not in settled.content.decode()
    assert "Cancelled" in settled.content.decode()


def test_progress_keeps_polling_while_an_operation_of_a_stopped_rollout_is_in_flight(staff_client, rollout):
    rollouts.drive(rollout.pk)
    rollouts.pause(rollout)
    live = page(staff_client, rollout, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="rollout-progress")
    assert live.status_code == 200


def test_pause_resume_and_cancel_are_posts_that_move_the_rollout(staff_client, rollout):
    act = reverse("dashboard:rollout_action", args=[rollout.pk])
    assert staff_client.get(act).status_code == 405
    staff_client.post(act, {"action": "pause"})
    assert Rollout.objects.get(pk=rollout.pk).state == Rollout.State.PAUSED
    staff_client.post(act, {"action": "resume"})
    assert Rollout.objects.get(pk=rollout.pk).state == Rollout.State.RUNNING
    staff_client.post(act, {"action": "cancel"})
    assert Rollout.objects.get(pk=rollout.pk).state == Rollout.State.CANCELLED
    response = staff_client.post(act, {"action": "pause"}, follow=True)
    assert "cannot pause now" in response.content.decode()


def conflicted(rollout):
    """The canary's re-sync ended in a conflict, as a worker would record it."""
    rollouts.drive(rollout.pk)
    operation = Operation.objects.get(kind=Kind.RESYNC, state=State.QUEUED)
    Operation.objects.filter(pk=operation.pk).update(
        state=State.FAILED,
        error_code="conflict",
        error_message="conflict: README.md",
        finished_at=timezone.now(),
        result=Outcome.CONFLICTED,
        conflict_paths=["README.md"],
    )
    rollouts.drive(rollout.pk)
    entry = rollout.projects.get(project=operation.project)
    assert entry.outcome == Outcome.CONFLICTED
    return entry


def test_a_conflicted_project_offers_the_three_way_diff_and_both_resolutions(staff_client, rollout):
    entry = conflicted(rollout)
    html = page(staff_client, rollout).content.decode()
    assert reverse("dashboard:rollout_diff", args=[rollout.pk, entry.project.ref]) in html
    assert "Take template" in html and "Keep local" in html

    resolve = reverse("dashboard:rollout_resolve", args=[rollout.pk, entry.project.ref])
    response = staff_client.post(resolve, {"how": "keep-local"}, follow=True)

    operation = Operation.objects.get(project=entry.project, state=State.QUEUED)
    assert operation.params == {"template_version": rollout.target_id, "resolve": "keep-local"}
    assert f"keep-local queued as operation #{operation.pk}" in response.content.decode()
    entry.refresh_from_db()
    assert (entry.outcome, entry.operation) == (Outcome.RUNNING, operation)


def test_a_resolution_of_a_project_that_is_not_conflicted_is_refused(staff_client, rollout):
    ref = rollout.test_projects[0].ref
    response = staff_client.post(
        reverse("dashboard:rollout_resolve", args=[rollout.pk, ref]), {"how": "take-template"}, follow=True
    )
    assert "is pending in this rollout, not conflicted" in response.content.decode()
    assert not Operation.objects.filter(kind=Kind.RESYNC).exists()


def test_the_diff_page_says_when_the_agent_does_not_answer(staff_client, rollout, silent_agent):
    entry = conflicted(rollout)
    host = entry.project.host
    host.agent_url = silent_agent.url
    host.save()
    response = staff_client.get(reverse("dashboard:rollout_diff", args=[rollout.pk, entry.project.ref]))
    assert response.status_code == 200 and "agent unreachable" in response.content.decode()


def test_rollback_starts_a_rollback_rollout_of_what_moved(staff_client, rollout):
    rollouts.cancel(rollout)
    response = staff_client.post(reverse("dashboard:rollout_action", args=[rollout.pk]), {"action": "rollback"})
    assert response.status_code == 302
    assert "no postgres project to move" in staff_client.get(response.url).content.decode()


def test_the_list_links_every_rollout(staff_client, rollout):
    html = staff_client.get(reverse("dashboard:rollouts")).content.decode()
    assert reverse("dashboard:rollout", args=[rollout.pk]) in html and "Running" in html


def test_the_list_pages_through_every_rollout_at_the_same_query_cost(staff_client, tmp_path):
    import re

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    target = register_template(tmp_path)
    made = Rollout.objects.bulk_create(Rollout(template="postgres", target=target) for _ in range(55))
    with CaptureQueriesContext(connection) as first_queries:
        first = staff_client.get(reverse("dashboard:rollouts")).content.decode()
    following = re.search(r'href="\?([^"]*)">Next', first).group(1).replace("&amp;", "&")
    with CaptureQueriesContext(connection) as last_queries:
        last = staff_client.get(f"{reverse('dashboard:rollouts')}?{following}").content.decode()
    shown = [int(pk) for pk in re.findall(r'href="/rollouts/(\d+)/">#', first + last)]
    assert sorted(shown) == sorted(r.pk for r in made) and len(shown) == 55
    assert len(first_queries) == len(last_queries)
