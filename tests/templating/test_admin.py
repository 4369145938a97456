import pytest
from django.urls import reverse

from operations.models import Kind, Operation
from tests.factories import make_runtime_project, register_template
from tests.stack import RUNTIMES

pytestmark = pytest.mark.django_db


def test_it_queues_a_resync_to_the_latest_version_from_the_project_admin(admin_client_logged_in):
    r1 = register_template(RUNTIMES / "postgres")
    behind = make_runtime_project(r1)
    latest = register_template(RUNTIMES / "supabase")
    current = make_runtime_project(latest, first_port=20100)
    r2 = register_template(RUNTIMES / "postgres")

    response = admin_client_logged_in.post(
        reverse("admin:projects_project_changelist"),
        {"action": "resync_to_latest", "_selected_action": [behind.pk, current.pk]},
        follow=True,
    )

    assert response.status_code == 200
    operation = Operation.objects.get(project=behind)
    assert operation.kind == Kind.RESYNC and operation.params == {"template_version": r2.pk}
    assert not Operation.objects.filter(project=current).exists()
    assert "Re-sync queued for 1 project(s); 1 already on the latest version." in response.content.decode()


def test_it_shows_template_versions_read_only(admin_client_logged_in):
    version = register_template(RUNTIMES / "postgres")
    change = admin_client_logged_in.get(reverse("admin:templating_templateversion_change", args=[version.pk]))
    assert change.status_code == 200 and b'name="_save"' not in change.content
    delete = admin_client_logged_in.get(reverse("admin:templating_templateversion_delete", args=[version.pk]))
    assert delete.status_code == 403
    assert admin_client_logged_in.get(reverse("admin:templating_templateversion_add")).status_code == 403
