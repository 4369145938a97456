"""Median server time of the projects page and of its status partial, with 100 and 10,000 projects.

    .venv/bin/python bench/dashboard.py [--runs 15]

Runs against a scratch PostgreSQL database (BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/berth_bench_dashboard), dropped and re-created each run.
Requests go through Django's test client in process, so the time is the server's: URL
routing, middleware, queries and template rendering, without a network. The target is a
ratio (10,000 / 100) of at most 1.5: a page's cost must not grow with the table.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT))

BENCH_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/berth_bench_dashboard")
os.environ.setdefault("DEBUG", "1")
os.environ["DATABASE_URL"] = BENCH_URL
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berth.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")
TARGET_RATIO = 1.5
SIZES = (100, 10_000)


def recreate_database() -> None:
    import dj_database_url
    import psycopg

    config = dj_database_url.parse(BENCH_URL)
    with psycopg.connect(
        host=config["HOST"], port=config["PORT"] or None, user=config["USER"], dbname="postgres", autocommit=True
    ) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{config["NAME"]}"')
        admin.execute(f'CREATE DATABASE "{config["NAME"]}"')


def seed(count: int, host, version) -> None:
    """`count` live projects, each with two operations (the last one decides the row)."""
    from django.utils import timezone

    from operations.models import Kind, Operation, State
    from projects.models import Project, Status

    Operation.objects.all().delete()
    Project.objects.all().delete()
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
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def median_ms(client, url: str, runs: int) -> float:
    client.get(url)  # warm: template compilation, connection
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code in (200, 286), (url, response.status_code)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    recreate_database()
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.urls import reverse

    from hosts.models import RuntimeHost
    from projects.models import Project
    from templating.actions import sync_templates
    from templating.models import TemplateVersion

    setup_test_environment()
    settings.ALLOWED_HOSTS = ["testserver"]
    call_command("migrate", verbosity=0)
    sync_templates(ROOT / "runtimes")
    version = TemplateVersion.objects.latest_of("postgres")
    host = RuntimeHost.objects.create(
        name="bench", agent_url="http://127.0.0.1:9", agent_token="x", port_range_start=20000, port_range_end=60000
    )
    user = get_user_model().objects.create_user("bench", password="bench-password", is_staff=True)
    client = Client()
    client.force_login(user)

    results = {}
    for size in SIZES:
        seed(size, host, version)
        page_refs = list(Project.objects.order_by("-created_at").values_list("ref", flat=True)[:50])
        status_url = reverse("dashboard:project_statuses") + "?" + "&".join(f"ref={r}" for r in page_refs)
        results[size] = {
            "projects page": median_ms(client, reverse("dashboard:projects"), args.runs),
            "status partial": median_ms(client, status_url, args.runs),
        }

    small, large = SIZES
    print(f"median server time over {args.runs} requests (ms); target ratio <= {TARGET_RATIO}")
    print(f"{'view':<16}{small:>10,}{large:>10,}{'ratio':>8}")
    worst = 0.0
    for view in results[small]:
        ratio = results[large][view] / results[small][view]
        worst = max(worst, ratio)
        print(f"{view:<16}{results[small][view]:>10.1f}{results[large][view]:>10.1f}{ratio:>8.2f}")
    print("OK" if worst <= TARGET_RATIO else f"OVER TARGET: worst ratio {worst:.2f}")
    return 0 if worst <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
