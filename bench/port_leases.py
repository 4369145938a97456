"""Benchmark port leases on PostgreSQL: the cost of one lease must not grow with the
leases that exist, and one worker must reach 500 leases per second.

    .venv/bin/python bench/port_leases.py [--few 100] [--many 50000] [--rounds 7]

Prints, with the two hosts measured round-robin in one run:
- the median time of one lease_ports call on a host with --few and with --many existing
  leases (target: ratio at most 1.5);
- leases per second with 1 and with 4 concurrent worker processes on one host (target:
  at least 500 at 1 worker), one round of each worker count after the other.

Measured with the default settings (DEBUG off, as deployed: with DEBUG on Django logs
every query, which costs a lease a measurable share of its time).

Hosts span the whole valid range (1024-65535) in blocks of one port, so 50,000 leases fit
on one host. Existing leases sit at random blocks, as churn leaves them. The port check is
a checker that finds every port free: the figures measure the lease itself.
"""

import multiprocessing
import random
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import analyze, default_settings, parser, scratch, spread  # noqa: E402


class AllFree:
    def taken(self, host, ports):
        return set()


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

    return Project.objects.bulk_create(
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


def host_with_leases(name, existing, template_version):
    """A host whose blocks are laid out, `existing` of them leased at random positions."""
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
    return host


def time_leases(projects) -> list[float]:
    from ports.actions import lease_ports

    timings = []
    for project in projects:
        started = time.perf_counter()
        lease_ports(project, 1, checker=AllFree())
        timings.append((time.perf_counter() - started) * 1000)
    return timings


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


def leases_per_second(host, workers, per_worker, template_version) -> float:
    from django.db import connections

    ids = [p.pk for p in make_projects(host, workers * per_worker, template_version)]
    connections.close_all()  # forked workers must not share the parent's connection
    start_at = time.time() + 0.5
    # Workers end by close/join, not by the pool's terminate (SIGTERM), and get SIGTERM's
    # default action back instead of scratch's handler: a run was seen stuck at a pool's
    # exit, the parent waiting for a worker that sat on the task queue's lock.
    pool = multiprocessing.get_context("fork").Pool(
        workers, initializer=signal.signal, initargs=(signal.SIGTERM, signal.SIG_DFL)
    )
    try:
        spans = pool.starmap(lease_all, [(ids[i::workers], start_at) for i in range(workers)])
    finally:
        pool.close()
        pool.join()
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


def main() -> int:
    p = parser(__doc__, "leases")
    p.add_argument("--few", type=int, default=100, help="existing leases on the small host (default %(default)s)")
    p.add_argument("--many", type=int, default=50_000, help="existing leases on the large host (default %(default)s)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default %(default)s)")
    p.add_argument("--per-round", type=int, default=50, help="timed leases per host and round (default %(default)s)")
    p.add_argument("--workers", default="1,4", help="worker counts for the throughput (default %(default)s)")
    p.add_argument("--per-worker", type=int, default=400, help="leases per worker and round (default %(default)s)")
    args = p.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    if args.few + args.per_round * args.rounds > 64512 or args.many + args.per_round * args.rounds > 64512:
        p.error("the leases do not fit one host's 64,512 ports")

    with scratch(args.database, keep=args.keep, settings=default_settings()):
        from templating.models import TemplateVersion

        version = TemplateVersion.objects.create(name="postgres", revision=1, digest="0" * 64, manifest="")
        hosts = {
            "few": host_with_leases("few", args.few, version),
            "many": host_with_leases("many", args.many, version),
        }
        queued = {name: make_projects(host, args.per_round * args.rounds, version) for name, host in hosts.items()}
        analyze()
        timings = {name: [] for name in hosts}
        for r in range(args.rounds):
            for name in hosts:  # round-robin: each round times both hosts
                batch = queued[name][r * args.per_round : (r + 1) * args.per_round]
                timings[name].extend(time_leases(batch))
        few, many = (statistics.median(timings[n]) for n in ("few", "many"))
        print(f"one lease, ms, median (interquartile), {args.rounds} interleaved rounds of {args.per_round}:")
        print(f"  {args.few:>7,} existing leases: {spread(timings['few'])}")
        print(f"  {args.many:>7,} existing leases: {spread(timings['many'])}")
        print(f"  ratio: {many / few:.2f} (target <= 1.5)")

        rates = {w: [] for w in worker_counts}
        throughput_host = host_with_leases("throughput", 100, version)
        needed = sum(worker_counts) * args.per_worker * args.rounds + 100
        if needed > 64512:
            p.error(f"throughput rounds need {needed} blocks; lower --per-worker or --rounds")
        analyze()
        for _ in range(args.rounds):
            for workers in worker_counts:
                rates[workers].append(leases_per_second(throughput_host, workers, args.per_worker, version))
        print(f"leases per second on one host (target: >= 500 at 1 worker), median (IQR) of {args.rounds} rounds:")
        for workers in worker_counts:
            print(f"  {workers} worker{'s' if workers > 1 else ' '}: {spread(rates[workers])}")
        assert_sound()
        print("checked: no overlapping or out-of-range blocks, no project with two blocks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
