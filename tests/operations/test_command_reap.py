from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from operations.apps import ensure_schedules
from operations.models import Kind, Operation, State
from projects.models import Status
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def test_it_times_out_operations_past_their_deadline():
    project = make_project(status=Status.COMING_UP)
    operation = Operation.objects.create(
        project=project, kind=Kind.PROVISION, state=State.RUNNING, deadline=timezone.now() - timedelta(seconds=1)
    )
    out = StringIO()
    call_command("reap", stdout=out)
    assert "Reaped 1" in out.getvalue()
    operation.refresh_from_db()
    project.refresh_from_db()
    assert operation.state == State.TIMED_OUT
    assert project.status == Status.INIT_FAILED


def test_the_reaper_and_health_refresh_run_as_schedules(settings):
    settings.BERTH_REAPER_MINUTES = 2
    ensure_schedules(sender=None)
    reaper = Schedule.objects.get(name="berth-reaper")
    assert reaper.func == "operations.tasks.reap" and reaper.minutes == 2 and reaper.repeats == -1
    assert Schedule.objects.filter(name="berth-health-refresh", func="operations.tasks.refresh_health").exists()
    ensure_schedules(sender=None)
    assert Schedule.objects.filter(name="berth-reaper").count() == 1
