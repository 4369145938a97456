import pytest
from django.urls import reverse

from audit.models import AuditEntry
from operations.models import Kind
from projects.models import Project
from tests.dashboard_helpers import process_host, register_template

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
    assert 'hx-include="find form"' in html and html.count("hx-get") == 1


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
    from tests.factories import make_host

    make_host(capabilities={"driver": "process", "postgres_versions": [15]})
    org = Organization.objects.create(name="Acme")
    staff_client.post(
        "/projects/new/", {"name": "Orders", "template": "postgres", "postgres_major": "15", "organization": org.slug}
    )
    assert Project.objects.get(name="Orders").organization == org
    staff_client.post("/projects/new/", {"name": "Loose", "template": "postgres", "postgres_major": "15"})
    assert Project.objects.get(name="Loose").organization.slug == "default"
