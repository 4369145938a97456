"""Charts for the dashboard, drawn on the server as SVG polylines (no charting library, no
script): the last 24 hours of a project's connections, database size and transactions per
second, and of each host's projects and free blocks.

A chart's geometry is numbers in a fixed viewBox (WIDTH x HEIGHT) that the page stretches
to its width, so it reads the same at 390 px as on a desktop; the values people read
(latest, highest) are text beside it. A gap longer than two collection intervals (a pass
that could not read the runtime) breaks the line instead of drawing across it.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from metrics.models import HostSample, ProjectSample

WIDTH, HEIGHT = 300, 80
SPAN = timedelta(hours=24)


@dataclass(frozen=True)
class Chart:
    title: str
    lines: list[str]  # polyline `points`, one per unbroken run of samples
    latest: str  # the last value, formatted ("—" with no sample)
    highest: str
    description: str  # what a screen reader says instead of the picture

    @property
    def empty(self) -> bool:
        return not self.lines


def chart(title: str, series: list[tuple[datetime, float | None]], now: datetime, show) -> Chart:
    """A chart of (time, value) pairs over the SPAN ending `now`; `show` formats a value."""
    start = now - SPAN
    points = [(at, value) for at, value in series if value is not None and at >= start]
    if not points:
        return Chart(title, [], "—", "—", f"{title}: no samples in the last 24 hours")
    top = max(value for _, value in points) or 1
    gap = timedelta(minutes=2 * settings.BERTH_METRICS_COLLECT_MINUTES)
    lines, run, previous = [], [], None
    for at, value in points:
        if previous is not None and at - previous > gap and run:
            lines.append(" ".join(run))
            run = []
        x = (at - start) / SPAN * WIDTH
        y = HEIGHT - value / top * (HEIGHT - 2) - 1  # a pixel of margin keeps the line inside
        run.append(f"{x:.1f},{y:.1f}")
        previous = at
    lines.append(" ".join(run if len(run) > 1 else run * 2))  # one sample still shows as a dot
    latest, highest = show(points[-1][1]), show(max(value for _, value in points))
    return Chart(title, lines, latest, highest, f"{title} over the last 24 hours: now {latest}, highest {highest}")


def project_charts(project, now: datetime | None = None) -> list[Chart]:
    now = now or timezone.now()
    rows = list(
        ProjectSample.objects.filter(project=project, at__gte=now - SPAN)
        .order_by("at")
        .values_list("at", "connections", "database_bytes", "tps")
    )
    return [
        chart("Connections", [(at, c) for at, c, _, _ in rows], now, lambda v: f"{v:.0f}"),
        chart("Database size", [(at, b) for at, _, b, _ in rows], now, filesizeformat),
        chart("Transactions per second", [(at, t) for at, _, _, t in rows], now, lambda v: f"{v:.1f}/s"),
    ]


def host_charts(hosts, now: datetime | None = None) -> dict[int, list[Chart]]:
    """{host id: [projects, free blocks]} for the hosts, in one query."""
    now = now or timezone.now()
    series = defaultdict(list)
    rows = HostSample.objects.filter(host__in=[h.pk for h in hosts], at__gte=now - SPAN).order_by("host", "at")
    for host_id, at, projects, free in rows.values_list("host", "at", "projects", "free_blocks"):
        series[host_id].append((at, projects, free))
    return {
        host.pk: [
            chart("Projects", [(at, p) for at, p, _ in series[host.pk]], now, lambda v: f"{v:.0f}"),
            chart("Free port blocks", [(at, f) for at, _, f in series[host.pk]], now, lambda v: f"{v:.0f}"),
        ]
        for host in hosts
    }
