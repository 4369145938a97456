"""Major upgrades: downtime seen by a client that writes every 50 ms, and what survives.

Each case is a fresh project runtime of the old major on a real agent (the process driver,
the checkout's PostgreSQL 15, 16 and 17), filled with --size-mb of rows, upgraded to 17 by
the agent's upgrade calls as the `upgrade` operation makes them (check, prepare, wait for
the copy, switch). A client inserts one row every 50 ms from before the switch until after
it, reconnecting after each error. Figures per case:

- downtime: from the first failed write to the first write that succeeds after the last
  failure (summed over streaks), as the client saw it; and the agent's own measure (from
  writes stopping to the new cluster accepting connections);
- prepare + copy: how long the new cluster took to be ready while the old one served;
- rows and checksums of every table equal before and after; acknowledged writes missing
  after the switch (lost writes).

Cases run round-robin, one of each per round. Every runtime, agent and folder it made is
removed at the end; it touches no database of the shared server.

    .venv/bin/python bench/upgrade.py --size-mb 1024
"""

import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import parser, spread, start_agent  # noqa: E402

from agent.api import FileSpec  # noqa: E402
from agent.client import AgentClient  # noqa: E402

PASSWORD = "bench-upgrade-password"
CASES = {
    "15->17 logical": (15, 17, "logical"),
    "16->17 logical": (16, 17, "logical"),
    "15->17 dump": (15, 17, "dump"),
    "16->17 dump": (16, 17, "dump"),
}
ROW_BYTES = 992  # one item's payload: inline (under the 2 KB TOAST threshold), never compressed
WRITE_EVERY_S = 0.05
PORTS = range(23000, 32000)  # below the kernel's ephemeral range


@dataclass
class Result:
    downtime_s: float
    agent_downtime_s: float
    ready_s: float
    tables_equal: bool
    lost_writes: int
    acknowledged: int
    data_mb: float


@dataclass
class Writer:
    """Inserts a row every 50 ms; keeps each attempt's time and outcome and the tokens acknowledged."""

    port: int
    attempts: list = field(default_factory=list)  # (monotonic time, ok)
    acknowledged: list = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def start(self) -> "Writer":
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                with connect(self.port) as conn:
                    while not self.stopped.is_set():
                        # A token of its own per write: an id that the new cluster hands out
                        # again must not pass for a write that was lost.
                        token = len(self.attempts)
                        conn.execute("insert into writes (token) values (%s)", (token,))
                        self.acknowledged.append(token)
                        self.attempts.append((time.monotonic(), True))
                        time.sleep(WRITE_EVERY_S)
            except psycopg.Error:
                self.attempts.append((time.monotonic(), False))
                time.sleep(WRITE_EVERY_S)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=30)

    def downtime(self) -> float:
        """Sum of each streak of failures, from its first failure to the next success."""
        total, failing_since = 0.0, None
        for at, ok in self.attempts:
            if not ok and failing_since is None:
                failing_since = at
            elif ok and failing_since is not None:
                total += at - failing_since
                failing_since = None
        return total


def connect(port: int) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user="postgres",
        password=PASSWORD,
        dbname="postgres",
        autocommit=True,
        connect_timeout=2,
    )


def free_port() -> int:
    for port in PORTS:
        try:
            for address in ("127.0.0.1", "0.0.0.0"):
                with socket.socket() as sock:
                    sock.bind((address, port))
        except OSError:
            continue
        return port
    raise SystemExit("no free port below 32000")


def runtime_toml(major: int, port: int) -> FileSpec:
    text = f'driver = "process"\n\n[postgres]\nmajor = {major}\nport = {port}\npassword = "{PASSWORD}"\n'
    return FileSpec("runtime.toml", text.encode())


def fill(port: int, size_mb: int) -> None:
    rows = max(1, size_mb * (1 << 20) // (ROW_BYTES + 60))
    with connect(port) as conn:
        conn.execute('create extension pgcrypto; create extension "uuid-ossp"')
        conn.execute(
            "create table items (id bigserial primary key, token uuid default uuid_generate_v4(), payload text)"
        )
        conn.execute("create index on items (token)")
        step = 100_000
        for first in range(1, rows + 1, step):
            conn.execute(
                "insert into items (payload) select repeat(md5(i::text), %s) from generate_series(%s::int, %s::int) i",
                (ROW_BYTES // 32, first, min(rows, first + step - 1)),
            )
        conn.execute("create table accounts (id int primary key, balance numeric, owner text)")
        conn.execute("insert into accounts select i, i * 10.5, 'owner ' || i from generate_series(1, 10000) i")
        conn.execute("create table writes (id bigserial primary key, token int, at timestamptz default now())")
        conn.execute("vacuum analyze")


def tables(port: int) -> dict[str, tuple]:
    """Rows and an md5 of every row of each table but the one the client writes to."""
    with connect(port) as conn:
        names = [name for (name,) in conn.execute("select tablename from pg_tables where schemaname = 'public'")]
        return {
            name: conn.execute(
                f"select count(*), md5(string_agg(t::text, ',' order by t::text)) from {name} t"  # noqa: S608
            ).fetchone()
            for name in names
            if name != "writes"
        }


def run_case(client: AgentClient, ref: str, source: int, target: int, method: str, size_mb: int) -> Result:
    port = free_port()
    client.put_files(ref, [runtime_toml(source, port)])
    client.up(ref)
    try:
        fill(port, size_mb)
        with connect(port) as conn:
            (data_bytes,) = conn.execute("select pg_database_size('postgres')").fetchone()
        before = tables(port)
        check = client.upgrade_check(ref, target)
        if check.blockers or method not in check.methods:
            raise SystemExit(f"{ref}: cannot upgrade by {method}: {check.blockers or check.unusable}")
        started = time.monotonic()
        client.upgrade_prepare(ref, target, method, deadline_s=3000)
        while client.upgrade_state(ref).phase != "ready":
            time.sleep(0.5)
        ready_s = time.monotonic() - started
        writer = Writer(port).start()
        time.sleep(2)
        switched = client.upgrade_step(ref, "switch", deadline_s=3000)
        time.sleep(2)
        writer.stop()
        client.put_files(ref, [runtime_toml(target, port)])
        with connect(port) as conn:
            (major,) = conn.execute("select current_setting('server_version_num')::int / 10000").fetchone()
            present = {token for (token,) in conn.execute("select token from writes")}
        if major != target:
            raise SystemExit(f"{ref}: serves {major} after the switch, not {target}")
        return Result(
            downtime_s=writer.downtime(),
            agent_downtime_s=switched.downtime_s or 0.0,
            ready_s=ready_s,
            tables_equal=tables(port) == before,
            lost_writes=len(set(writer.acknowledged) - present),
            acknowledged=len(writer.acknowledged),
            data_mb=data_bytes / (1 << 20),
        )
    finally:
        client.delete(ref, purge_data=True, deadline_s=120)


def main() -> int:
    p = parser(__doc__, "upgrade")
    p.add_argument("--size-mb", type=int, default=1024, help="data per project, in MiB (default %(default)s)")
    p.add_argument("--rounds", type=int, default=1, help="rounds; each runs every case once (default %(default)s)")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated cases (default: all: %(default)s)")
    args = p.parse_args()
    cases = [case.strip() for case in args.cases.split(",")]
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")

    root = Path(tempfile.mkdtemp(prefix="berth-bench-upgrade-", dir="/tmp"))
    root.chmod(0o755)  # the postgres user reaches its clusters through it when this runs as root
    token = secrets.token_urlsafe(24)
    agent, url = start_agent(root, token)
    results: dict[str, list[Result]] = {case: [] for case in cases}
    try:
        client = AgentClient(url, token, deadline=3600)
        missing = {15, 16, 17} - set(client.info().postgres_versions)
        if missing:
            raise SystemExit(f"the agent does not find PostgreSQL {sorted(missing)}: run ./scripts/postgres")
        for round_number in range(args.rounds):
            for number, case in enumerate(cases):
                source, target, method = CASES[case]
                ref = f"benchup{round_number}x{number}"
                result = run_case(client, ref, source, target, method, args.size_mb)
                results[case].append(result)
                print(
                    f"round {round_number + 1} {case}: downtime {result.downtime_s:.2f} s "
                    f"(agent {result.agent_downtime_s:.2f} s), ready after {result.ready_s:.1f} s, "
                    f"{result.data_mb:.0f} MiB, tables equal {result.tables_equal}, "
                    f"lost writes {result.lost_writes} of {result.acknowledged}",
                    flush=True,
                )
    finally:
        agent.terminate()
        agent.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nmajor upgrades, {args.size_mb} MiB per project, {args.rounds} round(s), a write every 50 ms:")
    print(f"{'case':<16} {'downtime s':>24} {'agent s':>24} {'ready after s':>24} {'tables equal':>13} {'lost':>5}")
    for case, runs in results.items():
        print(
            f"{case:<16} {spread([r.downtime_s for r in runs]):>24} {spread([r.agent_downtime_s for r in runs]):>24} "
            f"{spread([r.ready_s for r in runs]):>24} {str(all(r.tables_equal for r in runs)):>13} "
            f"{sum(r.lost_writes for r in runs):>5}"
        )
    for source in (15, 16):
        logical, dump = results.get(f"{source}->17 logical"), results.get(f"{source}->17 dump")
        if logical and dump:
            ratio = min(r.downtime_s for r in dump) / max(min(r.downtime_s for r in logical), 0.001)
            print(f"ratio dump/logical downtime, {source}->17: {ratio:.1f}")
    ok = all(r.tables_equal and r.lost_writes == 0 for runs in results.values() for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
