"""Benchmark provisioning end to end: Berth's own overhead, and throughput with 2 workers.

    .venv/bin/python bench/provisioning.py [--projects 50]

Runs the real thing: a django-q2 cluster with 2 workers, a local agent with the process
driver, and real Postgres clusters. Uses (and drops first) the throwaway database
berth_bench_provisioning on BENCH_DATABASE_URL's server (default
postgres://postgres@127.0.0.1:5432). Prints:
- per provisioning, one at a time: total time from request to ACTIVE_HEALTHY, the
  runtime's own start (the agent's `up`: initdb and pg_ctl start), and Berth's overhead,
  the difference (queueing, claim, placement, lease and port check, render and push,
  health probes, bookkeeping);
- N projects requested at once with 2 workers: the wall time until all are healthy,
  against the sum of their runtime start times.
Everything it started is deleted (data purged) and stopped at the end.
"""

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
DATABASE = "berth_bench_provisioning"
VAR = tempfile.mkdtemp(prefix="berth-bench-var-")

os.environ.update(
    DEBUG="1",
    DATABASE_URL=f"{SERVER_URL}/{DATABASE}",
    BERTH_VAR_DIR=VAR,
    DJANGO_SETTINGS_MODULE="berth.settings",
    BERTH_HEALTH_POLL_INITIAL="0.2",
    Q_POLL="0.1",
    LOG_LEVEL="WARNING",
)
sys.path.insert(0, str(ROOT / "platform"))


def recreate_database():
    import psycopg

    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")


def start_agent(root: Path, token: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "BERTH_AGENT_TOKEN": token, "BERTH_AGENT_ROOT": str(root), "BERTH_AGENT_LISTEN": "127.0.0.1:0"}
    env["BERTH_AGENT_DRIVER"] = "process"
    agent = subprocess.Popen(
        [sys.executable, "platform/agent"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    line = agent.stdout.readline().decode()
    return agent, line.split("listening on ", 1)[1].split()[0]


def start_worker() -> subprocess.Popen:
    env = {**os.environ, "Q_WORKERS": "2"}
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def runtime_start_seconds(operation) -> float:
    """The agent's `up`: from the event before the call to the event after it."""
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
        if any(s == Status.INIT_FAILED for s in statuses.values()):
            failed = [r for r, s in statuses.items() if s == Status.INIT_FAILED]
            raise SystemExit(f"provisioning failed for {failed}")
        time.sleep(0.05)
    raise SystemExit(f"not all of {len(refs)} projects became healthy within {timeout}s")


def provision_operation(project):
    return project.operations.get(kind="provision")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=50)
    parser.add_argument("--single", type=int, default=5, help="provisionings timed one at a time")
    args = parser.parse_args()

    recreate_database()
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, skip_checks=True)

    from hosts.models import RuntimeHost
    from operations.actions import request_operation
    from operations.creation import create_project
    from templating.actions import sync_templates

    sync_templates()
    root = Path(tempfile.mkdtemp(prefix="bbp-", dir="/tmp"))
    root.chmod(0o755)
    token = secrets.token_urlsafe(24)
    agent, url = start_agent(root, token)
    worker = start_worker()
    RuntimeHost.objects.create(
        name="bench", agent_url=url, agent_token=token, port_range_start=24000, port_range_end=24999, block_size=4
    )
    created = []
    try:
        singles = []
        for i in range(args.single):
            requested = time.monotonic()
            project = create_project(name=f"single {i}", postgres_major=15, template="postgres")
            wait_healthy([project], timeout=120)
            total = time.monotonic() - requested
            created.append(project)
            singles.append((total, runtime_start_seconds(provision_operation(project))))

        started = time.monotonic()
        batch = [
            create_project(name=f"batch {i}", postgres_major=15, template="postgres") for i in range(args.projects)
        ]
        created += batch
        wait_healthy(batch, timeout=60 + 10 * args.projects)
        wall = time.monotonic() - started
        starts = sum(runtime_start_seconds(provision_operation(p)) for p in batch)

        totals = [t for t, _ in singles]
        runtime = [r for _, r in singles]
        overhead = [t - r for t, r in singles]
        print(f"one at a time ({args.single} provisionings, medians):")
        print(f"  request -> ACTIVE_HEALTHY : {statistics.median(totals):6.2f} s")
        print(f"  runtime's own start (up)  : {statistics.median(runtime):6.2f} s")
        print(f"  Berth's overhead          : {statistics.median(overhead):6.2f} s")
        print(f"{args.projects} projects at once, 2 workers:")
        print(f"  wall time until all healthy   : {wall:6.1f} s")
        print(f"  sum of runtime start times    : {starts:6.1f} s")
        print(f"  wall / sum of runtime starts  : {wall / starts:6.2f}")
    finally:
        for project in created:
            project.refresh_from_db()
            if project.operations.unfinished().exists():
                continue
            request_operation(project, "delete", params={"purge_data": True})
        time.sleep(1)
        from operations.models import Operation

        deadline = time.monotonic() + 120
        while Operation.objects.unfinished().exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        os.killpg(worker.pid, 9)
        agent.terminate()
        agent.wait(timeout=10)
        subprocess.run(["pkill", "-f", "--", f"-D {root}"], check=False)


if __name__ == "__main__":
    main()
