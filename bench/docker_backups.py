"""Docker-driver backups: what a lost host costs (RPO), how fast a restore is, what archiving
through the acknowledged outbox costs writes. bench/backups.py's figures, for docker runtimes.

Real agents with the docker driver (DOCKER_HOST: `eval "$(scripts/docker-engine --env)"`),
the docker-test runtime's database (berth/test-postgres:15, built by scripts/docker-images)
and a file:// repository. Figures:

- RPO: a client commits a row every 50 ms into a runtime archiving with
  BERTH_WAL_ARCHIVE_TIMEOUT (default 5 s) after a base backup; after --rpo-seconds its
  database container is killed, its volume and runtime folder removed; the runtime is restored
  to the latest archived point by a second agent (another root). Rows acknowledged but
  missing, split by whether they were committed more than the archive timeout before the loss
  (goal: none of those).
- Restore throughput: a runtime of --size-mb, base-backed-up; each round, interleaved, (a)
  `cp -a` of its data folder inside the volume (a one-off container of the image) and (b) an
  in-place restore to the latest point (start call to the restored database serving).
  Ratio = cp time / restore time.
- Write overhead: pgbench TPS with archiving on and off, alternating each round on one runtime
  (turning archiving on or off restarts its database). Ratio = on / off (goal >= 0.9).

Every runtime, container, volume, agent and folder it made is removed at the end; it touches
no database of the shared server (--database is accepted like every bench's, and unused).

    eval "$(scripts/docker-engine --env)"; .venv/bin/python bench/docker_backups.py --size-mb 256 --rounds 3
"""

import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PASSWORD,
    archiving_tps,
    connect,
    fill,
    find_pgbench,
    free_port,
    measure_rpo,
    parser,
    spread,
    start_agent,
    switch_and_archive,
    wait_job,
)

from agent.api import FileSpec, Repository  # noqa: E402
from agent.client import AgentClient  # noqa: E402

IMAGE = "berth/test-postgres:15"


def files(port: int) -> list[FileSpec]:
    compose = f"""services:
  db:
    image: "{IMAGE}"
    environment:
      POSTGRES_PASSWORD: "{PASSWORD}"
    ports:
      - "127.0.0.1:{port}:5432"
    volumes:
      - db-data:/var/lib/postgresql/data
    labels:
      berth.postgres-major: "15"
volumes:
  db-data: {{}}
"""
    return [
        FileSpec("runtime.toml", b'driver = "docker"\ncompose_file = "docker-compose.yml"\n'),
        FileSpec("docker-compose.yml", compose.encode()),
    ]


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=3600).stdout


def serving(port: int) -> None:
    for _ in range(600):
        try:
            with connect(port) as conn:
                conn.execute("select 1")
            return
        except psycopg.OperationalError:
            time.sleep(0.2)
    raise SystemExit(f"nothing serves on {port}")


def provision(client: AgentClient, ref: str, repository: Repository | None, timeout_s: int) -> int:
    port = free_port()
    client.put_files(ref, files(port))
    client.up(ref)
    serving(port)
    if repository is not None:
        client.backup_archiving(ref, repository, archive_timeout_s=timeout_s)
        serving(port)
    return port


def db_container(ref: str) -> str:
    return docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={ref}").split()[0]


def remove_runtime(ref: str) -> None:
    ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={ref}").split()
    docker("rm", "-f", *ids, f"berth-restore-{ref}", f"berth-verify-{ref}", check=False)
    volumes = docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={ref}").split()
    docker("volume", "rm", "-f", *volumes, f"berth-verify-{ref}", check=False)
    docker("network", "rm", f"{ref}_default", check=False)


def rpo(first: AgentClient, second: AgentClient, root: Path, repository, timeout_s: int, seconds: float):
    ref = "dbenchrpo" + secrets.token_hex(3)
    port = provision(first, ref, repository, timeout_s)

    def lose() -> None:
        docker("kill", db_container(ref))  # SIGKILL: no shutdown, no last archive
        remove_runtime(ref)
        shutil.rmtree(root / ref)  # the host and its folder are gone

    counted = measure_rpo(first, second, ref, port, repository, timeout_s, seconds, lose=lose, files=files)
    remove_runtime(ref)
    return counted


def main() -> int:
    p = parser(__doc__, "docker_backups")
    p.add_argument("--size-mb", type=int, default=256, help="the restored runtime's data, MiB (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the interleaved cases (default %(default)s)")
    p.add_argument("--rpo-seconds", type=float, default=30, help="writing before the host is lost (default 30)")
    p.add_argument("--pgbench-seconds", type=int, default=20, help="each pgbench run (default %(default)s)")
    p.add_argument("--pgbench-scale", type=int, default=10, help="pgbench -s (default %(default)s)")
    args = p.parse_args()
    timeout_s = int(os.environ.get("BERTH_WAL_ARCHIVE_TIMEOUT", "5"))
    pgbench = find_pgbench()
    if "DOCKER_HOST" not in os.environ and not Path("/var/run/docker.sock").exists():
        raise SystemExit('no docker engine: eval "$(scripts/docker-engine --env)" first')

    scratch = Path(tempfile.mkdtemp(prefix="berth-bench-dbackups-", dir="/tmp"))
    roots = [scratch / "host1", scratch / "host2"]
    for root in roots:
        root.mkdir(mode=0o700)
    (scratch / "repository").mkdir(mode=0o700)
    repository = Repository(url=f"file://{scratch / 'repository'}")
    token = secrets.token_urlsafe(24)
    agents, refs = [], []
    try:
        for root in roots:
            agents.append(start_agent(root, token, BERTH_AGENT_DRIVER="docker"))
        first, second = (AgentClient(url, token, deadline=3600) for _, url in agents)

        total, lost, old = rpo(first, second, roots[0], repository, timeout_s, args.rpo_seconds)

        ref = "dbenchrest" + secrets.token_hex(3)
        refs.append(ref)
        port = provision(first, ref, repository, 60)
        fill(port, args.size_mb)
        first.backup_start(ref, repository, job_s=3600)
        backup_s = wait_job(first, ref)
        switch_and_archive(first, ref, port)
        with connect(port) as conn:
            (size,) = conn.execute("select sum(pg_database_size(oid)) from pg_database").fetchone()
        print(f"base backup of {size / (1 << 20):.0f} MiB of databases: {backup_s:.1f} s", flush=True)
        copies, restores = [], []
        for round_number in range(args.rounds):
            # The copy a one-off container makes inside the volume: the data folder as a restore swaps it.
            db = db_container(ref)
            image = docker("inspect", "-f", "{{.Image}}", db).strip()
            copy = "cd /var/lib/postgresql/data && mkdir .bench-copy && cp -a -- * .bench-copy/ && sync"
            started = time.monotonic()
            docker("run", "--rm", "--volumes-from", db, "-u", "0", "--entrypoint", "sh", image, "-c", copy)
            copies.append(time.monotonic() - started)
            remove = "rm -rf /var/lib/postgresql/data/.bench-copy"
            docker("run", "--rm", "--volumes-from", db, "-u", "0", "--entrypoint", "sh", image, "-c", remove)
            started = time.monotonic()
            first.restore_start(ref, repository, job_s=3600)
            wait_job(first, ref)
            restores.append(time.monotonic() - started)
            print(f"round {round_number + 1}: cp -a {copies[-1]:.1f} s, restore {restores[-1]:.1f} s", flush=True)

        with connect(port) as conn:
            conn.execute("drop table items")
        tps = archiving_tps(first, ref, port, repository, args, pgbench, timeout_s, restarted=lambda: serving(port))
    finally:
        for process, _ in agents:
            process.terminate()
            process.wait(timeout=30)
        for ref in refs:
            remove_runtime(ref)
        shutil.rmtree(scratch, ignore_errors=True)

    mib = size / (1 << 20)
    ratio = statistics.median(copies) / statistics.median(restores) if restores else 0.0
    overhead = statistics.median(tps["on"]) / max(statistics.median(tps["off"]), 0.001) if tps["on"] else 0.0
    print(f"\ndocker backups, {IMAGE}, file repository, {args.rounds} round(s):")
    print(f"RPO: lost {lost} of {total} rows, {old} older than the {timeout_s} s archive timeout (goal 0)")
    print(f"cp -a s {spread(copies)}; restore s {spread(restores)} ({mib:.0f} MiB of databases)")
    print(f"ratio restore/cp throughput: {ratio:.2f}")
    print(f"pgbench tps archiving off {spread(tps['off'])}; on {spread(tps['on'])}")
    print(f"ratio tps archiving on/off: {overhead:.2f} (goal >= 0.9)")
    return 0 if old == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
