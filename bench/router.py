"""The database router against a direct connection to the runtime, interleaved in one run.

    .venv/bin/python bench/router.py [--connects 200] [--copy-mb 200] [--copy-rounds 3] [--idle 1000]

Starts a local agent (process driver, a throwaway root and token) with one PostgreSQL 15
runtime serving TLS, and hands it a route table: the runtime as `db.<ref>.<domain>` and
through the pooler. Then, each case round-robin in one process:
- connection setup (`--connects` rounds): connect with TLS (sslmode=require), run `select 1`,
  close: direct to the runtime's port, through the router by its TLS server name (the
  runtime does TLS itself, the router splices), and through the pooler address (the router
  ends TLS and hands the connection to PgBouncer, transaction mode). Medians in ms with the
  interquartile range, and each median's ratio to direct;
- throughput (`--copy-rounds` rounds): `COPY (...) TO STDOUT` of `--copy-mb` MB, read whole
  by the client, direct and through the router. MB/s and the ratio (the goal is >= 0.8);
- idle connections: `--idle` clients connected through the pooler address and left idle
  (PgBouncer holds them on its few server connections), with the agent process's memory
  (VmRSS) and threads before and while they are held.

Exits 1 when the throughput ratio is under 0.8. Traffic stays on 127.0.0.1; the runtime,
the router, the pooler and PgBouncer take free ports from `--ports` up (below the kernel's ephemeral range); the
agent, its runtime and PgBouncer are stopped by pid and the root removed.
"""

import argparse
import os
import resource
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, spread, start_agent  # noqa: E402

sys.path.insert(0, str(ROOT / "platform"))
from agent.api import FileSpec, RouteSpec, RoutesRequest  # noqa: E402
from agent.client import AgentClient  # noqa: E402
from agent.endpoint import make_certificate  # noqa: E402

DOMAIN = "bench.test"
REF = "benchrouter01"
PASSWORD = secrets.token_hex(16)
THROUGHPUT_GOAL = 0.8


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connects", type=int, default=200, help="connection rounds per case (default 200)")
    parser.add_argument("--copy-mb", type=int, default=200, help="size of each COPY in MB (default 200)")
    parser.add_argument("--copy-rounds", type=int, default=3, help="COPY rounds per case (default 3)")
    parser.add_argument("--idle", type=int, default=1000, help="idle clients held through the pooler (default 1000)")
    parser.add_argument(
        "--ports", type=int, default=29400, help="first port to look for free ones from (default 29400)"
    )
    args = parser.parse_args()
    if not (0 < args.connects <= 10_000 and 0 < args.copy_mb <= 10_000 and 0 < args.copy_rounds <= 100):
        parser.error("keep to 1-10000 connects, 1-10000 MB, 1-100 COPY rounds")
    if not (0 < args.idle <= 10_000 and 1024 <= args.ports < 32_000):
        parser.error("keep to 1-10000 idle clients and --ports in 1024-31999")
    return args


def free_ports(first: int, count: int) -> list[int]:
    found = []
    for port in range(first, 32_768):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    sys.exit("no free ports below 32768")


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(status: dict[str, str]) -> float:
    return int(status["VmRSS"].split()[0]) / 1024


class Endpoints:
    def __init__(self, runtime_port: int, router: str, pooler: str):
        self.runtime_port = runtime_port
        self.router_host, self.router_port = router.rsplit(":", 1)
        self.pooler_host, self.pooler_port = pooler.rsplit(":", 1)

    def direct(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.runtime_port,
            user="postgres",
            password=PASSWORD,
            dbname="postgres",
            sslmode="require",
            **kwargs,
        )

    def router(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(
            host=f"db.{REF}.{DOMAIN}",
            hostaddr=self.router_host,
            port=self.router_port,
            user="postgres",
            password=PASSWORD,
            dbname="postgres",
            sslmode="require",
            **kwargs,
        )

    def pooler(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(
            host=f"pooler.{DOMAIN}",
            hostaddr=self.pooler_host,
            port=self.pooler_port,
            user=f"postgres.{REF}",
            password=PASSWORD,
            dbname="postgres",
            sslmode="require",
            **kwargs,
        )


def connect_once(connect) -> float:
    started = time.perf_counter()
    with connect() as connection:
        connection.execute("select 1").fetchone()
    return (time.perf_counter() - started) * 1000


def copy_once(connect, megabytes: int) -> float:
    """MB/s of one COPY TO STDOUT of `megabytes` MB (rows of 1,000 bytes plus a newline)."""
    rows = megabytes * 1000
    with connect() as connection, connection.cursor() as cursor:
        received = 0
        started = time.perf_counter()
        with cursor.copy(f"COPY (SELECT repeat('x', 999) FROM generate_series(1, {rows})) TO STDOUT") as copy:
            for block in copy:
                received += len(block)
        elapsed = time.perf_counter() - started
    assert received == rows * 1000, received
    return received / 1e6 / elapsed


def main() -> int:
    args = arguments()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.idle + 256)), hard))
    root = Path(tempfile.mkdtemp(prefix="berth-bench-router-", dir="/tmp"))
    root.chmod(0o755)  # as root, the process driver runs PostgreSQL as `postgres`, which must reach it
    token = secrets.token_urlsafe(24)
    runtime_port, pgbouncer_port, router_port, pooler_port = free_ports(args.ports, 4)
    agent = None
    try:
        agent, url = start_agent(
            root,
            token,
            BERTH_ROUTER_LISTEN=f"127.0.0.1:{router_port}",
            BERTH_POOLER_LISTEN=f"127.0.0.1:{pooler_port}",
            BERTH_PGBOUNCER_LISTEN=f"127.0.0.1:{pgbouncer_port}",
            BERTH_ROUTER_MAX_CONNECTIONS=str(args.idle + 100),
        )
        client = AgentClient(url, token, 120)
        cert, key = root / "bench.crt", root / "bench.key"
        make_certificate(cert, key)
        runtime = (
            f'driver = "process"\n[postgres]\nmajor = 15\nport = {runtime_port}\npassword = "{PASSWORD}"\n'
            f'tls_cert = """\n{cert.read_text()}"""\ntls_key = """\n{key.read_text()}"""\n'
        )
        client.put_files(REF, [FileSpec("runtime.toml", runtime.encode())], private_paths=["runtime.toml"])
        client.up(REF)
        route = RouteSpec(ref=REF, port=runtime_port, password=PASSWORD, max_client_conn=args.idle + 50, pool_size=10)
        client.routes(RoutesRequest(domain=DOMAIN, routes=[route]))
        deadline = time.monotonic() + 60
        while client.info().router.pooled < 1:
            if time.monotonic() > deadline:
                sys.exit("the pooler was not ready within 60 s")
            time.sleep(0.2)
        status = client.info().router
        ends = Endpoints(runtime_port, status.db.address, status.pooler.address)
        print(
            f"runtime PostgreSQL 15 on 127.0.0.1:{runtime_port}; router {status.db.address}, "
            f"pooler {status.pooler.address}, PgBouncer 127.0.0.1:{pgbouncer_port}; agent pid {agent.pid}, root {root}"
        )

        cases = {"direct": ends.direct, "router (TLS passthrough)": ends.router, "pooler (PgBouncer)": ends.pooler}
        for connect in cases.values():
            connect_once(connect)  # warm: first connections pay for caches and PgBouncer's first server login
        setup = {name: [] for name in cases}
        for _ in range(args.connects):
            for name, connect in cases.items():
                setup[name].append(connect_once(connect))
        base = statistics.median(setup["direct"])
        print(f"\nconnection setup (TLS, `select 1`, close), {args.connects} interleaved rounds, ms:")
        for name, values in setup.items():
            print(f"  {name:26} {spread(values):>24}   ratio to direct {statistics.median(values) / base:.2f}")

        copies = {"direct": ends.direct, "router (TLS passthrough)": ends.router}
        rates = {name: [] for name in copies}
        router_cpu = []
        for _ in range(args.copy_rounds):
            for name, connect in copies.items():
                cpu = cpu_seconds(agent.pid)
                rates[name].append(copy_once(connect, args.copy_mb))
                if name != "direct":
                    router_cpu.append(cpu_seconds(agent.pid) - cpu)
        ratio = statistics.median(rates["router (TLS passthrough)"]) / statistics.median(rates["direct"])
        print(f"\nCOPY TO STDOUT of {args.copy_mb} MB, {args.copy_rounds} interleaved rounds, MB/s:")
        for name, values in rates.items():
            print(f"  {name:26} {spread(values):>24}")
        print(f"  router / direct throughput {ratio:.2f} (goal >= {THROUGHPUT_GOAL})")
        print(f"  the router's CPU per COPY: {spread(router_cpu)} s ({args.copy_mb} MB each)")

        pgbouncer = int((root / ".berth-pooler" / "pgbouncer.pid").read_text())
        before, pgbouncer_before = proc_status(agent.pid), proc_status(pgbouncer)
        held = []
        started = time.perf_counter()
        try:
            for _ in range(args.idle):
                held.append(ends.pooler(autocommit=True))
            opened = time.perf_counter() - started
            time.sleep(1)
            during, pgbouncer_during = proc_status(agent.pid), proc_status(pgbouncer)
            routed = client.info().router.connections
            alive = sum(
                1 for connection in held[:: max(1, len(held) // 20)] if connection.execute("select 1").fetchone()
            )
        finally:
            for connection in held:
                connection.close()
        grown = rss_mib(during) - rss_mib(before)
        print(f"\n{args.idle} idle clients through the pooler address, opened in {opened:.1f} s:")
        print(f"  router connections {routed}; a sample of {alive} answered `select 1` while all were held")
        print(
            f"  agent (router) process: VmRSS {rss_mib(before):.1f} -> {rss_mib(during):.1f} MiB "
            f"(+{grown:.1f} MiB, {grown * 1024 / args.idle:.1f} KiB per client); "
            f"threads {before['Threads']} -> {during['Threads']}"
        )
        print(
            f"  PgBouncer: VmRSS {rss_mib(pgbouncer_before):.1f} -> {rss_mib(pgbouncer_during):.1f} MiB; "
            f"threads {pgbouncer_before['Threads']} -> {pgbouncer_during['Threads']}"
        )
        return 0 if ratio >= THROUGHPUT_GOAL else 1
    finally:
        if agent is not None:
            try:
                AgentClient(url, token, 60).down(REF)
            except Exception as error:  # the agent may be what failed; the root goes either way
                print(f"stopping the runtime: {error}", file=sys.stderr)
            agent.terminate()
            agent.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
