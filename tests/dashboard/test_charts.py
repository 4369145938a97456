"""Charts on the project and hosts pages: drawn on the server from the metrics pass's
samples, redrawn by htmx polling, honest about gaps and about having no data yet."""

from datetime import timedelta
from unittest import mock

import pytest
from django.urls import reverse
from django.utils import timezone

from metrics.charts import HEIGHT, WIDTH, chart
from metrics.models import HostSample, ProjectSample
from templating.actions import sync_templates
from templating.models import TemplateVersion
from tests.factories import make_host, make_project

pytestmark = pytest.mark.django_db


def sample(project, minutes_ago, *, connections=3, size=10_000_000, tps=2.5):
    return ProjectSample.objects.create(
        project=project,
        at=timezone.now() - timedelta(minutes=minutes_ago),
        connections=connections,
        database_bytes=size,
        xact_total=0,
        rows_read_total=0,
        rows_written_total=0,
        tps=tps,
    )


def points(line: str) -> list[tuple[float, float]]:
    return [tuple(map(float, pair.split(","))) for pair in line.split()]


def test_a_chart_spans_24_hours_inside_its_box_and_breaks_at_a_gap(settings):
    settings.BERTH_METRICS_COLLECT_MINUTES = 5
    now = timezone.now()
    series = [(now - timedelta(minutes=m), v) for m, v in ((1500, 99), (120, 1), (115, 4), (110, 2), (30, 3), (25, 0))]
    drawn = chart("Connections", series, now, lambda v: f"{v:.0f}")
    # The sample older than 24 hours is left out; 110 -> 30 minutes ago is a gap: two lines.
    assert len(drawn.lines) == 2
    everything = [p for line in drawn.lines for p in points(line)]
    assert all(0 <= x <= WIDTH and 0 <= y <= HEIGHT for x, y in everything)
    assert everything[0][0] == pytest.approx(WIDTH * (1 - 120 / 1440), abs=0.1)
    assert min(y for _, y in everything) == pytest.approx(1.0), "the highest value touches the top"
    assert (drawn.latest, drawn.highest) == ("0", "4")


@pytest.fixture
def project():
    with mock.patch("django_q.tasks.async_task"):
        sync_templates()
    return make_project(host=make_host(), template_version=TemplateVersion.objects.latest_of("postgres"))


def test_the_project_page_charts_its_samples_and_polls_for_more(staff_client, project):
    for minutes in (30, 25, 20):
        sample(project, minutes, connections=minutes // 5, size=5 * 1024 * 1024)

    page = staff_client.get(reverse("dashboard:project", args=[project.ref])).content.decode()

    assert "Last 24 hours" in page
    assert page.count("<polyline") == 3
    assert "<strong>4</strong>" in page, "the latest connections"
    assert "<strong>5.0\xa0MB</strong>" in page
    assert "<strong>2.5/s</strong>" in page
    # Nothing polls for charts on their own: the status poll redraws them while in flight.
    assert 'id="project-charts" hx' not in page
    poll = staff_client.get(reverse("dashboard:project_status", args=[project.ref]), headers={"HX-Request": "true"})
    assert '<section class="card" id="project-charts" hx-swap-oob="true">' in poll.content.decode()
    assert poll.content.decode().count("<polyline") == 3


def test_a_project_without_samples_says_so_instead_of_drawing_nothing(staff_client, project):
    text = staff_client.get(reverse("dashboard:project", args=[project.ref])).content.decode()
    assert "<polyline" not in text
    assert "No samples yet" in text
    assert "Connections: no samples in the last 24 hours" in text


def test_the_hosts_page_charts_each_hosts_projects_and_free_blocks(staff_client):
    busy = make_host(name="busy")
    make_host(name="idle")
    now = timezone.now()
    for minutes, projects in ((20, 3), (15, 5), (10, 8)):
        HostSample.objects.create(host=busy, at=now - timedelta(minutes=minutes), projects=projects, free_blocks=90)

    page = staff_client.get(reverse("dashboard:hosts")).content.decode()
    charts = page[page.index('id="host-charts"') :]

    assert charts.index("busy") < charts.index("idle")
    assert charts.count("<polyline") == 2, "the idle host has no samples: no lines"
    assert "<strong>8</strong>" in charts and "<strong>90</strong>" in charts
    assert "Projects: no samples in the last 24 hours" in charts
