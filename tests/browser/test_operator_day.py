"""The operator's day in Chromium: pages that offer only what applies, survive polling and an
expired session, and fit a phone. The database is set up as the states staff meet; no worker
runs, so what is queued stays queued (tests/browser/test_dashboard_flow.py runs the real stack).
"""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from audit.actions import record
from metrics.models import HostSample, ProjectSample
from operations.models import Kind, Operation, OperationEvent, State
from projects.models import DesiredState, Project, Status
from tests.dashboard_helpers import placed_project, process_host, register_template
from tests.factories import make_project
from tests.stack import PORT_BASE, free_port_range

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

LAPTOP = {"width": 1366, "height": 860}
PHONE = {"width": 390, "height": 844}
# Elements whose right edge passes the window (outside any box that scrolls them), for the failure message.
WIDEST = """() => [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
  .slice(0, 6).map(e => `${e.tagName}.${e.className}#${e.id} ${Math.round(e.getBoundingClientRect().right)}`)"""


@pytest.fixture
def host():
    # An agent URL where nothing listens: the hosts page's live check answers "unreachable" at once.
    silent = free_port_range(1, PORT_BASE + 900)
    return process_host(
        name="east", agent_url=f"http://127.0.0.1:{silent}", port_range_start=20000, port_range_end=20199
    )


@pytest.fixture
def version(tmp_path):
    return register_template(tmp_path)


def both_widths(page, screenshot, name: str) -> None:
    """A screenshot at laptop and at phone width; the phone one must not scroll the body sideways."""
    page.set_viewport_size(LAPTOP)
    screenshot(f"{name}-laptop")
    page.set_viewport_size(PHONE)
    assert_no_sideways_scroll(page)
    screenshot(f"{name}-phone")
    page.set_viewport_size(LAPTOP)


def assert_no_sideways_scroll(page) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]")
    if max(widths[:2]) > widths[2]:
        wide = page.evaluate(WIDEST)
        raise AssertionError(f"the page body scrolls sideways: {widths}; past the edge: {wide}")


def polls_seen(page, url_part: str) -> list:
    seen = []
    page.on("response", lambda response: seen.append(response.status) if url_part in response.url else None)
    return seen


def wait_for_polls(page, seen: list, count: int, timeout_ms: int = 20_000) -> None:
    """Until `count` polls were answered: a loaded machine answers each later, not fewer of them."""
    waited = 0
    while len(seen) < count:
        assert waited < timeout_ms, f"{len(seen)} polls answered in {timeout_ms} ms: {seen}"
        page.wait_for_timeout(100)
        waited += 100


def test_actions_follow_the_projects_state_and_failures_explain_themselves(
    signed_in, live_server, host, version, screenshot
):
    page = signed_in
    running = placed_project(version, host, name="Orders")
    page.goto(f"{live_server.url}/projects/{running.ref}/")
    actions = page.locator("#project-actions")
    expect(actions.locator("summary", has_text="Stop")).to_be_visible()
    expect(actions.locator("summary", has_text="Restart")).to_be_visible()
    expect(actions.locator("button", has_text=re.compile(r"^Start$"))).to_have_count(0)
    expect(actions.locator("button", has_text=re.compile(r"^Retry$"))).to_have_count(0)
    expect(page.locator(".why-not")).to_contain_text("Start (already running)")
    expect(page.locator(".why-not")).to_contain_text("Retry (nothing failed)")
    both_widths(page, screenshot, "project")

    # A start that failed: Retry appears, and the reason, the error and the agent's words sit on top.
    Project.objects.filter(pk=running.pk).update(
        status=Status.INIT_FAILED, desired_state=DesiredState.RUNNING, status_reason="the start failed"
    )
    failed = Operation.objects.create(
        project=running,
        kind=Kind.START,
        state=State.FAILED,
        error_code="agent_error",
        error_message="pg_ctl exited with 1",
        deadline=timezone.now(),
        finished_at=timezone.now(),
    )
    OperationEvent.objects.create(
        operation=failed, step="start", message="failed", data={"output_tail": "FATAL:  could not bind IPv4 address"}
    )
    page.reload()
    expect(actions.locator("button", has_text=re.compile(r"^Retry$"))).to_be_visible()
    expect(actions.locator("button", has_text=re.compile(r"^Start$"))).to_be_visible()
    failure = page.locator("#project-status #failure")
    expect(failure).to_contain_text("agent_error: pg_ctl exited with 1")
    expect(failure).to_contain_text("FATAL:  could not bind IPv4 address")
    expect(page.locator("#status-reason")).to_contain_text("the start failed")
    both_widths(page, screenshot, "project-failed")

    # Queued behind no worker: nothing but Cancel applies, and UNKNOWN says why.
    fresh = make_project(name="Fresh", template_version=version)
    Operation.objects.create(project=fresh, kind=Kind.PROVISION, deadline=timezone.now() - timedelta(seconds=1))
    page.goto(f"{live_server.url}/projects/{fresh.ref}/")
    expect(page.locator("#status-reason")).to_contain_text("its queue deadline passed")
    expect(page.locator("#project-actions button, #project-actions summary")).to_have_count(0)
    expect(page.locator(".current-op button", has_text="Cancel")).to_be_visible()
    expect(page.locator(".why-not")).to_contain_text("an operation is in progress")


def test_an_expired_session_during_polling_lands_on_the_login_page(signed_in, live_server, host, version):
    page = signed_in
    project = placed_project(version, host, status=Status.COMING_UP)
    page.goto(f"{live_server.url}/projects/{project.ref}/")
    seen = polls_seen(page, f"/projects/{project.ref}/status/")
    expect(page.locator("#project-status[hx-trigger]")).to_have_count(1)
    wait_for_polls(page, seen, 1)
    assert seen[0] == 200  # polling, signed in
    page.context.clear_cookies()  # the session ends
    page.wait_for_url(re.compile(r"/login/\?next="), timeout=10_000)
    assert f"next=/projects/{project.ref}/" in page.url.replace("%2F", "/")
    expect(page.locator("#id_username")).to_be_visible()
    expect(page.locator("#project-status")).to_have_count(0)  # no login form swapped into a card


def test_an_open_confirmation_and_its_typed_text_survive_several_polls(signed_in, live_server, host, version):
    page = signed_in
    # COMING_UP as health refresh reports it, with no operation: the card polls, every action applies.
    project = placed_project(version, host, status=Status.COMING_UP)
    page.goto(f"{live_server.url}/projects/{project.ref}/")
    seen = polls_seen(page, f"/projects/{project.ref}/status/")
    page.click("#confirm-delete summary")
    page.check("#confirm-delete input[name=purge_data]")
    page.fill("#confirm-delete input[name=confirm_ref]", "half-typed")
    wait_for_polls(page, seen, 3)
    expect(page.locator("#confirm-delete")).to_have_attribute("open", "")
    expect(page.locator("#confirm-delete input[name=confirm_ref]")).to_have_value("half-typed")
    expect(page.locator("#confirm-delete input[name=purge_data]")).to_be_checked()
    expect(page.locator("#confirm-delete input[name=confirm_ref]")).to_be_focused()

    # The last poll (286, settled) keeps it too; then the typed ref deletes.
    Project.objects.filter(pk=project.pk).update(status=Status.ACTIVE_HEALTHY)
    expect(page.locator("#project-status[hx-trigger]")).to_have_count(0, timeout=10_000)
    assert 286 in seen
    expect(page.locator("#confirm-delete")).to_have_attribute("open", "")
    page.fill("#confirm-delete input[name=confirm_ref]", project.ref)
    page.click("#confirm-delete button:has-text('Delete project')")
    expect(page.locator(".messages")).to_contain_text("Delete queued")


def test_select_all_then_a_bulk_action_reports_refusals_in_one_summary(signed_in, live_server, host, version):
    page = signed_in
    orders, billing = placed_project(version, host, name="Orders"), placed_project(version, host, name="Billing")
    draft = make_project(name="Draft", template_version=version)
    page.goto(f"{live_server.url}/")
    page.check("[data-select-all]")
    for ref in (orders.ref, billing.ref, draft.ref):
        expect(page.locator(f"input[name=refs][value={ref}]")).to_be_checked()
    page.select_option("select[name=action]", "stop")
    page.click("button:has-text('Apply')")
    messages = page.locator(".messages li")
    expect(messages.filter(has_text="Stop queued for 2 project(s)")).to_contain_text("Orders")
    refused = messages.filter(has_text="refused")
    expect(refused).to_have_count(1)
    expect(refused).to_contain_text(f"Stop refused for 1 project(s): Draft ({draft.ref} has never been provisioned")
    assert Operation.objects.filter(kind=Kind.STOP).count() == 2
    # Clearing the header box clears every row again.
    page.check("[data-select-all]")
    page.uncheck("[data-select-all]")
    expect(page.locator("input[name=refs]:checked")).to_have_count(0)


def test_columns_sort_both_ways(signed_in, live_server, host, version):
    page = signed_in
    for name in ("Bravo", "Alpha", "Charlie"):
        placed_project(version, host, name=name)
    page.goto(f"{live_server.url}/")
    names = page.locator("#projects-table td.col-name a")
    expect(names).to_have_text(["Charlie", "Alpha", "Bravo"])  # newest first
    page.click("#projects-table th a.sort:has-text('Name')")
    expect(names).to_have_text(["Alpha", "Bravo", "Charlie"])
    expect(page.locator("th.col-name")).to_have_attribute("aria-sort", "ascending")
    page.click("#projects-table th a.sort:has-text('Name')")
    expect(names).to_have_text(["Charlie", "Bravo", "Alpha"])
    # The filters keep the sort.
    page.fill("input[name=q]", "a")
    page.click("button:has-text('Filter')")
    expect(names).to_have_text(["Charlie", "Bravo", "Alpha"])
    assert "sort=-name" in page.url


def test_the_projects_list_reads_well_at_both_widths(signed_in, live_server, host, version, screenshot):
    page = signed_in
    for name in ("Orders", "Billing with a rather long project name", "Analytics"):
        placed_project(version, host, name=name)
    make_project(name="Queued", template_version=version)
    page.goto(f"{live_server.url}/")
    row = page.locator("#projects-table tbody tr").first
    expect(row.locator("td").nth(1)).to_contain_text("Queued")  # the name first
    expect(row.locator("td").nth(2).locator("code")).to_be_visible()  # the ref second
    last_op = page.locator("#projects-table .cell-lastop", has_text="provision").first
    expect(last_op).to_contain_text(re.compile(r"\bnow\b|seconds? ago"))
    both_widths(page, screenshot, "projects")
    page.set_viewport_size(PHONE)
    expect(page.locator("nav a:has-text('Projects')")).to_be_visible()
    assert_no_sideways_scroll(page)


def test_audit_page_filters_by_who_what_project_and_time(signed_in, live_server, django_user_model, screenshot):
    page = signed_in
    other = django_user_model.objects.create_user("nightshift", is_staff=True)
    orders, billing = make_project(name="Orders"), make_project(name="Billing")
    record(other, "operation.stop", project=orders)
    record(other, "operation.start", project=billing)
    record(None, "host.drain", label="manage.py hosts")
    old = record(other, "operation.restart", project=orders)
    type(old).objects.filter(pk=old.pk).update(at=timezone.now() - timedelta(days=3))
    page.goto(f"{live_server.url}/audit/")
    table = page.locator("#audit-table tbody tr")
    expect(table).to_have_count(4)
    both_widths(page, screenshot, "audit")
    page.fill("#id_actor", "night")
    page.click("button:has-text('Filter')")
    expect(table).to_have_count(3)
    page.select_option("#id_action", "operation.stop")
    page.click("button:has-text('Filter')")
    expect(table).to_have_count(1)
    expect(table).to_contain_text(orders.ref)
    page.click("text=Clear")
    page.fill("#id_project", billing.ref)
    page.click("button:has-text('Filter')")
    expect(table).to_have_count(1)
    expect(table).to_contain_text("operation.start")
    page.click("text=Clear")
    page.fill("#id_since", (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
    page.click("button:has-text('Filter')")
    expect(table).to_have_count(3)
    expect(page.locator("#audit-table")).not_to_contain_text("operation.restart")


def test_template_details_and_the_diff_between_two_revisions(signed_in, live_server, tmp_path, screenshot):
    page = signed_in
    register_template(tmp_path)
    register_template(tmp_path, readme="a newer readme\n")
    register_template(tmp_path, readme="the newest readme\n")
    page.goto(f"{live_server.url}/templates/")
    expect(page.locator(".template-facts")).to_contain_text("process")
    expect(page.locator(".template-facts")).to_contain_text("runtime.toml")
    both_widths(page, screenshot, "templates")
    page.click("text=Compare revisions")
    diff = page.locator("#template-diff")
    expect(diff).to_contain_text("+the newest readme")
    expect(diff).to_contain_text("-a newer readme")
    page.select_option("select[name=a]", "1")
    page.select_option("select[name=b]", "3")
    page.click("button:has-text('Compare')")
    expect(diff).to_contain_text("r1/README.md")
    expect(diff).to_contain_text("+the newest readme")
    expect(diff.locator("section")).to_have_count(1)  # only README.md differs
    both_widths(page, screenshot, "template-diff")


def test_a_drained_host_takes_no_new_project(signed_in, live_server, host, version, screenshot):
    page = signed_in
    from operations.placement import candidates

    waiting = make_project(name="Waiting", template_version=version)
    assert host in candidates(waiting)
    page.goto(f"{live_server.url}/hosts/")
    row = page.locator(f"#host-{host.pk}")
    expect(row).to_contain_text("agent unreachable")  # asked live on load; nothing listens there
    expect(row.locator(".reach-bad")).to_be_visible()
    expect(row.locator("[class*=status-]")).to_have_count(0)  # not a project status pill
    both_widths(page, screenshot, "hosts")
    with page.expect_response(re.compile(rf"/hosts/{host.pk}/agent/")):
        row.locator("text=refresh now").click()
    expect(row.locator(".reach-bad")).to_be_visible()
    row.locator("button:has-text('Drain')").click()
    expect(page.locator(".messages")).to_contain_text("east is drained")
    expect(row).to_contain_text("drained: no new projects")
    host.refresh_from_db()
    assert host.accepts_projects is False and host not in candidates(waiting)
    page.click("text=New project")
    expect(page.locator("#id_host option", has_text="east")).to_have_count(0)
    page.goto(f"{live_server.url}/hosts/")
    row.locator("button:has-text('Accept new projects')").click()
    expect(row).not_to_contain_text("drained")
    host.refresh_from_db()
    assert host.accepts_projects is True

    row.locator("text=Edit").click()
    both_widths(page, screenshot, "host-edit")
    page.fill("#id_port_range_end", "20399")
    page.fill("#id_region", "eu-west-1")
    page.click("button:has-text('Save')")
    expect(page.locator(".messages")).to_contain_text("Saved east")
    expect(row).to_contain_text("ports 20000–20399")
    expect(row).to_contain_text("region: eu-west-1")


def test_every_other_page_at_both_widths(signed_in, live_server, host, version, screenshot):
    page = signed_in
    project = placed_project(version, host, name="Orders")
    page.goto(f"{live_server.url}/projects/new/")
    expect(page.locator("#id_template")).to_be_visible()
    page.fill("#id_name", "Typed before the change")
    with page.expect_request(re.compile(r"/projects/new/\?")) as rerender:
        page.select_option("#id_template", "postgres")
    # The re-render carries the form's fields, never the CSRF token (query strings reach access logs).
    assert "template=postgres" in rerender.value.url and "name=Typed" in rerender.value.url
    assert "csrfmiddlewaretoken" not in rerender.value.url
    both_widths(page, screenshot, "project-new")
    page.goto(f"{live_server.url}/operations/")
    expect(page.locator("#operations-table")).to_contain_text(project.ref)
    both_widths(page, screenshot, "operations")
    page.goto(f"{live_server.url}/projects/{project.ref}/")
    page.click("#secret-postgres_password button:has-text('Reveal')")
    expect(page.locator("#secret-postgres_password code.secret")).to_have_text(project.secrets["postgres_password"])
    expect(page.locator("#project-audit")).to_contain_text("project.reveal_secret")  # refreshed with the reveal
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click("#secret-postgres_password button:has-text('Copy')")
    expect(page.locator("#secret-postgres_password button[data-copy]")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == project.secrets["postgres_password"]
    both_widths(page, screenshot, "project-secret-revealed")
    # Dark mode follows the system setting.
    page.emulate_media(color_scheme="dark")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(18, 22, 29)", background
    screenshot("project-dark")
    page.emulate_media(color_scheme="light")
    page.click("text=Sign out")
    expect(page.locator("#id_username")).to_be_visible()
    both_widths(page, screenshot, "login")


def test_the_charts_read_at_phone_width_and_nothing_polls_for_them(signed_in, live_server, host, version, screenshot):
    """A day of samples (one every 5 minutes, a gap in the middle): the lines fit the card at
    390 px, the values are text; a settled project polls for nothing, and the hosts page's row
    check leaves its host's charts in place."""
    page = signed_in
    project = placed_project(version, host, name="Charted")
    now = timezone.now()
    samples, host_samples = [], []
    for n in range(288):
        if 100 <= n < 112:
            continue  # an hour the metrics pass could not read the runtime
        at = now - timedelta(minutes=5 * (288 - n))
        samples.append(
            ProjectSample(
                project=project,
                at=at,
                connections=5 + n % 7,
                database_bytes=(40 + n // 10) * 1024 * 1024,
                xact_total=0,
                rows_read_total=0,
                rows_written_total=0,
                tps=(n % 24) * 1.5,
            )
        )
        host_samples.append(HostSample(host=host, at=at, projects=1 + n // 30, free_blocks=19 - n // 30))
    ProjectSample.objects.bulk_create(samples)
    HostSample.objects.bulk_create(host_samples)

    page.goto(f"{live_server.url}/projects/{project.ref}/")
    charts = page.locator("#project-charts")
    expect(charts.locator("figure")).to_have_count(3)
    expect(charts.locator("polyline")).to_have_count(6)  # each chart broken once by the gap
    expect(charts).to_contain_text("Database size")
    both_widths(page, screenshot, "project-charts")
    page.set_viewport_size(PHONE)
    for box in charts.locator("svg").evaluate_all("svgs => svgs.map(s => s.getBoundingClientRect().right)"):
        assert box <= PHONE["width"], box
    page.set_viewport_size(LAPTOP)
    expect(page.locator("[hx-trigger]")).to_have_count(0)

    page.goto(f"{live_server.url}/hosts/")
    expect(page.locator(f"#host-{host.pk} .reach")).to_be_visible()  # the row's check answered
    expect(page.locator(f"#host-charts-{host.pk}")).to_have_count(1)
    expect(page.locator("#host-charts polyline")).to_have_count(4)
    expect(page.locator("#host-charts")).to_contain_text("Free port blocks")
    both_widths(page, screenshot, "hosts-charts")
