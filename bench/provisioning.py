"""Benchmark provisioning end to end with default settings: Berth's own overhead per
provisioning, and what 2 workers gain over running provisionings one after another.

    .venv/bin/python bench/provisioning.py [--projects 20] [--rounds 2] [--redis-url URL]

Runs the real thing: a django-q2 cluster (`manage.py qcluster`, default settings: 2
workers, the ORM broker unless --redis-url, DEBUG off), a local agent with the process driver, and
real Postgres clusters on --ports (default 21000-21990). Each round provisions --projects/--rounds
projects one at a time, then as many at once, so both see the same machine load; every
project is deleted (data purged) before the next phase. Printed:
- one at a time: request -> ACTIVE_HEALTHY, the runtime's own start (the agent's `up`:
  initdb and pg_ctl start) and Berth's overhead, the difference (queueing, claim,
  placement, lease and port check, render and push, health probes, bookkeeping), as
  medians with their interquartile range (target: overhead <= 0.25 s);
- all at once on the workers: the wall time against the sum of the one-at-a-time totals
  (target: <= 0.6).
It stops what it started by pid (the worker's process group, the agent, and any cluster
left running under its own runtime folder, from its postmaster.pid), and removes its
database and folders.
"""

import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import default_settings, parser, port_range, scratch, spread, start_agent, start_worker  # noqa: E402


def runtime_start_seconds(project) -> float:
    """The agent's `up`: from the event before the call to the event after it."""
    operation = project.operations.get(kind="provision")
    ups = list(operation.events.filter(step="up").order_by("at", "pk").values_list("at", flat=True))
    return (ups[-1] - ups[0]).total_seconds()


def wait_healthy(projects, timeout: float) -> None:
    from projects.models import Project, Status

    refs = [p.ref for p in projects]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = dict(Project.objects.filter(ref__in=refs).values_list("ref", "status"))
        if all(s == Status.ACTIVE_HEALTHY for s in statuses.values()):
            return
        failed = [r for r, s in statuses.items() if s == Status.INIT_FAILED]
        if failed:
            raise SystemExit(f"provisioning failed: {why_failed(failed)}")
        time.sleep(0.02)
    raise SystemExit(f"not all of {len(refs)} projects became healthy within {timeout}s")


def why_failed(refs: list[str]) -> str:
    """Each failed project's provisioning error, as its operation recorded it."""
    from operations.models import Operation

    failed = Operation.objects.filter(project__ref__in=refs, kind="provision").select_related("project")
    return "; ".join(f"{op.project.ref}: {op.error_code}: {op.error_message}" for op in failed.order_by("project__ref"))


def delete_all(projects) -> None:
    """Delete (purging data) and wait until every delete finished: untimed, between phases."""
    from operations.actions import request_operation
    from operations.models import Operation

    for project in projects:
        project.refresh_from_db()
        if not project.operations.unfinished().exists():
            request_operation(project, "delete", params={"purge_data": True})
    deadline = time.monotonic() + 120
    while Operation.objects.unfinished().exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def stop_clusters(root: Path) -> None:
    """Stop any Postgres cluster still running under `root`, by the pid in its postmaster.pid."""
    for pidfile in root.glob("**/postmaster.pid"):
        try:
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGINT)  # fast shutdown
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            pass


def main() -> int:
    p = parser(__doc__, "provisioning")
    p.add_argument("--projects", type=int, default=20, help="provisionings per phase in all (default %(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default %(default)s)")
    p.add_argument("--redis-url", default="", help="run the workers on Redis (REDIS_URL) instead of the ORM broker")
    p.add_argument(
        "--ports",
        default="21000-21990",
        help="the runtime host's port range, FIRST-LAST, below 32768 (default %(default)s)",
    )
    args = p.parse_args()
    ports = port_range(args.ports, 4 * args.projects)  # each project leases a block of 4
    per_round = max(1, args.projects // args.rounds)
    # Deployed settings (DEBUG off), and the ORM broker unless --redis-url.
    extra = {**default_settings(), **({"REDIS_URL": args.redis_url} if args.redis_url else {})}
    root = Path(tempfile.mkdtemp(prefix="berth-bench-runtimes-", dir="/tmp"))
    root.chmod(0o755)
    agent = worker = None
    with scratch(args.database, keep=args.keep, settings=extra):
        from django.conf import settings

        from hosts.models import RuntimeHost
        from operations.creation import create_project
        from templating.actions import sync_templates

        sync_templates()
        token = secrets.token_urlsafe(24)
        try:
            agent, url = start_agent(root, token)
            worker = start_worker()
            RuntimeHost.objects.create(
                name="bench",
                agent_url=url,
                agent_token=token,
                port_range_start=ports.start,
                port_range_end=ports.stop - 1,
                block_size=4,
            )
            singles, walls, made = [], [], 0
            for _ in range(args.rounds):
                batch = []
                for _ in range(per_round):
                    requested = time.monotonic()
                    project = create_project(name=f"single {made}", postgres_major=15, template="postgres")
                    made += 1
                    wait_healthy([project], timeout=120)
                    total = time.monotonic() - requested
                    singles.append((total, runtime_start_seconds(project)))
                    batch.append(project)
                delete_all(batch)
                started = time.monotonic()
                batch = []
                for _ in range(per_round):
                    batch.append(create_project(name=f"batch {made}", postgres_major=15, template="postgres"))
                    made += 1
                wait_healthy(batch, timeout=60 + 10 * per_round)
                walls.append(time.monotonic() - started)
                delete_all(batch)
            totals = [t for t, _ in singles]
            broker = "Redis" if args.redis_url else f"ORM, poll {settings.Q_CLUSTER['poll']:g} s"
            print(f"one at a time, {len(singles)} provisionings, s, median (interquartile) [{broker}]:")
            print(f"  request -> ACTIVE_HEALTHY : {spread(totals)}")
            print(f"  runtime's own start (up)  : {spread([r for _, r in singles])}")
            print(f"  Berth's overhead          : {spread([t - r for t, r in singles])} (target <= 0.25)")
            print(f"{per_round} at once on {settings.Q_CLUSTER['workers']} workers, {args.rounds} rounds:")
            print(f"  wall times                : {', '.join(f'{w:.1f}' for w in walls)} s")
            print(f"  one after another (sum)   : {sum(totals):.1f} s")
            print(f"  wall / one after another  : {sum(walls) / sum(totals):.2f} (target <= 0.6)")
            print(f"  median per project, s     : {statistics.median(totals):.2f} alone")
        finally:
            if worker is not None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
            if agent is not None:
                agent.terminate()
                agent.wait(timeout=10)
            stop_clusters(root)
            time.sleep(1)
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
