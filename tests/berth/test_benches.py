"""Every benchmark in bench/ runs to its figures at toy sizes and leaves nothing behind.

Benches run on demand, not in CI, so nothing else notices when code they call moves; at
these sizes the figures mean nothing and are not checked, only that each bench gets to
print them, exits as designed (0, or 1 for a figure over its target) and drops its
databases.
"""

import os
import subprocess
import sys
from pathlib import Path

import dj_database_url
import psycopg
import pytest
from django.conf import settings

from tests.stack import PORT_BASE, ROOT, free_port_range

pytestmark = pytest.mark.postgres

# bench script, toy-size arguments, a line its report prints
BENCHES = {
    "fleet": (
        [
            "--large",
            "30",
            "--small",
            "10",
            "--hosts",
            "2",
            "--small-hosts",
            "1",
            "--rounds",
            "1",
            "--per-round",
            "1",
            "--metrics-runtimes",
            "3",
        ],
        "metrics collection, one host, 3 runtimes",
    ),
    "port_leases": (
        ["--few", "5", "--many", "20", "--rounds", "1", "--per-round", "3", "--workers", "1,2", "--per-worker", "5"],
        "leases per second",
    ),
    "dashboard": (["--small", "5", "--large", "20", "--rounds", "1", "--runs", "1"], "ratio"),
    "api": (
        ["--small", "5", "--large", "20", "--runs", "2", "--seconds", "0.5", "--clients", "1"]
        + ["--settings-runs", "2", "--ports", lambda: str(free_port_range(20, PORT_BASE + 620))],
        "until a new connection shows it",
    ),
    "rollout": (["--projects", "3", "--wave-size", "2"], "Berth overhead/project"),
    "provisioning": (
        ["--projects", "2", "--rounds", "1"]
        + ["--ports", lambda: f"{(first := free_port_range(40, PORT_BASE + 760))}-{first + 39}"],
        "overhead",
    ),
    "upgrade": (["--size-mb", "2", "--cases", "16->17 logical,16->17 dump"], "ratio dump/logical downtime"),
    "backups": (
        ["--size-mb", "2", "--rounds", "1", "--rpo-seconds", "2", "--pgbench-seconds", "1", "--pgbench-scale", "1"]
        + ["--ports", lambda: f"{(first := free_port_range(40, PORT_BASE + 700))}-{first + 39}"],
        "ratio restore/cp throughput",
    ),
}


def server_url() -> str:
    config = dj_database_url.parse(settings.TEST_DATABASE_URL)
    return f"postgres://{config['USER']}@{config['HOST']}:{config['PORT'] or 5432}"


def databases_named(prefix: str) -> list[str]:
    with psycopg.connect(f"{server_url()}/postgres", autocommit=True) as admin:
        rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [prefix + "%"]).fetchall()
    return [name for (name,) in rows]


@pytest.mark.parametrize("bench", sorted(BENCHES))
def test_it_runs_to_its_figures_and_cleans_up(bench, tmp_path):
    arguments, report_line = BENCHES[bench]
    # A port range is looked up when the bench starts: an earlier test's cluster may hold one.
    arguments = [argument() if callable(argument) else argument for argument in arguments]
    database = f"berth_bench_smoke_{bench}_{os.getpid()}"
    env = {**os.environ, "BENCH_DATABASE_URL": server_url(), "TMPDIR": str(tmp_path)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, f"bench/{bench}.py", "--database", database, *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stdout + done.stderr
    assert report_line in done.stdout, done.stdout + done.stderr
    assert databases_named(database) == []
    assert list(tmp_path.iterdir()) == [], "the bench left temporary files behind"


@pytest.mark.parametrize(
    ("bench", "ports", "needed"),
    [("provisioning", "32000-33000", 80), ("provisioning", "21000-21078", 80), ("backups", "21000-21007", 9)],
)
def test_it_refuses_ports_in_the_ephemeral_range_or_too_few_before_it_starts(bench, ports, needed):
    done = subprocess.run(
        [sys.executable, f"bench/{bench}.py", "--database", "berth_bench_never_made", "--ports", ports],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"--ports '{ports}': FIRST-LAST, at least {needed} ports, all below 32768" in done.stderr
    assert databases_named("berth_bench_never_made") == []


def test_agent_flood_runs_to_its_figures():
    done = subprocess.run(
        [sys.executable, "bench/agent_flood.py", "--idle", "10", "--rate", "20", "--seconds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stdout + done.stderr
    assert "p95" in done.stdout, done.stdout


def test_router_bench_runs_to_its_figures_and_stops_what_it_started():
    done = subprocess.run(
        [
            sys.executable,
            "bench/router.py",
            "--connects",
            "2",
            "--copy-mb",
            "1",
            "--copy-rounds",
            "1",
            "--idle",
            "5",
            "--ports",
            str(PORT_BASE + 580),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stdout + done.stderr
    assert "router / direct throughput" in done.stdout and "idle clients" in done.stdout, done.stdout
    first = done.stdout.splitlines()[0]
    pid, root = int(first.split("agent pid ")[1].split(",")[0]), Path(first.split("root ")[1])
    assert not root.exists()
    assert not Path(f"/proc/{pid}").exists()


def test_wal_push_bench_runs_to_its_figures_and_stops_what_it_started():
    first = PORT_BASE + 640
    done = subprocess.run(
        [sys.executable, "bench/wal_push.py", "--segments", "2", "--rounds", "1", "--ports", f"{first}-{first + 40}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    assert "over one at a time" in done.stdout and "folder" in done.stdout, done.stdout
    first_line = done.stdout.splitlines()[0]
    scratch, pid = Path(first_line.split("scratch ")[1].split(",")[0]), int(first_line.split("pid ")[1])
    assert not scratch.exists()
    assert not Path(f"/proc/{pid}").exists()
