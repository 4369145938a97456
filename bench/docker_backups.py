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
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import parser, spread, start_agent  # noqa: E402

from agent.api import FileSpec, Repository  # noqa: E402
from agent.client import AgentClient  # noqa: E402

# bench/backups.py (this folder is first on the path), not the control plane's backups app.
from backups import PASSWORD, PGBENCH, connect, fill, free_port, switch_and_archive, wait_job  # noqa: E402

IMAGE = "berth/test-postgres:15"
WRITE_EVERY_S = 0.05


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
    with connect(port) as conn:
        conn.execute("create table ticks (id int primary key, at float8)")
    first.backup_start(ref, repository)
    wait_job(first, ref)
    acknowledged: list[tuple[int, float]] = []
    stop = threading.Event()

    def write() -> None:
        try:
            with connect(port) as conn:
                number = 0
                while not stop.is_set():
                    conn.execute("insert into ticks values (%s, %s)", (number, time.time()))
                    acknowledged.append((number, time.time()))
                    number += 1
                    time.sleep(WRITE_EVERY_S)
        except psycopg.Error:
            pass  # the host went away under it

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    time.sleep(seconds)
    lost_at = time.time()
    docker("kill", db_container(ref))  # SIGKILL: no shutdown, no last archive
    stop.set()
    writer.join(timeout=10)
    remove_runtime(ref)
    shutil.rmtree(root / ref)  # the host and its folder are gone

    new_port = free_port(port)
    second.put_files(ref, files(new_port))
    second.restore_start(ref, repository, job_s=1800)
    wait_job(second, ref)
    with connect(new_port) as conn:
        present = {number for (number,) in conn.execute("select id from ticks")}
    second.delete(ref, purge_data=True, deadline_s=120)
    remove_runtime(ref)
    lost = [(number, at) for number, at in acknowledged if number not in present]
    old = [number for number, at in lost if at < lost_at - timeout_s]
    return len(acknowledged), len(lost), len(old)


def main() -> int:
    p = parser(__doc__, "docker_backups")
    p.add_argument("--size-mb", type=int, default=256, help="the restored runtime's data, MiB (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the interleaved cases (default %(default)s)")
    p.add_argument("--rpo-seconds", type=float, default=30, help="writing before the host is lost (default 30)")
    p.add_argument("--pgbench-seconds", type=int, default=20, help="each pgbench run (default %(default)s)")
    p.add_argument("--pgbench-scale", type=int, default=10, help="pgbench -s (default %(default)s)")
    args = p.parse_args()
    timeout_s = int(os.environ.get("BERTH_WAL_ARCHIVE_TIMEOUT", "5"))
    pgbench = next((path for path in PGBENCH if Path(path).exists()), None)
    if pgbench is None:
        raise SystemExit("no pgbench (Debian's postgresql-15 ships it)")
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
        print(
            f"RPO: {total} rows acknowledged, {lost} lost with the host, {old} of them committed more than "
            f"BERTH_WAL_ARCHIVE_TIMEOUT={timeout_s} s before the loss",
            flush=True,
        )

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

        tps = {"off": [], "on": []}
        with connect(port) as conn:
            conn.execute("drop table items")
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        target = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "postgres"]
        subprocess.run(
            [pgbench, "-i", "-q", "-s", str(args.pgbench_scale), *target], env=env, check=True, capture_output=True
        )
        for round_number in range(args.rounds):
            for case in ("off", "on"):
                first.backup_archiving(ref, repository if case == "on" else None, archive_timeout_s=timeout_s)
                serving(port)
                done = subprocess.run(
                    [pgbench, "-c", "4", "-j", "2", "-T", str(args.pgbench_seconds), "-n", *target],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                line = next(line for line in done.stdout.splitlines() if line.startswith("tps ="))
                tps[case].append(float(line.split()[2]))
                print(f"round {round_number + 1}: archiving {case}: {tps[case][-1]:.0f} tps", flush=True)
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
