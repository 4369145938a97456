"""Every admin changelist, add page and change page renders for a superuser."""

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from audit.actions import record
from operations.models import Kind, Operation, OperationEvent
from ports.models import PortBlock
from projects.models import Status, StatusCause
from tests.factories import make_host, make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def one_of_everything(superuser):
    host = make_host()
    project = make_project(host=host)
    PortBlock.objects.create(host=host, first_port=20000, last_port=20009, state="leased", project=project)
    operation = Operation.objects.create(project=project, kind=Kind.PROVISION, deadline=timezone.now())
    OperationEvent.objects.create(operation=operation, step="claim", message="claimed")
    project.move_status(Status.COMING_UP, cause=StatusCause.CLAIMED, operation_id=operation.pk)
    record(superuser, "project.create", project=project, detail={"name": project.name})


def test_every_changelist_and_change_page_renders(admin_client_logged_in, one_of_everything):
    checked = set()
    for model, model_admin in admin.site._registry.items():
        info = (model._meta.app_label, model._meta.model_name)
        changelist = admin_client_logged_in.get(reverse("admin:{}_{}_changelist".format(*info)))
        assert changelist.status_code == 200, info
        if model_admin.has_add_permission(changelist.wsgi_request):
            assert admin_client_logged_in.get(reverse("admin:{}_{}_add".format(*info))).status_code == 200, info
        obj = model.objects.first()
        if obj is not None:
            change = admin_client_logged_in.get(reverse("admin:{}_{}_change".format(*info), args=[obj.pk]))
            assert change.status_code == 200, info
            checked.add(model._meta.label)
    berth_models = {
        "hosts.RuntimeHost",
        "projects.Project",
        "ports.PortBlock",
        "templating.TemplateVersion",
        "operations.Operation",
        "audit.AuditEntry",
        "projects.StatusChange",
    }
    assert berth_models <= checked


def test_project_admin_never_shows_secrets(admin_client_logged_in, one_of_everything):
    from projects.models import Project

    project = Project.objects.get()
    project.secrets = {"postgres_password": "hunter2-very-secret"}
    project.save()
    page = admin_client_logged_in.get(reverse("admin:projects_project_change", args=[project.pk]))
    assert b"hunter2-very-secret" not in page.content
