"""What every benchmark here shares: a throwaway database of its own, interleaved rounds,
medians with their spread.

Compared cases run round-robin in one process (a round of case A, a round of case B, ...),
so load that comes and goes on a shared machine falls on every case alike instead of
moving the ratio. Each run makes its own database (named after the bench and the process
id unless --database says otherwise) and drops it at the end; nothing shared is touched.
"""

import argparse
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")


def parser(doc: str, bench: str) -> argparse.ArgumentParser:
    """An argument parser with the options every bench takes."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--database",
        default=f"berth_bench_{bench}_{os.getpid()}",
        help="throwaway database to create on BENCH_DATABASE_URL's server (default: %(default)s, dropped at the end)",
    )
    p.add_argument("--keep", action="store_true", help="keep the database afterwards (to look at it)")
    return p


def port_range(text: str, needed: int) -> range:
    """--ports FIRST-LAST: at least `needed` ports, all below the ephemeral range (32768 on),
    where short-lived client sockets would take a cluster's port."""
    first, _, last = text.partition("-")
    if not (first.isdigit() and last.isdigit() and int(first) + needed - 1 <= int(last) < 32768):
        raise SystemExit(f"--ports {text!r}: FIRST-LAST, at least {needed} ports, all below 32768")
    return range(int(first), int(last) + 1)


@contextmanager
def scratch(database: str, *, keep: bool = False, settings: dict | None = None):
    """Create `database`, point Django at it, set it up and migrate; drop it and the temp folder after.

    Runs with DEBUG=1 unless `settings` (environment variables) say otherwise; see `default_settings`.
    """
    import psycopg

    # `kill PID` ends a bench like Ctrl-C does: through the cleanup below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    var = tempfile.mkdtemp(prefix="berth-bench-var-")
    os.environ.update(
        {
            "DEBUG": "1",
            "DATABASE_URL": f"{SERVER_URL}/{database}",
            "BERTH_VAR_DIR": var,
            "DJANGO_SETTINGS_MODULE": "berth.settings",
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
            **(settings or {}),
        }
    )
    sys.path.insert(0, str(ROOT / "platform"))
    sys.path.insert(0, str(ROOT))
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{database}"')
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0, skip_checks=True)
        yield Path(var)
    finally:
        from django.db import connections

        connections.close_all()
        if not keep:
            with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        shutil.rmtree(var, ignore_errors=True)


def default_settings() -> dict:
    """Environment for `scratch` that measures with the default settings, as deployed: DEBUG
    off (Django then keeps no log of every query), with the secrets it then requires made
    up for this run."""
    from cryptography.fernet import Fernet

    return {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "BERTH_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }


def start_agent(root: Path, token: str, **settings: str) -> tuple[subprocess.Popen, str]:
    """A local agent with the process driver on a free loopback port, and its URL; the
    caller stops it by its pid. Its database router and pooler listen on ports the system
    picks unless `settings` (BERTH_* variables) say otherwise."""
    env = {**os.environ, "BERTH_AGENT_TOKEN": token, "BERTH_AGENT_ROOT": str(root), "BERTH_AGENT_LISTEN": "127.0.0.1:0"}
    env.update(BERTH_AGENT_DRIVER="process", BERTH_ROUTER_LISTEN="127.0.0.1:0", BERTH_POOLER_LISTEN="127.0.0.1:0")
    env.update(settings)
    agent = subprocess.Popen(
        [sys.executable, "platform/agent"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    line = agent.stdout.readline().decode()
    return agent, line.split("listening on ", 1)[1].split()[0]


def start_worker(**env) -> subprocess.Popen:
    """A django-q2 cluster (`manage.py qcluster`) in a process group of its own (the caller
    stops the group by the process's pid), with `env` over the bench's environment."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def use(database: str) -> None:
    """Point the default connection at `database` (the next query reconnects): how a bench
    switches between the databases of its compared cases."""
    from django.db import connections

    connections["default"].close()
    connections["default"].settings_dict["NAME"] = database


def create_database(name: str) -> None:
    """Create (anew) and migrate a further throwaway database, and switch to it."""
    import psycopg
    from django.core.management import call_command

    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    use(name)
    call_command("migrate", verbosity=0, skip_checks=True)


def drop_databases(names) -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def spread(values) -> str:
    """Median with the interquartile spread, e.g. `2.31 (2.20-2.52)`."""
    values = sorted(values)
    if len(values) < 4:
        return f"{statistics.median(values):.2f} ({values[0]:.2f}-{values[-1]:.2f})"
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{statistics.median(values):.2f} ({q1:.2f}-{q3:.2f})"


def analyze() -> None:
    """The state autovacuum would have left by now for tables of this size: fresh planner
    statistics, and visibility maps set (so an index-only scan reads no table pages)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


class S3Server:
    """SeaweedFS on loopback through scripts/s3, with a bucket."""

    def __init__(self, folder: Path, port: int):
        import boto3  # noqa: PLC0415 - only benches of S3 repositories need it

        self.port = port  # S3, then master, volume, filer and their gRPC ports: 8 free from here
        self.keys = secrets.token_hex(10), secrets.token_urlsafe(24)
        env = {**os.environ, "BERTH_S3_ACCESS_KEY": self.keys[0], "BERTH_S3_SECRET_KEY": self.keys[1]}
        self.process = subprocess.Popen(
            [ROOT / "scripts" / "s3", folder, str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.endpoint = f"http://127.0.0.1:{self.port}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.keys[0],
            aws_secret_access_key=self.keys[1],
        )
        for _ in range(120):
            try:
                client.create_bucket(Bucket="bench")
                return
            except Exception:  # not up yet
                time.sleep(1)
        raise SystemExit("SeaweedFS did not start (scripts/s3)")

    def repository(self, prefix: str):
        from agent.api import Repository  # noqa: PLC0415 - the agent's package is on the path by then

        return Repository(
            url=f"s3://bench/{prefix}",
            endpoint=self.endpoint,
            access_key_id=self.keys[0],
            secret_access_key=self.keys[1],
        )

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


# --- runtimes of real agents, for the backup benches (backups.py, docker_backups.py) -------

PASSWORD = "bench-backups-password"  # their runtimes' postgres password
PORTS = [range(23000, 32000)]  # below the kernel's ephemeral range; backups.py's --ports replaces it
ROW_BYTES = 992
WRITE_EVERY_S = 0.05
PGBENCH = ("/usr/lib/postgresql/15/bin/pgbench", "/usr/bin/pgbench")


def free_port(after: int = 0, count: int = 1) -> int:
    """The first of `count` consecutive free ports of PORTS, past `after`."""
    for port in PORTS[0]:
        if port <= after or port + count - 1 > PORTS[0][-1]:
            continue
        try:
            for candidate in range(port, port + count):
                for address in ("127.0.0.1", "0.0.0.0"):
                    with socket.socket() as sock:
                        sock.bind((address, candidate))
        except OSError:
            continue
        return port
    raise SystemExit(f"no {count} free port(s) in {PORTS[0].start}-{PORTS[0][-1]}")


def connect(port: int):
    import psycopg

    return psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", password=PASSWORD, autocommit=True, connect_timeout=3
    )


def find_pgbench() -> str:
    pgbench = next((path for path in PGBENCH if Path(path).exists()), None)
    if pgbench is None:
        raise SystemExit("no pgbench (Debian's postgresql-15 ships it)")
    return pgbench


def wait_job(client, ref: str, phases: dict[str, float] | None = None) -> float:
    """Seconds until the runtime's job ends; exits with its error if it failed. `phases`, if
    given, gets the seconds spent in each phase the job reported (seen every 0.1 s)."""
    started = last = time.monotonic()
    phase = None
    while (job := client.backup_job(ref)).state == "running":
        now = time.monotonic()
        if phases is not None and phase is not None:
            phases[phase] = phases.get(phase, 0.0) + now - last
        phase, last = job.phase, now
        time.sleep(0.1)
    if phases is not None and phase is not None:
        phases[phase] = phases.get(phase, 0.0) + time.monotonic() - last
    if job.state != "succeeded":
        raise SystemExit(f"{ref}: {job.kind} failed: {job.error}")
    return time.monotonic() - started


def switch_and_archive(client, ref: str, port: int) -> None:
    """The current WAL segment switched and archived. A commit goes first: with nothing
    written since the last switch (a base backup ends with one) pg_switch_wal switches
    nothing and names the current segment, which is then archived only after the next write
    and archive_timeout (PostgreSQL 17 writes nothing while idle: the bench waited minutes)."""
    with connect(port) as conn:
        conn.execute("select txid_current()")
        (segment,) = conn.execute("select pg_walfile_name(pg_switch_wal())").fetchone()
    while (client.backup_archiver(ref).last_archived_wal or "") < segment:
        time.sleep(0.1)


def fill(port: int, size_mb: int) -> None:
    rows = max(1, size_mb * (1 << 20) // (ROW_BYTES + 60))
    with connect(port) as conn:
        conn.execute("create table items (id bigserial primary key, payload text)")
        step = 100_000
        for first in range(1, rows + 1, step):
            # No md5 repeats within or across rows: compression finds only the hex alphabet
            # (about 2x, as table data often compresses), not 30x.
            conn.execute(
                "insert into items (payload) select (select string_agg(md5(i || ':' || j), '') "
                "from generate_series(1, %s) j) from generate_series(%s::int, %s::int) i",
                (ROW_BYTES // 32, first, min(rows, first + step - 1)),
            )
        conn.execute("checkpoint")


def measure_rpo(first, second, ref: str, port: int, repository, timeout_s: int, seconds: float, *, lose, files):
    """What a lost host costs: after a base backup of the runtime `ref` (serving on `port`,
    archiving into `repository` on `first`), a client commits a row every WRITE_EVERY_S; after
    `seconds`, `lose()` kills the runtime and removes its data; `second` (another host)
    restores it to the latest archived point with `files(port)` on a new port. Returns the
    rows acknowledged, how many of them the restore lacks, and how many of those were
    committed more than `timeout_s` (the archive timeout) before the loss."""
    import psycopg

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
    lose()
    stop.set()
    writer.join(timeout=10)

    new_port = free_port(port)
    second.put_files(ref, files(new_port))
    second.restore_start(ref, repository, job_s=1800)
    wait_job(second, ref)
    with connect(new_port) as conn:
        present = {number for (number,) in conn.execute("select id from ticks")}
    second.delete(ref, purge_data=True, deadline_s=120)
    lost = [(number, at) for number, at in acknowledged if number not in present]
    old = [number for number, at in lost if at < lost_at - timeout_s]
    print(
        f"RPO: {len(acknowledged)} rows acknowledged, {len(lost)} lost with the host, {len(old)} of them committed "
        f"more than BERTH_WAL_ARCHIVE_TIMEOUT={timeout_s} s before the loss",
        flush=True,
    )
    return len(acknowledged), len(lost), len(old)


def archiving_tps(client, ref: str, port: int, repository, args, pgbench: str, timeout_s: int, *, restarted=None):
    """pgbench TPS on the runtime with WAL archiving off and on, alternating each round
    (turning it on or off restarts the server; `restarted()`, if given, waits for it to
    serve again). `args`: the bench's --rounds, --pgbench-seconds and --pgbench-scale.

    The order flips each round (off, on, on, off, ...) and pgbench vacuums its tables and
    empties its history before each run (no -n): the tables grow with every run, and a
    fixed order would lay that drift on one case (off fell 2672 -> 2136 tps over three
    rounds with "on" always second).

    Each run starts alike (untimed): with nothing waiting to be archived, then a checkpoint.
    Else an "on" run following an "on" run (no restart between) paid for the WAL its
    predecessor left to the archiver, and one following a restart began just after the
    shutdown checkpoint (full-page images of every page first touched) while the other did
    not. What an "on" run leaves waiting at its end is printed: the part of its archiving
    it did not pay for."""
    tps = {"off": [], "on": []}
    env = {**os.environ, "PGPASSWORD": PASSWORD}
    target = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "postgres"]
    subprocess.run(
        [pgbench, "-i", "-q", "-s", str(args.pgbench_scale), *target], env=env, check=True, capture_output=True
    )
    for round_number in range(args.rounds):
        for case in ("off", "on") if round_number % 2 == 0 else ("on", "off"):
            client.backup_archiving(ref, repository if case == "on" else None, archive_timeout_s=timeout_s)
            if restarted is not None:
                restarted()
            with connect(port) as conn:
                if case == "on":
                    _wait_archived(conn)
                conn.execute("checkpoint")
            done = subprocess.run(
                [pgbench, "-c", "4", "-j", "2", "-T", str(args.pgbench_seconds), *target],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            line = next(line for line in done.stdout.splitlines() if line.startswith("tps ="))
            tps[case].append(float(line.split()[2]))
            waiting = ""
            if case == "on":
                with connect(port) as conn:
                    waiting = f", {_waiting_to_archive(conn)} segment(s) left waiting to be archived"
            print(f"round {round_number + 1}: archiving {case}: {tps[case][-1]:.0f} tps{waiting}", flush=True)
    return tps


def _waiting_to_archive(conn) -> int:
    """Completed WAL segments the archiver has yet to store."""
    query = "select count(*) from pg_ls_archive_statusdir() where name like '%.ready'"
    return conn.execute(query).fetchone()[0]


def _wait_archived(conn, seconds: float = 600) -> None:
    until = time.monotonic() + seconds
    while (waiting := _waiting_to_archive(conn)) and time.monotonic() < until:
        time.sleep(0.1)
    if waiting:
        raise SystemExit(f"{waiting} WAL segment(s) still waiting to be archived after {seconds:.0f} s")
