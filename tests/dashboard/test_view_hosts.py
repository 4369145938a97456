import time
from html import unescape
from unittest import mock

import pytest
from django.urls import reverse
from django.utils import timezone

from ports.models import BlockState, PortBlock
from tests.dashboard_helpers import PROCESS_CAPABILITIES, placed_project, process_host, register_template
from tests.factories import make_host, make_reported_host

pytestmark = pytest.mark.django_db


def test_it_rejects_post(staff_client):
    assert staff_client.post(reverse("dashboard:hosts")).status_code == 405


def test_it_says_how_to_add_a_host(staff_client):
    assert b"No runtime host yet" in staff_client.get(reverse("dashboard:hosts")).content


def test_it_shows_driver_versions_and_port_capacity(staff_client, tmp_path):
    host = process_host(name="east", port_range_start=20000, port_range_end=20099, block_size=10)
    placed_project(register_template(tmp_path), host)
    PortBlock.objects.create(host=host, first_port=20010, last_port=20019, state=BlockState.BLOCKED)
    PortBlock.objects.create(
        host=host, first_port=20020, last_port=20029, state=BlockState.COOLING, released_at=timezone.now()
    )
    html = staff_client.get(reverse("dashboard:hosts")).content.decode()
    assert "process" in html and "15, 16" in html and "127.0.0.1" in html
    assert "7 free · 1 leased · 1 cooling · 1 blocked" in html
    assert reverse("dashboard:host_agent", args=[host.pk]) in html


def test_live_check_reports_a_silent_agent_within_the_page_deadline(staff_client, settings, silent_agent):
    # A host that reported once and went silent; a never-reported one: test_pages_fresh_state.py.
    host = make_reported_host(name="east", agent_url=silent_agent.url)
    settings.BERTH_AGENT_PAGE_DEADLINE = 0.5
    started = time.monotonic()
    response = staff_client.get(reverse("dashboard:host_agent", args=[host.pk]), HTTP_HX_REQUEST="true")
    took = time.monotonic() - started
    assert 0.5 <= took <= 0.5 + 2, took
    html = response.content.decode()
    assert "agent unreachable" in html and html.lstrip().startswith("<tr")


def test_live_check_without_javascript_returns_to_the_hosts_page(staff_client):
    host = process_host(name="east")
    with mock.patch("dashboard.views.hosts.refresh_host", return_value=True):
        response = staff_client.get(reverse("dashboard:host_agent", args=[host.pk]))
    assert response.url == reverse("dashboard:hosts")


def test_it_shows_a_host_whose_agent_never_reported(staff_client):
    # The state right after `scripts/dev` or the README's "register the agent" step.
    make_host(name="fresh")
    response = staff_client.get(reverse("dashboard:hosts"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "fresh" in html and "never seen" in html


def test_it_warns_when_the_range_overlaps_the_kernels_ephemeral_ports(staff_client):
    capabilities = {**PROCESS_CAPABILITIES, "ephemeral_ports": [32768, 60999]}
    make_host(name="low", capabilities=capabilities, port_range_start=20000, port_range_end=20099)
    make_host(name="high", capabilities=capabilities, port_range_start=30000, port_range_end=39999)
    html = unescape(staff_client.get(reverse("dashboard:hosts")).content.decode())
    assert html.count("ephemeral port range") == 1
    assert "ports 32768-39999 of the range lie in the kernel's ephemeral port range 32768-60999" in html


def test_drain_closes_the_host_to_placement_and_is_audited(staff_client, staff_user, tmp_path):
    from audit.models import AuditEntry
    from operations.placement import candidates
    from tests.factories import make_project

    host = process_host(name="east")
    project = make_project(template_version=register_template(tmp_path))
    assert host in candidates(project)
    response = staff_client.post(reverse("dashboard:drain_host", args=[host.pk]), {"accepts": "0"}, follow=True)
    assert "east is drained" in response.content.decode()
    host.refresh_from_db()
    assert host.accepts_projects is False
    assert AuditEntry.objects.get(action="host.drain").actor == staff_user
    html = staff_client.get(reverse("dashboard:hosts")).content.decode()
    assert "drained: no new projects" in html and "Accept new projects" in html
    assert host not in candidates(project)
    staff_client.post(reverse("dashboard:drain_host", args=[host.pk]), {"accepts": "1"})
    host.refresh_from_db()
    assert host.accepts_projects is True and AuditEntry.objects.filter(action="host.open").count() == 1
    assert host in candidates(project)


def test_drain_rejects_get(staff_client):
    host = process_host(name="east")
    assert staff_client.get(reverse("dashboard:drain_host", args=[host.pk])).status_code == 405


def test_edit_saves_with_the_admin_rules_and_keeps_the_token(staff_client):
    host = process_host(
        name="east", port_range_start=20000, port_range_end=20099, block_size=10, agent_token="t0ken-of-the-east-agent"
    )
    token = host.agent_token
    page = staff_client.get(reverse("dashboard:edit_host", args=[host.pk])).content.decode()
    assert token not in page
    data = {
        "name": "east",
        "agent_url": host.agent_url,
        "agent_token": "",
        "port_range_start": 20000,
        "port_range_end": 20199,
        "block_size": 10,
        "probe_host_override": "",
        "accepts_projects": "on",
        "region": "eu-west-1",
    }
    with mock.patch("dashboard.views.hosts.save_host", wraps=__import__("hosts.actions").actions.save_host) as save:
        with mock.patch("hosts.actions.refresh_host", return_value=True):
            response = staff_client.post(reverse("dashboard:edit_host", args=[host.pk]), data)
    assert response.status_code == 302 and save.called
    host.refresh_from_db()
    assert host.port_range_end == 20199 and host.agent_token == token and host.region == "eu-west-1"
    bad = staff_client.post(reverse("dashboard:edit_host", args=[host.pk]), {**data, "port_range_end": 19000})
    assert bad.status_code == 200 and b"error" in bad.content
    host.refresh_from_db()
    assert host.port_range_end == 20199


def test_reachability_does_not_wear_project_status_colours(staff_client):
    host = process_host(name="east")
    with mock.patch("dashboard.views.hosts.refresh_host", return_value=True):
        html = staff_client.get(
            reverse("dashboard:host_agent", args=[host.pk]), HTTP_HX_REQUEST="true"
        ).content.decode()
    assert "reach-ok" in html and "status-active_healthy" not in html


def test_it_costs_the_same_queries_for_3_and_300_projects(staff_client, tmp_path):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from projects.models import Project

    version = register_template(tmp_path)
    hosts = [process_host(name=name, port_range_start=20000, port_range_end=24999, block_size=10) for name in "ab"]
    staff_client.get(reverse("dashboard:hosts"))  # session and user lookups warm up alike

    def queries_for(count):
        made = Project.objects.bulk_create(
            Project(name=f"P{n}", postgres_major=15, template=version.name, template_version=version, host=hosts[n % 2])
            for n in range(count)
        )
        start = PortBlock.objects.filter(host=hosts[0]).count() * 10
        PortBlock.objects.bulk_create(
            PortBlock(host=p.host, first_port=20000 + start + (n // 2) * 10, last_port=20009 + start + (n // 2) * 10,
                      state=BlockState.LEASED, project=p, leased_at=timezone.now())
            for n, p in enumerate(made)
        )  # fmt: skip
        with CaptureQueriesContext(connection) as captured:
            html = staff_client.get(reverse("dashboard:hosts")).content.decode()
        assert f"<td>{Project.objects.filter(host=hosts[0]).count()}</td>" in html
        return len(captured)

    assert queries_for(3) == queries_for(300)


def test_it_shows_the_database_endpoint_and_why_an_address_is_not_served(staff_client):
    router = {
        "db": {"address": "0.0.0.0:5432", "listening": False, "error": "cannot listen on 0.0.0.0:5432: Address in use"},
        "pooler": {"address": "0.0.0.0:6543", "listening": True},
        "pgbouncer": {"address": "127.0.0.1:6432", "listening": True},
        "routes": 3,
        "pooled": 2,
        "connections": 7,
    }
    make_reported_host(
        name="west", capabilities={**PROCESS_CAPABILITIES, "router": router}, pooler_host="pooler-w.example.com"
    )
    never = make_host(name="never")
    html = unescape(staff_client.get(reverse("dashboard:hosts")).content.decode())
    assert "✕ router 0.0.0.0:5432" in html and "cannot listen on 0.0.0.0:5432: Address in use" in html
    assert "● pooler 0.0.0.0:6543" in html
    assert "3 routed · 2 pooled · 7 connections · pooler name pooler-w.example.com" in html
    assert never.router_status() is None and "no router reported" in html
