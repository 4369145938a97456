"""The staff flow in a real browser, with the worker's claims and verdicts played by the test.

The worker's part is played through operations.claims (the same conditional updates a
worker makes), so the page must follow status changes it did not cause, without a reload.
"""

import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from operations import claims
from operations.models import Kind, Operation, State
from ports.models import BlockState, PortBlock
from projects.models import Project, Status
from tests.dashboard_helpers import placed_project, process_host, register_template

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def seeded(tmp_path):
    version = register_template(tmp_path)
    host = process_host(name="east", port_range_start=20000, port_range_end=20199, block_size=10)
    healthy = placed_project(version, host, name="Billing")
    stopped = placed_project(version, host, name="Analytics", status=Status.INACTIVE)
    register_template(tmp_path, readme="a newer readme\n")
    return {"host": host, "healthy": healthy, "stopped": stopped}


def play_worker_claim(project: Project, host) -> Operation:
    """What the worker does first: claim the operation (status COMING_UP), place it and lease ports."""
    operation = project.operations.get(state=State.QUEUED)
    claimed = claims.claim(operation.pk)
    Project.objects.filter(pk=project.pk).update(host=host)
    PortBlock.objects.create(
        host=host, first_port=20150, last_port=20159, state=BlockState.LEASED, project=project, leased_at=timezone.now()
    )
    claimed.events.create(step="place", message=f"Placed on host {host.name}")
    return claimed


def test_staff_create_watch_stop_read_the_timeline_and_act_in_bulk(seeded, signed_in, live_server, screenshot):
    page = signed_in
    expect(page.locator("#projects-table")).to_contain_text("Billing")
    expect(page.locator("#projects-table")).to_contain_text("update available")
    screenshot("projects")

    # Create a project: the form offers only what the template and the host support.
    page.click("text=New project")
    expect(page.locator("#id_postgres_major option")).to_have_count(2)
    screenshot("project-new")
    page.fill("#id_name", "Orders <test>")
    page.select_option("#id_postgres_major", "16")
    page.click("button:has-text('Create project')")
    expect(page.locator("h1")).to_contain_text("Orders <test>")
    project = Project.objects.get(name="Orders <test>")
    assert project.postgres_major == 16

    # The page polls while provisioning is in flight: it follows the worker without a reload.
    page.evaluate("window.__notReloaded = true")
    status = page.locator("#project-status [data-status]")
    operation = play_worker_claim(project, seeded["host"])
    expect(status).to_have_attribute("data-status", "COMING_UP")
    expect(page.locator("#project-timeline")).to_contain_text("Placed on host east")
    claims.settle(operation, State.SUCCEEDED, status=Status.ACTIVE_HEALTHY)
    expect(status).to_have_attribute("data-status", "ACTIVE_HEALTHY")
    assert page.evaluate("window.__notReloaded") is True
    # Settled: both polls ended (286), so the page stops asking.
    expect(page.locator("[hx-trigger]")).to_have_count(0)
    expect(page.locator("#connection")).to_contain_text("20150")
    page.click("text=Reveal secrets")
    expect(page.locator("#connection code.secret").first).to_be_visible()
    screenshot("project")

    # Stop it, behind its confirmation, then read the timeline.
    page.click("summary:has-text('Stop')")
    page.click("button:has-text('Yes, stop')")
    expect(page.locator(".messages")).to_contain_text("Stop queued")
    expect(page.locator("#project-status")).to_contain_text("desired: Stopped")
    stop = project.operations.get(kind=Kind.STOP)
    running = claims.claim(stop.pk)
    expect(status).to_have_attribute("data-status", "GOING_DOWN")
    running.events.create(step="stop", message="Stopping the runtime")
    claims.settle(running, State.SUCCEEDED, status=Status.INACTIVE)
    expect(status).to_have_attribute("data-status", "INACTIVE")
    timeline = page.locator("#project-timeline")
    expect(timeline).to_contain_text("Stopping the runtime")
    expect(timeline.locator(".op").first).to_contain_text("Stop")
    expect(timeline.locator(".op").first).to_contain_text("succeeded")
    expect(timeline.locator(".op").nth(1)).to_contain_text("Provision")
    expect(page.locator(".audit")).to_contain_text("operation.stop")

    # Bulk: restart three projects; one is refused (it was never provisioned) and says why.
    unplaced = Project.objects.create(
        name="Draft", postgres_major=15, template="postgres", template_version=seeded["healthy"].template_version
    )
    page.click("nav >> text=Projects")
    for ref in (seeded["healthy"].ref, seeded["stopped"].ref, unplaced.ref):
        page.check(f"input[name=refs][value={ref}]")
    page.select_option("select[name=action]", "restart")
    page.click("button:has-text('Apply')")
    messages = page.locator(".messages")
    expect(messages).to_contain_text("Restart queued for 2 project(s)")
    expect(messages).to_contain_text(re.compile(f"{unplaced.ref} has never been provisioned"))
    assert Operation.objects.filter(kind=Kind.RESTART).count() == 2
    # The rows in flight poll; a worker's claim shows in the table without a reload.
    claims.claim(Operation.objects.filter(kind=Kind.RESTART, project=seeded["healthy"]).get().pk)
    expect(page.locator(f"#status-{seeded['healthy'].ref}")).to_contain_text("Restarting")

    for name, link in [("hosts", "Hosts"), ("templates", "Templates"), ("operations", "Operations")]:
        page.click(f"nav >> text={link}")
        expect(page.locator("h1")).to_have_text(link)
        screenshot(name)
    expect(page.locator("#operations-table")).to_contain_text("Restart")
