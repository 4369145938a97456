"""The port lease admin: filters, and the release and re-check actions (audited)."""

import pytest
from django.urls import reverse

from audit.models import AuditEntry
from ports.actions import lease_ports, release_ports
from ports.models import BlockState, PortBlock
from tests.factories import FakePortChecker, make_host, make_port_block, make_project

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def changelist(query=""):
    return reverse("admin:ports_portblock_changelist") + query


@pytest.mark.parametrize("query", ["", "?state=leased", "?cooled=yes", "?cooled=no", "?q=20000"])
def test_it_lists_leases_with_filters(admin_client_logged_in, query):
    lease_ports(make_project(host=make_host()), 1, checker=FakePortChecker())
    assert admin_client_logged_in.get(changelist(query)).status_code == 200


def test_it_filters_cooling_blocks_by_whether_their_cooldown_is_over(admin_client_logged_in, settings):
    settings.BERTH_PORT_COOLDOWN = 300
    project = make_project(host=make_host())
    lease_ports(project, 1, checker=FakePortChecker())
    release_ports(project)
    assert admin_client_logged_in.get(changelist("?cooled=no")).context["cl"].result_count == 1
    assert admin_client_logged_in.get(changelist("?cooled=yes")).context["cl"].result_count == 0


def test_it_releases_a_lease_into_its_cooldown_and_audits_it(admin_client_logged_in, superuser):
    project = make_project(host=make_host())
    block = lease_ports(project, 1, checker=FakePortChecker())
    response = admin_client_logged_in.post(changelist(), {"action": "release", "_selected_action": [block.pk]})
    assert response.status_code == 302
    block.refresh_from_db()
    assert (block.state, block.project, block.last_project_ref) == (BlockState.COOLING, None, project.ref)
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.project) == (superuser, "ports.release", project)


def test_it_rechecks_a_blocked_block_and_audits_it(admin_client_logged_in, superuser, monkeypatch):
    monkeypatch.setattr("ports.actions.checker_for", lambda host: FakePortChecker())
    host = make_host(name="alpha")
    lease_ports(make_project(host=host), 1, checker=FakePortChecker(busy={20000}))
    blocked = PortBlock.objects.get(state=BlockState.BLOCKED)
    admin_client_logged_in.post(changelist(), {"action": "recheck", "_selected_action": [blocked.pk]})
    blocked.refresh_from_db()
    assert (blocked.state, blocked.blocked_reason) == (BlockState.FREE, "")
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.detail["host"]) == (superuser, "ports.recheck", "alpha")


def test_it_offers_no_way_to_add_a_block_by_hand(admin_client_logged_in):
    assert admin_client_logged_in.get(reverse("admin:ports_portblock_add")).status_code == 403


def test_admin_refuses_a_range_that_strands_a_lease_as_a_form_error(admin_client_logged_in):
    host = make_host(port_range_start=20000, port_range_end=20999, block_size=10)
    project = make_project(host=host)
    make_port_block(project, first_port=20500, size=10)
    url = reverse("admin:hosts_runtimehost_change", args=[host.pk])
    response = admin_client_logged_in.post(
        url,
        {
            "name": host.name,
            "agent_url": host.agent_url,
            "agent_token": "token",
            "port_range_start": 20000,
            "port_range_end": 20099,
            "block_size": 10,
            "accepts_projects": "on",
        },
    )
    assert response.status_code == 200
    assert "release such leases first" in response.content.decode()
    host.refresh_from_db()
    assert host.port_range_end == 20999
