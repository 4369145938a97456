from unittest import mock

import pytest
from django.urls import reverse

from audit.models import AuditEntry
from operations.models import Kind
from projects.models import Project
from tests.dashboard_helpers import process_host, register_template
from tests.factories import make_host, make_reported_host
from tests.standin_agent import InfoAgent

pytestmark = pytest.mark.django_db


@pytest.fixture
def template(tmp_path):
    return register_template(tmp_path)


def test_it_rejects_put(staff_client):
    assert staff_client.put(reverse("dashboard:create_project")).status_code == 405


def test_it_says_what_to_do_without_templates(staff_client):
    response = staff_client.get(reverse("dashboard:create_project"))
    assert b"templates sync" in response.content


def test_it_offers_only_the_postgres_versions_the_template_and_hosts_support(staff_client, template):
    process_host(name="east")  # reports 15 and 16; the template supports 14-18
    html = staff_client.get(reverse("dashboard:create_project")).content.decode()
    assert 'value="15"' in html and 'value="16"' in html
    assert 'value="14"' not in html and 'value="17"' not in html


def test_it_rerenders_the_form_alone_for_htmx(staff_client, template):
    process_host(name="east")
    response = staff_client.get(
        reverse("dashboard:create_project"), {"template": "postgres", "host": "east"}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="create-form"') and "<html" not in html
    # The wrapper asks, not the form: htmx validates a form that asks, and an empty name would stop it.
    assert 'input:not([name=csrfmiddlewaretoken]), #create-form select"' in html and html.count("hx-get") == 1


def test_it_creates_the_project_queues_provisioning_and_audits(staff_client, staff_user, template):
    process_host(name="east")
    response = staff_client.post(
        reverse("dashboard:create_project"),
        {"name": "Orders", "template": "postgres", "postgres_major": "16", "host": ""},
    )
    project = Project.objects.get()
    assert response.url == reverse("dashboard:project", args=[project.ref])
    assert project.postgres_major == 16 and project.created_by == staff_user
    assert project.operations.get().kind == Kind.PROVISION
    assert AuditEntry.objects.filter(action="project.create", actor=staff_user).exists()


def test_it_shows_the_verbs_refusal_inline_and_creates_nothing(staff_client, template):
    process_host(name="east")  # no Postgres 14 there
    response = staff_client.post(
        reverse("dashboard:create_project"),
        {"name": "<i>Orders</i>", "template": "postgres", "postgres_major": "14", "host": "east"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="postgres_major-error"' in html
    assert "&lt;i&gt;Orders&lt;/i&gt;" in html
    assert not Project.objects.exists()
    assert not AuditEntry.objects.filter(action="project.create").exists()


def test_it_shows_missing_fields_inline(staff_client, template):
    response = staff_client.post(reverse("dashboard:create_project"), {"template": "postgres"})
    assert response.status_code == 200
    assert 'id="name-error"' in response.content.decode()
    assert not Project.objects.exists()


def test_staff_create_a_project_in_an_organization(staff_client, postgres):
    from orgs.models import Organization

    make_reported_host()
    org = Organization.objects.create(name="Acme")
    staff_client.post(
        "/projects/new/", {"name": "Orders", "template": "postgres", "postgres_major": "15", "organization": org.slug}
    )
    assert Project.objects.get(name="Orders").organization == org
    staff_client.post("/projects/new/", {"name": "Loose", "template": "postgres", "postgres_major": "15"})
    assert Project.objects.get(name="Loose").organization.slug == "default"


def offered(html: str) -> list[str]:
    return [m for m in ("14", "15", "16", "17", "18") if f'<option value="{m}"' in html]


def test_it_asks_a_host_that_never_reported_and_offers_what_it_runs(staff_client, template):
    make_host(name="local")  # as `scripts/dev` leaves it before the agent reported
    agent = InfoAgent([15])
    with mock.patch("hosts.agents.client_for", agent):
        html = staff_client.get(reverse("dashboard:create_project")).content.decode()
    assert agent.asked == ["local"]
    assert offered(html) == ["15"]
    assert '<option value="15" selected>' in html


def test_it_offers_nothing_from_a_host_whose_agent_does_not_answer_and_says_so(staff_client, template):
    make_host(name="local")
    with mock.patch("hosts.agents.client_for", InfoAgent(None)):
        html = staff_client.get(reverse("dashboard:create_project")).content.decode()
    assert offered(html) == []
    assert "Hosts whose agents did not answer are not counted: local" in html


def test_it_opens_on_a_template_the_hosts_can_run(staff_client, tmp_path):
    register_template(tmp_path, "docker-test")  # sorts first; needs the docker driver
    register_template(tmp_path, "postgres")
    process_host(name="local")
    html = staff_client.get(reverse("dashboard:create_project")).content.decode()
    assert '<option value="postgres" selected>' in html
    assert offered(html) == ["15", "16"]


def test_it_refuses_a_name_with_a_line_break(staff_client, template):
    process_host(name="east")
    response = staff_client.post(
        reverse("dashboard:create_project"),
        {"name": "Orders\nDROP", "template": "postgres", "postgres_major": "15", "host": ""},
    )
    assert response.status_code == 200
    assert 'id="name-error"' in response.content.decode()
    assert not Project.objects.exists()
