"""`manage.py projects`: create, list and act on many projects through the dashboard's verbs."""

from io import StringIO
from unittest import mock

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import AuditEntry
from operations.models import Operation, State
from projects.models import Project, Status
from templating.actions import sync_templates
from tests.factories import make_host

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def setup():
    with mock.patch("django_q.tasks.async_task"):
        sync_templates()
        yield


def run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("projects", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_it_creates_a_project_and_queues_its_provisioning():
    make_host(capabilities={"driver": "process", "postgres_versions": [15]})
    out, _ = run("create", "Orders", "--postgres", "15")
    project = Project.objects.get(name="Orders")
    assert f"Created {project.ref}" in out
    assert project.operations.get().kind == "provision"
    assert AuditEntry.objects.get(action="project.create").actor_label == "manage.py projects"


def test_it_refuses_an_unsupported_version_and_creates_nothing():
    make_host(capabilities={"driver": "process", "postgres_versions": [15]})
    with pytest.raises(CommandError, match="postgres_major: .*supported: 14, 15, 16, 17, 18"):
        run("create", "Orders", "--postgres", "12")
    assert not Project.objects.exists()


def test_it_refuses_an_unknown_host():
    with pytest.raises(CommandError, match="No runtime host named 'nowhere'"):
        run("create", "Orders", "--host", "nowhere")


def test_it_acts_on_many_and_reports_each_refusal():
    host = make_host(capabilities={"driver": "process", "postgres_versions": [15]})
    run("create", "One")
    run("create", "Two")
    one, two = Project.objects.order_by("name")
    Operation.objects.update(state=State.SUCCEEDED)
    Project.objects.update(host=host, status=Status.ACTIVE_HEALTHY)
    Operation.objects.create(project=two, kind="restart", deadline=two.created_at)  # two is busy
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="2 of 3 request\\(s\\) refused"):
        call_command("projects", "stop", one.ref, two.ref, "missingref", stdout=out, stderr=err)
    assert f"queued   {one.ref}: stop" in out.getvalue()
    assert f"refused  {two.ref}: an operation is already in progress" in err.getvalue()
    assert "refused  missingref: no such project" in err.getvalue()
    assert one.operations.filter(kind="stop", state=State.QUEUED).exists()
    assert not two.operations.filter(kind="stop").exists()


def test_it_lists_projects_with_their_status():
    make_host(capabilities={"driver": "process", "postgres_versions": [15]})
    run("create", "Orders")
    out, _ = run("list", "--status", "unknown")
    assert "Orders" in out and "UNKNOWN" in out


def test_resync_is_refused_for_a_project_already_on_the_latest_version():
    host = make_host(capabilities={"driver": "process", "postgres_versions": [15]})
    run("create", "Orders")
    project = Project.objects.get()
    Operation.objects.update(state=State.SUCCEEDED)
    Project.objects.update(host=host)
    err = StringIO()
    with pytest.raises(CommandError, match="1 of 1 request\\(s\\) refused"):
        call_command("projects", "resync", project.ref, stdout=StringIO(), stderr=err)
    assert "already on the latest version of postgres" in err.getvalue()


def test_cancel_cancels_a_running_operation_and_refuses_where_nothing_runs():
    from django.utils import timezone

    from operations.models import Kind
    from tests.factories import make_project

    busy, idle = make_project(host=make_host()), make_project(host=make_host(name="other"))
    running = Operation.objects.create(project=busy, kind=Kind.START, state=State.RUNNING, deadline=timezone.now())
    with pytest.raises(CommandError, match="1 of 2 cancel"):
        run("cancel", busy.ref, idle.ref)
    running.refresh_from_db()
    assert running.state == State.CANCELLED
    assert AuditEntry.objects.get(action="operation.cancel").actor_label == "manage.py projects"


def test_it_shows_a_refusal_as_its_message_not_a_list():
    make_host(capabilities={"driver": "process", "postgres_versions": [15]})
    with pytest.raises(CommandError) as refused:
        run("create", "Orders", "--postgres", "12")
    assert str(refused.value) == (
        "postgres_major: Postgres 12 is not supported by template postgres r1; supported: 14, 15, 16, 17, 18"
    )


def test_it_refuses_a_name_with_control_characters():
    make_host(capabilities={"driver": "process", "postgres_versions": [15]})
    with pytest.raises(CommandError, match="name: A name cannot contain control characters"):
        run("create", "Orders\x1b[2J", "--postgres", "15")
    assert not Project.objects.exists()
