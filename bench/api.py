"""Management API cost: GET /v1/projects with --small vs --large projects in the caller's
organizations, and requests per second of GET /v1/projects/{ref} on one web worker.

    .venv/bin/python bench/api.py [--small 100] [--large 10000] [--runs 30] [--seconds 10] [--clients 4]

Runs against a throwaway PostgreSQL database of its own on BENCH_DATABASE_URL's server
(default postgres://postgres@127.0.0.1:5432), created for the run and dropped after.

1. Listing. Two callers share one database: one belongs to an organization with --small
   projects, the other to organizations holding --large. Requests go through Django's test
   client in process (server time: routing, middleware, token and rate-limit queries,
   serialisation), the two cases interleaved round-robin so drift on a busy machine hits
   both alike. Target: ratio of medians (large / small) at most 1.5, and the same number
   of queries.
2. Throughput. One gunicorn worker (sync) on a free loopback port serves GET /v1/projects/{ref}
   for --seconds to --clients threads; every request is authenticated and rate-counted (the
   limit is raised for the run so none is refused). The worker keeps its database connection
   (DATABASE_CONN_MAX_AGE=60 unless set), as a production deployment should. The bench
   stops that worker by its pid.
3. Settings. A local agent (process driver, ports from --ports) provisions one project
   (PostgreSQL 15); then --settings-runs times `PUT config/database/postgres` changes work_mem
   (restart_database false) and the clock runs until a new connection to the project's server
   shows the new value: end to end, API to agent to reload to server. Median seconds. The
   bench stops the agent by its pid and the project's server with it (its runtime folder is a
   temp folder it removes).
"""

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, analyze, parser, scratch, spread, start_agent  # noqa: E402

TARGET_RATIO = 1.5


def seed_projects(orgs, count: int, version, host) -> None:
    from projects.models import Project, Status

    Project.objects.bulk_create(
        (
            Project(
                name=f"Project {n}",
                organization=orgs[n % len(orgs)],
                postgres_major=15,
                template=version.name,
                template_version=version,
                host=host,
                status=Status.ACTIVE_HEALTHY,
            )
            for n in range(count)
        ),
        batch_size=2000,
    )


def timed(api, url: str) -> float:
    start = time.perf_counter()
    response = api.get(url)
    elapsed = (time.perf_counter() - start) * 1000
    assert response.status_code == 200, (url, response.status_code)
    return elapsed


def query_count(api, url: str) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        api.get(url)
    return len(captured)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def throughput(token: str, ref: str, seconds: float, clients: int) -> tuple[float, int, int]:
    """(requests per second, requests, errors) of one gunicorn worker for GET /v1/projects/{ref}."""
    import httpx

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--chdir",
            str(ROOT / "platform"),
            "--workers",
            "1",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "berth.wsgi",
        ],
        # Persistent database connections, as a production deployment runs (DATABASE_CONN_MAX_AGE).
        env={
            **os.environ,
            "ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_CONN_MAX_AGE": os.environ.get("DATABASE_CONN_MAX_AGE", "60"),
        },
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/v1/projects/{ref}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url, headers=headers, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not answer within 30s")
            time.sleep(0.2)
        counts, errors = [0] * clients, [0] * clients
        stop_at = time.monotonic() + seconds

        def run(i: int) -> None:
            with httpx.Client(headers=headers, timeout=10) as client:
                while time.monotonic() < stop_at:
                    if client.get(url).status_code == 200:
                        counts[i] += 1
                    else:
                        errors[i] += 1

        started = time.monotonic()
        threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        return sum(counts) / elapsed, sum(counts), sum(errors)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def settings_rounds(runs: int, first_port: int) -> None:
    """Part 3: PUT config/database/postgres until the server shows the new value, `runs` times."""
    import secrets
    import shutil
    import tempfile
    from unittest import mock

    import psycopg

    from hosts.actions import refresh_host
    from hosts.models import RuntimeHost
    from operations import tasks
    from operations.creation import create_project
    from operations.models import Operation
    from orgs.models import Membership, Organization, Role
    from projects.models import Project
    from tests.agent_fixtures import stop_clusters
    from tests.api_helpers import api_as, make_user

    # Under /tmp whatever TMPDIR says: run as root, the agent runs PostgreSQL as `postgres`,
    # which must reach the folder.
    root = Path(tempfile.mkdtemp(prefix="berth-bench-agent-", dir="/tmp"))
    root.chmod(0o755)
    token = secrets.token_urlsafe(24)
    agent, url = start_agent(root, token)
    try:
        host = RuntimeHost.objects.create(
            name="bench-settings",
            agent_url=url,
            agent_token=token,
            port_range_start=first_port,
            port_range_end=first_port + 19,
            block_size=20,
        )
        assert refresh_host(host, deadline=30), f"the agent at {url} did not answer"
        user = make_user("settings-caller")
        org = Organization.objects.create(name="Settings")
        Membership.objects.create(organization=org, user=user, role=Role.OWNER)
        with mock.patch("django_q.tasks.async_task", return_value="bench"):
            project = create_project(
                name="tuned", postgres_major=15, template="postgres", organization=org, actor=user, host=host
            )
            tasks.run_operation(Operation.objects.get(project=project).pk)
        project = Project.objects.get(pk=project.pk)
        if not hasattr(project, "port_block"):
            # A port of --ports taken by another process, say: the figure needs a project.
            operation = Operation.objects.get(project=project)
            raise SystemExit(
                f"the settings project was not provisioned ({operation.state}: {operation.error_code} "
                f"{operation.error_message}; {project.status}: {project.status_reason}); try other --ports"
            )
        api = api_as(user)
        dsn = {
            "host": "127.0.0.1",
            "port": project.port_block.first_port,
            "user": "postgres",
            "password": project.secrets["postgres_password"],
            "dbname": "postgres",
        }
        seconds = []
        for round_ in range(runs):
            wanted = f"{8 + round_ % 2 * 8}MB"  # 8MB, 16MB, ...: every round a change
            start = time.perf_counter()
            response = api.put(
                f"/v1/projects/{project.ref}/config/database/postgres", {"work_mem": wanted, "restart_database": False}
            )
            assert response.status_code == 200, response.content
            while True:
                with psycopg.connect(**dsn) as connection:
                    if connection.execute("show work_mem").fetchone()[0] == wanted:
                        break
            seconds.append(time.perf_counter() - start)
        print(
            f"PUT config/database/postgres (work_mem, no restart) until a new connection shows it: "
            f"median {statistics.median(seconds):.3f} s, {spread(seconds)} s (interquartile), {runs} rounds"
        )
    finally:
        agent.terminate()
        agent.wait(timeout=30)
        stop_clusters(root)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    p = parser(__doc__, "api")
    p.add_argument("--small", type=int, default=100, help="projects of the small caller (default %(default)s)")
    p.add_argument("--large", type=int, default=10_000, help="projects of the large caller (default %(default)s)")
    p.add_argument("--runs", type=int, default=30, help="requests per listing case (default %(default)s)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the throughput run (default %(default)s)")
    p.add_argument("--clients", type=int, default=4, help="client threads for the throughput run (default %(default)s)")
    p.add_argument(
        "--settings-runs",
        type=int,
        default=10,
        help="PUT config/database/postgres rounds (default %(default)s; 0: skip)",
    )
    p.add_argument(
        "--ports", type=int, default=23400, help="first port the settings project may lease (default %(default)s)"
    )
    args = p.parse_args()
    if not 0 < args.small < args.large:
        p.error("--small must be positive and below --large")
    with scratch(args.database, keep=args.keep, settings={"BERTH_API_RATE_LIMIT": "100000000"}):
        return run(args)


def run(args) -> int:
    from django.conf import settings
    from django.test.utils import setup_test_environment

    from hosts.models import RuntimeHost
    from orgs.actions import create_token
    from orgs.models import Membership, Organization, Role
    from projects.models import Project
    from templating.actions import sync_templates
    from templating.models import TemplateVersion
    from tests.api_helpers import ApiClient, make_user

    setup_test_environment()
    settings.ALLOWED_HOSTS = ["testserver"]
    sync_templates(ROOT / "runtimes")
    version = TemplateVersion.objects.latest_of("postgres")
    host = RuntimeHost.objects.create(
        name="bench", agent_url="http://127.0.0.1:9", agent_token="x", port_range_start=20000, port_range_end=30000
    )
    sizes = (args.small, args.large)
    clients, refs = {}, {}
    for size in sizes:
        user = make_user(f"caller{size}")
        orgs = [Organization.objects.create(name=f"Org {size}.{i}") for i in range(5 if size == args.large else 1)]
        for org in orgs:
            Membership.objects.create(organization=org, user=user, role=Role.OWNER)
        seed_projects(orgs, size, version, host)
        token = create_token(user, name="bench")[1]
        clients[size] = (ApiClient(token), token)
        refs[size] = Project.objects.filter(organization__in=orgs).values_list("ref", flat=True).first()
    analyze()

    for size in sizes:  # warm: connection, first compilation of everything
        clients[size][0].get("/v1/projects")
    times = {size: [] for size in sizes}
    for _ in range(args.runs):
        for size in sizes:  # round-robin: both cases see the same machine
            times[size].append(timed(clients[size][0], "/v1/projects"))
    queries = {size: query_count(clients[size][0], "/v1/projects") for size in sizes}
    medians = {size: statistics.median(times[size]) for size in sizes}
    small, large = sizes
    ratio = medians[large] / medians[small]
    print(f"GET /v1/projects: server time, median ms (interquartile), {args.runs} interleaved requests per case")
    for size in sizes:
        print(f"  {size:>6,} projects in the caller's organizations: {spread(times[size])}, {queries[size]} queries")
    constant = len(set(queries.values())) == 1
    print(f"  ratio {ratio:.2f} (target <= {TARGET_RATIO}); queries {'constant' if constant else 'GROW'}")

    rate, done, errors = throughput(clients[large][1], refs[large], args.seconds, args.clients)
    print(
        f"GET /v1/projects/{{ref}} on one gunicorn worker: {rate:.0f} req/s "
        f"({done} requests, {errors} errors, {args.clients} clients, {args.seconds:g}s)"
    )
    if args.settings_runs:
        settings_rounds(args.settings_runs, args.ports)
    ok = ratio <= TARGET_RATIO and constant and errors == 0
    print("OK" if ok else "OVER TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
