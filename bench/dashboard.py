"""Median server time of the projects page (first page, last page, search) and of its
status partial, with 100 and with 10,000 projects, measured round-robin in one run.

    .venv/bin/python bench/dashboard.py [--small 100] [--large 10000] [--rounds 7] [--runs 5]

Each size has a throwaway PostgreSQL database of its own on BENCH_DATABASE_URL's server
(dropped at the end); the connection is switched between them for each round, so machine
load falls on both sizes alike. Requests go through Django's test client in process, so
the time is the server's: URL routing, middleware, queries and template rendering,
without a network. The target is a ratio (large / small) of at most 1.5 for every view.
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, analyze, create_database, drop_databases, parser, scratch, spread, use  # noqa: E402

TARGET_RATIO = 1.5


def seed(count: int) -> dict:
    """`count` live projects, each with two operations (the last one decides the row); the views to time."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse
    from django.utils import timezone

    from berth.keyset import AFTER, _encode
    from hosts.models import RuntimeHost
    from operations.models import Kind, Operation, State
    from projects.models import Project, Status
    from templating.actions import sync_templates
    from templating.models import TemplateVersion

    sync_templates(ROOT / "runtimes")
    version = TemplateVersion.objects.latest_of("postgres")
    host = RuntimeHost.objects.create(
        name="bench", agent_url="http://127.0.0.1:9", agent_token="x", port_range_start=20000, port_range_end=31999
    )
    now = timezone.now()
    statuses = [Status.ACTIVE_HEALTHY, Status.INACTIVE, Status.ACTIVE_UNHEALTHY]
    projects = Project.objects.bulk_create(
        (
            Project(
                name=f"Project {n}",
                postgres_major=15,
                template=version.name,
                template_version=version,
                host=host,
                status=statuses[n % 3],
            )
            for n in range(count)
        ),
        batch_size=2000,
    )
    Operation.objects.bulk_create(
        (
            Operation(project=p, kind=kind, state=State.SUCCEEDED, deadline=now)
            for p in projects
            for kind in (Kind.PROVISION, Kind.RESTART)
        ),
        batch_size=5000,
    )
    analyze()
    user = get_user_model().objects.create_user("bench", password="bench-password-1", is_staff=True)
    client = Client()
    client.force_login(user)
    page_refs = list(Project.objects.order_by("-created_at", "-pk").values_list("ref", flat=True)[:50])
    near_oldest = Project.objects.order_by("created_at", "pk")[min(25, count - 1)]
    projects_url = reverse("dashboard:projects")
    return {
        "client": client,
        "views": {
            "projects, first page": (projects_url, {}),
            "projects, last page": (
                projects_url,
                {"cursor": _encode(AFTER, near_oldest, [("created_at", True), ("pk", True)])},
            ),
            "projects, search": (projects_url, {"q": "Project 77"}),
            "status partial": (reverse("dashboard:project_statuses"), {"ref": page_refs}),
        },
    }


def main() -> int:
    p = parser(__doc__, "dashboard")
    p.add_argument("--small", type=int, default=100, help="projects in the small case (default %(default)s)")
    p.add_argument("--large", type=int, default=10_000, help="projects in the large case (default %(default)s)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default %(default)s)")
    p.add_argument("--runs", type=int, default=5, help="requests per view, size and round (default %(default)s)")
    args = p.parse_args()
    names = {args.small: f"{args.database}_small", args.large: f"{args.database}_large"}
    with scratch(args.database, keep=args.keep):
        from django.conf import settings
        from django.test.utils import setup_test_environment

        setup_test_environment()
        settings.ALLOWED_HOSTS = ["testserver"]
        try:
            cases = {}
            for size, name in names.items():
                create_database(name)
                cases[size] = seed(size)
            times = {size: {view: [] for view in cases[size]["views"]} for size in names}
            for _ in range(args.rounds):
                for size in names:  # round-robin: every round times both sizes
                    use(names[size])
                    client = cases[size]["client"]
                    for view, (url, params) in cases[size]["views"].items():
                        client.get(url, params)  # the reconnect after the switch is not timed
                        for _ in range(args.runs):
                            started = time.perf_counter()
                            response = client.get(url, params)
                            times[size][view].append((time.perf_counter() - started) * 1000)
                            assert response.status_code in (200, 286), (view, response.status_code)
        finally:
            use(args.database)
            if not args.keep:
                drop_databases(names.values())
    small, large = args.small, args.large
    print(f"median server time, ms (interquartile), {args.rounds} interleaved rounds of {args.runs} requests")
    print(f"{'view':<22}{small:>20,}{large:>20,}{'ratio':>8}")
    worst = 0.0
    for view in times[small]:
        ratio = statistics.median(times[large][view]) / statistics.median(times[small][view])
        worst = max(worst, ratio)
        print(f"{view:<22}{spread(times[small][view]):>20}{spread(times[large][view]):>20}{ratio:>8.2f}")
    print("OK" if worst <= TARGET_RATIO else f"OVER TARGET: worst ratio {worst:.2f}")
    return 0 if worst <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
