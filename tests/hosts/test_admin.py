"""The admin's host form (write-only tokens, first contact on save) and the creation it does not offer."""

from unittest import mock

import pytest
from django.urls import reverse

from hosts.models import RuntimeHost
from tests.factories import make_host
from tests.standin_agent import InfoAgent

pytestmark = pytest.mark.django_db

TOKEN = "a-stored-agent-token-0123456789"


def form_data(**fields):
    data = {
        "name": "east",
        "agent_url": "http://127.0.0.1:8470",
        "agent_token": "",
        "port_range_start": "20000",
        "port_range_end": "20999",
        "block_size": "20",
        "probe_host_override": "",
        "accepts_projects": "on",
    }
    data.update(fields)
    return data


def test_the_host_form_never_shows_the_agent_token(admin_client_logged_in):
    host = make_host(agent_token=TOKEN)
    page = admin_client_logged_in.get(reverse("admin:hosts_runtimehost_change", args=[host.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert TOKEN not in html
    assert 'type="password" name="agent_token"' in html


def test_a_blank_token_keeps_the_stored_one(admin_client_logged_in):
    host = make_host(name="east", agent_token=TOKEN)
    with mock.patch("hosts.agents.client_for", InfoAgent([15, 16])):
        response = admin_client_logged_in.post(
            reverse("admin:hosts_runtimehost_change", args=[host.pk]), form_data(block_size="10")
        )
    assert response.status_code == 302
    host.refresh_from_db()
    assert host.agent_token == TOKEN and host.block_size == 10


def test_a_new_token_replaces_the_stored_one(admin_client_logged_in):
    host = make_host(name="east", agent_token=TOKEN)
    with mock.patch("hosts.agents.client_for", InfoAgent([15, 16])):
        admin_client_logged_in.post(
            reverse("admin:hosts_runtimehost_change", args=[host.pk]), form_data(agent_token="a-new-token-9876543210")
        )
    host.refresh_from_db()
    assert host.agent_token == "a-new-token-9876543210"


def test_adding_a_host_needs_a_token(admin_client_logged_in):
    response = admin_client_logged_in.post(reverse("admin:hosts_runtimehost_add"), form_data())
    assert response.status_code == 200
    assert "Enter the agent" in response.content.decode()
    assert not RuntimeHost.objects.exists()


# A real commit, so the agent is asked after it as in production (on_commit), before the redirect.
@pytest.mark.django_db(transaction=True)
def test_adding_a_host_asks_its_agent_once_saved(admin_client_logged_in, settings):
    settings.BERTH_AGENT_PAGE_DEADLINE = 0.5
    agent = InfoAgent([15, 16])
    with mock.patch("hosts.agents.client_for", agent):
        response = admin_client_logged_in.post(
            reverse("admin:hosts_runtimehost_add"), form_data(agent_token=TOKEN), follow=True
        )
    assert agent.asked == ["east"] and agent.deadlines == [0.5]
    host = RuntimeHost.objects.get()
    assert host.driver == "process" and host.postgres_versions == [15, 16]
    assert "The agent of east answered: process driver, Postgres 15, 16." in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_adding_a_host_whose_agent_is_down_says_so_and_keeps_the_host(admin_client_logged_in):
    with mock.patch("hosts.agents.client_for", InfoAgent(None)):
        response = admin_client_logged_in.post(
            reverse("admin:hosts_runtimehost_add"), form_data(agent_token=TOKEN), follow=True
        )
    assert "did not answer" in response.content.decode()
    assert "connection refused" in RuntimeHost.objects.get().last_error


def test_the_admin_refuses_a_block_size_of_zero(admin_client_logged_in):
    response = admin_client_logged_in.post(
        reverse("admin:hosts_runtimehost_add"), form_data(agent_token=TOKEN, block_size="0")
    )
    assert response.status_code == 200
    assert not RuntimeHost.objects.exists()


@pytest.mark.parametrize("model", ["projects_project", "operations_operation"])
def test_projects_and_operations_are_not_added_in_the_admin(admin_client_logged_in, model):
    # A project comes from create_project (its checks, its provisioning); an operation from the verbs.
    assert admin_client_logged_in.get(reverse(f"admin:{model}_add")).status_code == 403
    changelist = admin_client_logged_in.get(reverse(f"admin:{model}_changelist")).content.decode()
    assert reverse(f"admin:{model}_add") not in changelist


def test_the_admin_accepts_a_compose_service_name_as_agent_host(admin_client_logged_in):
    # The README's docker-compose deployment registers `http://agent:8470`.
    with mock.patch("hosts.agents.client_for", InfoAgent([15, 16])):
        response = admin_client_logged_in.post(
            reverse("admin:hosts_runtimehost_add"), form_data(agent_url="http://agent:8470", agent_token=TOKEN)
        )
    assert response.status_code == 302
    assert RuntimeHost.objects.get().agent_url == "http://agent:8470"
