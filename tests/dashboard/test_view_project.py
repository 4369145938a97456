"""The project page and its live partials, actions, secrets and re-sync plan."""

import re
import time
from datetime import timedelta
from unittest import mock

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry
from operations.models import Kind, Operation, OperationEvent, State
from projects.models import DesiredState, Status, StatusCause
from tests.dashboard_helpers import placed_project, process_host, register_template
from tests.factories import make_host, make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(tmp_path):
    return placed_project(register_template(tmp_path), process_host(), name="<b>Orders</b>", first_port=20100)


def url(name, project):
    return reverse(f"dashboard:{name}", args=[project.ref])


def test_it_rejects_post(staff_client, project):
    assert staff_client.post(url("project", project)).status_code == 405


def test_it_answers_404_for_an_unknown_ref(staff_client):
    assert staff_client.get(reverse("dashboard:project", args=["nosuchproject"])).status_code == 404


def test_it_shows_status_desired_state_ports_and_timeline(staff_client, project):
    html = staff_client.get(url("project", project)).content.decode()
    assert "&lt;b&gt;Orders&lt;/b&gt;" in html and "<b>Orders</b>" not in html
    assert 'data-status="ACTIVE_HEALTHY"' in html
    assert "desired: <strong>Running</strong>" in html
    assert "<td>db</td><td>20100</td>" in html
    assert "All probes pass" in html
    assert 'hx-trigger="every 2s"' not in html


def test_it_lists_the_status_history_newest_first_with_what_moved_it(staff_client, project):
    assert "No status change yet." in staff_client.get(url("project", project)).content.decode()
    project.move_status(Status.RESTARTING, cause=StatusCause.CLAIMED, operation_id=41)
    project.move_status(Status.ACTIVE_UNHEALTHY, "db: fail (refused)", cause=StatusCause.SETTLED, operation_id=41)
    html = staff_client.get(url("project", project)).content.decode()
    history = html[html.index('id="status-history"') :]
    unhealthy = history.index('Restarting</span> → <span class="status status-active_unhealthy">Active Unhealthy')
    restarting = history.index('Active Healthy</span> → <span class="status status-restarting">Restarting')
    assert unhealthy < restarting
    assert "an operation ended #41</span> · db: fail (refused)" in history


def test_it_hides_secrets_until_revealed(staff_client, project):
    html = staff_client.get(url("project", project)).content.decode()
    assert project.secrets["postgres_password"] not in html
    assert 'name="name" value="postgres_password"' in html


def test_it_lists_only_the_secrets_its_template_uses(staff_client, project):
    # The postgres template reads the password and its TLS pair, none of Supabase's keys.
    used = project.template_version.secret_names()
    assert "postgres_password" in used and "jwt_secret" not in used
    html = staff_client.get(url("project", project)).content.decode()
    assert html.count('<tr id="secret-') == len(set(used) & set(project.secrets))
    assert 'id="secret-postgres_password"' in html
    assert "jwt_secret" not in html and "anon_key" not in html


def test_it_reveals_one_secret_and_audits_it(staff_client, staff_user, project):
    response = staff_client.post(url("reveal_secrets", project), {"name": "postgres_password"})
    assert project.secrets["postgres_password"] in response.content.decode()
    entry = AuditEntry.objects.get(action="project.reveal_secret")
    assert entry.actor == staff_user and entry.project == project
    assert entry.detail == {"secret": "postgres_password"}
    audit = staff_client.get(url("project", project)).content.decode()
    assert "project.reveal_secret" in audit


def test_it_refuses_to_reveal_a_secret_the_template_does_not_use(staff_client, project):
    response = staff_client.post(url("reveal_secrets", project), {"name": "jwt_secret"})
    assert response.status_code == 400
    assert project.secrets["jwt_secret"] not in response.content.decode()
    assert not AuditEntry.objects.filter(action="project.reveal_secret").exists()


def test_it_reveals_a_secret_as_its_row_and_the_audit_card_for_htmx(staff_client, project):
    response = staff_client.post(url("reveal_secrets", project), {"name": "postgres_password"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.lstrip().startswith('<tr id="secret-postgres_password"') and "<html" not in html
    assert f'data-copy="{project.secrets["postgres_password"]}"' in html
    assert '<section class="card" id="project-audit" hx-swap-oob="true">' in html
    assert "project.reveal_secret" in html


def test_reveal_rejects_get_and_needs_csrf(staff_user, project):
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(staff_user)
    assert csrf_client.get(url("reveal_secrets", project)).status_code == 405
    response = csrf_client.post(url("reveal_secrets", project), {"name": "postgres_password"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 403
    assert not AuditEntry.objects.filter(action="project.reveal_secret").exists()


def actions_offered(html: str) -> set[str]:
    offered = set(re.findall(r'name="action" value="(\w+)"', html))
    return offered


def test_a_running_project_is_offered_only_what_applies(staff_client, project):
    html = staff_client.get(url("project", project)).content.decode()
    assert actions_offered(html) == {"stop", "restart", "delete"}
    assert "Start (already running)" in html and "Retry (nothing failed)" in html
    assert "Re-sync (on the latest template version)" in html


def test_a_stopped_project_is_offered_start_not_stop(staff_client, project):
    project.status, project.desired_state = Status.INACTIVE, DesiredState.STOPPED
    project.save()
    html = staff_client.get(url("project", project)).content.decode()
    assert actions_offered(html) == {"start", "delete"}
    assert "Restart (stopped: start it instead)" in html


def test_a_failed_operation_offers_retry_and_explains_itself_at_the_top(staff_client, project):
    operation = Operation.objects.create(
        project=project,
        kind=Kind.START,
        state=State.FAILED,
        error_code="agent_error",
        error_message="pg_ctl: could not start server",
        deadline=timezone.now(),
    )
    OperationEvent.objects.create(
        operation=operation, step="start", message="failed", data={"output_tail": "FATAL:  data directory is missing"}
    )
    project.status, project.status_reason = Status.INIT_FAILED, "the start failed"
    project.save()
    html = staff_client.get(url("project", project)).content.decode()
    assert "retry" in actions_offered(html)
    status_card = html[html.index('id="project-status"') : html.index("</section>", html.index('id="project-status"'))]
    assert "the start failed" in status_card
    assert "agent_error: pg_ctl: could not start server" in status_card
    assert "FATAL:  data directory is missing" in status_card


def test_an_operation_in_progress_leaves_only_cancel_and_says_why(staff_client, project):
    Operation.objects.create(project=project, kind=Kind.STOP, deadline=timezone.now() + timedelta(minutes=5))
    html = staff_client.get(url("project", project)).content.decode()
    assert actions_offered(html) == set()
    assert "an operation is in progress" in html
    assert "Cancel" in html


def test_unknown_is_shown_with_its_reason(staff_client, tmp_path):
    queued = make_project(template_version=register_template(tmp_path))
    Operation.objects.create(project=queued, kind=Kind.PROVISION, deadline=timezone.now() + timedelta(minutes=5))
    html = staff_client.get(url("project", queued)).content.decode()
    assert 'data-status="UNKNOWN"' in html and "Provision queued, waiting for a worker." in html
    Operation.objects.filter(project=queued).update(deadline=timezone.now() - timedelta(seconds=1))
    html = staff_client.get(url("project", queued)).content.decode()
    assert "its queue deadline passed" in html


def test_confirmations_are_kept_across_polls(staff_client, project):
    project.status = Status.RESTARTING
    project.save()
    html = staff_client.get(url("project_status", project)).content.decode()
    assert 'id="confirm-stop" hx-preserve="true"' in html and 'id="confirm-delete" hx-preserve="true"' in html


def test_status_partial_polls_while_in_flight_then_answers_286(staff_client, project):
    operation = Operation.objects.create(project=project, kind=Kind.STOP, state=State.RUNNING, deadline=timezone.now())
    project.status = Status.GOING_DOWN
    project.save()
    page = staff_client.get(url("project", project)).content.decode()
    assert page.count('hx-trigger="every 2s"') == 2  # status and timeline
    running = staff_client.get(url("project_status", project))
    assert running.status_code == 200 and 'hx-trigger="every 2s"' in running.content.decode()
    Operation.objects.filter(pk=operation.pk).update(state=State.SUCCEEDED)
    project.status = Status.INACTIVE
    project.save()
    settled = staff_client.get(url("project_status", project))
    assert settled.status_code == 286
    assert 'data-status="INACTIVE"' in settled.content.decode()
    assert "hx-trigger" not in settled.content.decode()


def test_timeline_partial_shows_new_events_and_stops_when_settled(staff_client, project):
    operation = Operation.objects.create(project=project, kind=Kind.RESTART, deadline=timezone.now())
    OperationEvent.objects.create(operation=operation, step="restart", message="Restarting <now>")
    response = staff_client.get(url("project_timeline", project))
    assert response.status_code == 200
    assert "Restarting &lt;now&gt;" in response.content.decode()
    Operation.objects.filter(pk=operation.pk).update(state=State.SUCCEEDED)
    assert staff_client.get(url("project_timeline", project)).status_code == 286


def test_an_action_queues_an_operation(staff_client, staff_user, project):
    response = staff_client.post(url("project_action", project), {"action": "stop"}, follow=True)
    assert "Stop queued" in response.content.decode()
    operation = project.operations.get(kind=Kind.STOP)
    assert operation.requested_by == staff_user
    project.refresh_from_db()
    assert project.desired_state == DesiredState.STOPPED


def test_an_action_reports_its_refusal(staff_client, tmp_path):
    unplaced = make_project(template_version=register_template(tmp_path))
    response = staff_client.post(url("project_action", unplaced), {"action": "start"}, follow=True)
    assert "Start refused" in response.content.decode() and "never been provisioned" in response.content.decode()


def test_delete_needs_the_ref_typed_back(staff_client, project):
    response = staff_client.post(url("project_action", project), {"action": "delete", "confirm_ref": "x"}, follow=True)
    assert "type the project" in response.content.decode()
    assert not project.operations.filter(kind=Kind.DELETE).exists()
    staff_client.post(
        url("project_action", project), {"action": "delete", "confirm_ref": project.ref, "purge_data": "on"}
    )
    assert project.operations.get(kind=Kind.DELETE).params == {"purge_data": True}


def test_retry_reruns_the_failed_operation(staff_client, project):
    Operation.objects.create(project=project, kind=Kind.RESTART, state=State.FAILED, deadline=timezone.now())
    staff_client.post(url("project_action", project), {"action": "retry"})
    retry = project.operations.filter(state=State.QUEUED).get()
    assert retry.kind == Kind.RESTART and retry.attempt == 2


@pytest.mark.parametrize("state", [State.QUEUED, State.RUNNING])
def test_cancel_of_the_unfinished_operation_is_offered(staff_client, project, state):
    operation = Operation.objects.create(project=project, kind=Kind.START, state=state, deadline=timezone.now())
    html = staff_client.get(url("project", project)).content.decode()
    assert reverse("dashboard:cancel_operation", args=[operation.pk]) in html


def test_the_timeline_shows_the_agents_output_of_a_failed_command(staff_client, project):
    operation = Operation.objects.create(
        project=project, kind=Kind.START, state=State.FAILED, deadline=timezone.now(), error_code="agent_command_failed"
    )
    tail = "FATAL:  could not bind IPv4 address <0.0.0.0>: Address in use\n"
    OperationEvent.objects.create(
        operation=operation, step="finished", level="error", message="up failed", data={"output_tail": tail}
    )
    html = staff_client.get(url("project", project)).content.decode()
    shown = '<pre class="output-tail">FATAL:  could not bind IPv4 address &lt;0.0.0.0&gt;: Address in use'
    assert html.count(shown) == 2  # at the top with the failure, and on the timeline's event
    assert html.count('<details class="output" open>') == 1, "only the top one is unfolded"


def test_resync_plan_says_when_on_the_latest_version(staff_client, project):
    response = staff_client.get(url("resync_plan", project), HTTP_HX_REQUEST="true")
    assert "is on the latest version" in response.content.decode()


def test_resync_plan_shows_the_per_file_plan(staff_client, project, tmp_path):
    register_template(tmp_path, readme="changed readme\n")
    with mock.patch("hosts.agents.AgentClient") as client_class:
        client_class.return_value.digests.return_value = {}
        response = staff_client.get(url("resync_plan", project), HTTP_HX_REQUEST="true")
    assert client_class.return_value.digests.called
    html = response.content.decode()
    assert "runtime.toml" in html and "r2" in html


def test_resync_plan_records_the_files_edited_on_the_host(staff_client, staff_user, project, tmp_path):
    project.file_digests = {"runtime.toml": "pushed"}
    project.save()
    register_template(tmp_path, readme="changed readme\n")
    with mock.patch("hosts.agents.AgentClient") as client_class:
        client_class.return_value.digests.return_value = {"runtime.toml": "edited", "README.md": None}
        staff_client.get(url("resync_plan", project), HTTP_HX_REQUEST="true")
    project.refresh_from_db()
    assert project.drifted_paths == ["runtime.toml"]
    assert AuditEntry.objects.get(action="project.drift").actor == staff_user
    html = staff_client.get(url("project", project)).content.decode()
    assert "locally modified" in html and "<code>runtime.toml</code>" in html


def test_resync_plan_says_agent_unreachable_within_the_page_deadline(staff_client, tmp_path, settings, silent_agent):
    version = register_template(tmp_path)
    project = placed_project(version, make_host(agent_url=silent_agent.url), first_port=20100)
    register_template(tmp_path, readme="changed readme\n")
    settings.BERTH_AGENT_PAGE_DEADLINE = 0.5
    started = time.monotonic()
    response = staff_client.get(url("resync_plan", project))
    took = time.monotonic() - started
    assert 0.5 <= took <= 0.5 + 2, took
    assert response.status_code == 200
    assert "agent unreachable" in response.content.decode()
