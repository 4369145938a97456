"""The staff flow in a real browser against the real stack: a django-q2 worker (manage.py
qcluster) on the test database, a runtime agent with the process driver, and the Postgres
it starts. Nothing here plays the worker's part; the pages follow what the stack does.
"""

import re
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from django.db import transaction
from playwright.sync_api import expect

from hosts.models import RuntimeHost
from projects.models import Project
from tests.dashboard_helpers import register_template
from tests.stack import Worker, agent_host

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SETTLES = 60_000  # ms: how long a page may wait for the stack to finish an operation


@pytest.fixture
def stack(agent_factory, tmp_path):
    agent = agent_factory()
    host = agent_host(agent)
    worker = Worker(tmp_path, BERTH_OPERATION_DEADLINE=60, BERTH_AGENT_CALL_DEADLINE=10)
    yield SimpleNamespace(agent=agent, host=host)
    worker.stop()


@contextmanager
def worker_held_at_placement(host):
    """Keep the worker from placing (or leasing ports on) `host` while the block runs.

    Provisioning a small Postgres can take less than one 2 s poll, so without this the page
    might never show COMING_UP. The worker has claimed the operation (status COMING_UP) and
    waits on this row lock, within its deadline, then carries on as usual.
    """
    with transaction.atomic():
        RuntimeHost.objects.select_for_update().get(pk=host.pk)
        yield


def test_staff_create_watch_stop_read_the_timeline_act_in_bulk_and_migrate(
    stack, signed_in, live_server, screenshot, tmp_path
):
    page = signed_in
    expect(page.locator(".empty")).to_contain_text("No projects yet")

    # Create a project through the form: the template chosen narrows the Postgres versions.
    page.click("text=New project")
    with page.expect_response(re.compile(r"/projects/new/\?")):
        page.select_option("#id_template", "postgres")
    page.fill("#id_name", "Orders <test>")
    page.select_option("#id_postgres_major", "15")
    screenshot("project-new")
    with worker_held_at_placement(stack.host):
        page.click("button:has-text('Create project')")
        expect(page.locator("h1")).to_contain_text("Orders <test>")
        page.evaluate("window.__notReloaded = true")
        status = page.locator("#project-status [data-status]")
        expect(status).to_have_attribute("data-status", "COMING_UP")

    # The real Postgres comes up through the agent; the page follows without a reload.
    expect(status).to_have_attribute("data-status", "ACTIVE_HEALTHY", timeout=SETTLES)
    assert page.evaluate("window.__notReloaded") is True
    project = Project.objects.get(name="Orders <test>")
    assert project.postgres_major == 15 and project.host == stack.host
    # Settled: both polls ended (286), and the connection section swapped in with the port.
    expect(page.locator("[hx-trigger]")).to_have_count(0)
    expect(page.locator("#connection")).to_contain_text(str(project.port_block.first_port))
    page.click("#secret-postgres_password button:has-text('Reveal')")
    expect(page.locator("#connection code.secret").first).to_be_visible()
    screenshot("project")

    # Stop it, behind its confirmation, then read the timeline.
    page.click("summary:has-text('Stop')")
    page.click("button:has-text('Yes, stop')")
    expect(page.locator(".messages")).to_contain_text("Stop queued")
    expect(page.locator("#project-status")).to_contain_text("desired: Stopped")
    expect(status).to_have_attribute("data-status", "INACTIVE", timeout=SETTLES)
    timeline = page.locator("#project-timeline")
    expect(timeline.locator(".op").first).to_contain_text("Stop")
    expect(timeline.locator(".op").first).to_contain_text("succeeded")
    expect(timeline.locator(".op").first).to_contain_text("Stopping the runtime")
    provision = timeline.locator(".op").nth(1)
    expect(provision).to_contain_text("Provision")
    expect(provision).to_contain_text("Placed on host local")
    expect(provision).to_contain_text("All probes pass")
    expect(page.locator(".audit")).to_contain_text("operation.stop")

    # A newer template revision, and a managed file edited by hand on the host: the plan
    # keeps the edit, and reading the host's files records the project as locally modified.
    register_template(tmp_path, readme="a newer readme\n")
    with open(stack.agent.root / project.ref / "runtime.toml", "a") as runtime_toml:
        runtime_toml.write("# tuned by hand\n")
    page.click("text=Show the re-sync plan")
    expect(page.locator("#resync-plan")).to_contain_text("edited on the host, unchanged in the template: kept")

    # Bulk: start it again with a draft that was never provisioned; the draft is refused and says why.
    draft = Project.objects.create(
        name="Draft", postgres_major=15, template="postgres", template_version=project.template_version
    )
    page.click("nav >> text=Projects")
    row = page.locator("#projects-table tr", has=page.locator(f"input[value={project.ref}]"))
    expect(row).to_contain_text("update available")
    expect(row).to_contain_text("locally modified")
    page.select_option("#id_drift", "modified")
    page.click("button:has-text('Filter')")
    expect(page.locator("#projects-table input[name=refs]")).to_have_count(1)
    page.click("text=Clear")
    for ref in (project.ref, draft.ref):
        page.check(f"input[name=refs][value={ref}]")
    page.select_option("select[name=action]", "start")
    page.click("button:has-text('Apply')")
    messages = page.locator(".messages")
    expect(messages).to_contain_text("Start queued for 1 project(s)")
    expect(messages).to_contain_text(f"{draft.ref} has never been provisioned")
    page.evaluate("window.__notReloaded = true")
    expect(page.locator(f"#status-{project.ref} .status-active_healthy")).to_be_visible(timeout=SETTLES)
    expect(page.locator(f"#lastop-{project.ref}")).to_contain_text("start succeeded")
    assert page.evaluate("window.__notReloaded") is True
    screenshot("projects")

    # Migrate the template's projects to r2: a rollout the worker drives, its page shows the waves settle.
    page.click("nav >> text=Templates")
    screenshot("templates")
    page.click("button:has-text('Migrate to r2')")
    expect(messages).to_contain_text("of postgres to r2 started")
    progress = page.locator("#rollout-progress")
    expect(progress).to_contain_text("Finished", timeout=SETTLES)
    expect(progress).to_contain_text("2 of 2 project(s) settled")
    expect(progress).not_to_have_attribute("hx-trigger", re.compile("."))
    screenshot("rollout")
    page.click("nav >> text=Templates")
    expect(page.locator("#progress-postgres")).to_contain_text("2 of 2 project(s) on r2")
    project.refresh_from_db()
    assert project.template_version.revision == 2 and project.drifted_paths == ["runtime.toml"]

    page.click("nav >> text=Hosts")
    expect(page.locator(f"#host-{stack.host.pk}")).to_contain_text("reachable")  # asked live, on load
    screenshot("hosts")
    page.click("nav >> text=Operations")
    expect(page.locator("#operations-table")).to_contain_text("Re-sync")
    screenshot("operations")
