"""Benchmark port leases on PostgreSQL: cost per lease must not grow with existing leases.

    .venv/bin/python bench/port_leases.py

Creates (and drops first) the throwaway database berth_bench_ports on
BENCH_DATABASE_URL's server (default postgres://postgres@127.0.0.1:5432), then prints:
- the median time of one lease_ports call with 100 and with 50,000 existing leases on
  the host (target: ratio at most 1.5);
- leases per second with 1 and with 4 concurrent worker processes on one host.

Hosts span the whole valid range (1024-65535) in blocks of one port, so 50,000 leases
fit on one host. Existing leases sit at random blocks, as churn leaves them. The port
check is a checker that finds every port free: the figures measure the lease itself.
"""

import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
DATABASE = "berth_bench_ports"
TIMED_LEASES = 300
LEASES_PER_WORKER = 600

os.environ.update(
    DEBUG="1",
    DATABASE_URL=f"{SERVER_URL}/{DATABASE}",
    BERTH_VAR_DIR=tempfile.mkdtemp(prefix="berth-bench-"),
    DJANGO_SETTINGS_MODULE="berth.settings",
)
sys.path.insert(0, str(ROOT / "platform"))


class AllFree:
    def taken(self, host, ports):
        return set()


def recreate_database():
    import psycopg

    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        admin.execute(f"CREATE DATABASE {DATABASE}")


def setup_django():
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, skip_checks=True)


def make_host(name):
    from hosts.models import RuntimeHost

    return RuntimeHost.objects.create(
        name=name,
        agent_url="http://10.0.0.1:8470",
        agent_token="bench",
        port_range_start=1024,
        port_range_end=65535,
        block_size=1,
    )


def make_projects(host, count, template_version):
    from projects.models import Project

    made = Project.objects.bulk_create(
        (
            Project(
                name=f"{host.name} {n}",
                postgres_major=15,
                template="postgres",
                template_version=template_version,
                host=host,
            )
            for n in range(count)
        ),
        batch_size=5000,
    )
    return made


def host_with_leases(name, existing, template_version):
    """A host whose blocks are laid out, `existing` of them leased at random positions."""
    from django.db import connection
    from django.utils import timezone

    from ports.actions import sync_port_blocks
    from ports.models import BlockState, PortBlock

    host = make_host(name)
    ports = random.Random(existing).sample(range(1024, 65536), existing)
    now = timezone.now()
    PortBlock.objects.bulk_create(
        (
            PortBlock(
                host=host,
                first_port=port,
                last_port=port,
                state=BlockState.LEASED,
                project=project,
                last_project_ref=project.ref,
                leased_at=now,
                checked_at=now,
            )
            for port, project in zip(ports, make_projects(host, existing, template_version), strict=True)
        ),
        batch_size=5000,
    )
    sync_port_blocks(host)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # as autovacuum would by now: plans for a table of this size
    return host


def median_lease_ms(host, template_version) -> float:
    from ports.actions import lease_ports

    projects = make_projects(host, TIMED_LEASES, template_version)
    timings = []
    for project in projects:
        started = time.perf_counter()
        lease_ports(project, 1, checker=AllFree())
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def lease_all(project_ids, start_at):
    """One worker process: lease a block for each project; returns (first start, last end)."""
    from django.db import connection

    from ports.actions import lease_ports
    from projects.models import Project

    projects = list(Project.objects.filter(pk__in=project_ids))
    while time.time() < start_at:
        time.sleep(0.001)
    began = time.time()
    for project in projects:
        lease_ports(project, 1, checker=AllFree())
    ended = time.time()
    connection.close()
    return began, ended


def leases_per_second(workers, template_version) -> float:
    from django.db import connections

    host = host_with_leases(f"throughput{workers}", 100, template_version)
    ids = [p.pk for p in make_projects(host, workers * LEASES_PER_WORKER, template_version)]
    connections.close_all()  # forked workers must not share the parent's connection
    start_at = time.time() + 1.0
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        spans = pool.starmap(lease_all, [(ids[i::workers], start_at) for i in range(workers)])
    elapsed = max(end for _, end in spans) - min(begin for begin, _ in spans)
    return len(ids) / elapsed


def assert_sound():
    """Every lease lies in 1024-65535, no two blocks of a host overlap, no project holds two blocks."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT count(*) FROM (
                   SELECT first_port, lag(last_port) OVER (PARTITION BY host_id ORDER BY first_port) AS previous_last
                   FROM ports_portblock) blocks
               WHERE first_port <= previous_last"""
        )
        assert cursor.fetchone()[0] == 0, "overlapping blocks"
        cursor.execute("SELECT count(*) FROM ports_portblock WHERE first_port < 1024 OR last_port > 65535")
        assert cursor.fetchone()[0] == 0, "block out of range"
        cursor.execute("SELECT count(*) - count(DISTINCT project_id) FROM ports_portblock WHERE project_id IS NOT NULL")
        assert cursor.fetchone()[0] == 0, "a project holds two blocks"


def main():
    recreate_database()
    setup_django()
    from templating.models import TemplateVersion

    template_version = TemplateVersion.objects.create(name="postgres", revision=1, digest="0" * 64, manifest="")
    few = median_lease_ms(host_with_leases("few", 100, template_version), template_version)
    many = median_lease_ms(host_with_leases("many", 50_000, template_version), template_version)
    print(f"median lease with    100 existing leases: {few:.2f} ms")
    print(f"median lease with 50,000 existing leases: {many:.2f} ms")
    print(f"ratio: {many / few:.2f} (target <= 1.5)")
    for workers in (1, 4):
        rate = leases_per_second(workers, template_version)
        print(f"{workers} worker{'s' if workers > 1 else ' '}: {rate:.0f} leases/s")
    assert_sound()
    print("checked: no overlapping or out-of-range blocks")


if __name__ == "__main__":
    main()
