"""A fleet of 100,000 projects on 100 hosts against one of 1,000: every page, placement,
lease and periodic pass should cost the same on both (or, for the health refresh, in
proportion to the projects it probes).

    .venv/bin/python bench/fleet.py [--large 100000] [--small 1000] [--hosts 100] [--small-hosts 10]
        [--rounds 5] [--only "health refresh pass,drift check pass"] [--metrics-runtimes 100]

Seeds two throwaway databases through the models (bulk_create): --hosts hosts for the large
fleet and --small-hosts for the small one (the issue's 1,000 projects on 10 hosts against
100,000 on 100), with the same port ranges, their blocks laid out, projects spread over
them, each with a leased block and two finished operations. Placement and /metrics are
judged in total, the hosts page per host row (it shows every host). Agents are stood in by one fast local server
(tests/standin_agent.py) in a process of its own, stopped by its pid at the end.

Each measure then runs round-robin: a round of it on the large fleet, a round on the
small one, --rounds times (the database connection is switched between the two), so
machine load falls on both alike. Printed per measure: median ms with the interquartile
range on each fleet, their ratio, and the queries one call makes on each (the periodic
passes run in a thread per host, whose queries are not counted here). --only times just
the measures it names (comma-separated), still round-robin between the fleets.
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ROOT,
    SERVER_URL,
    analyze,
    create_database,
    default_settings,
    drop_databases,
    parser,
    scratch,
    spread,
    start_agent,
    use,
)

TARGET_RATIO = 1.5
METRICS_TOKEN = "bench-metrics-token-0123456789"
# Measures that show every host: judged per host row, since the fleets' host counts differ.
PER_HOST = {"hosts page"}
# How many projects the host that the "one host" measure filters by (the middle one) gets
# first: a page and a half of the projects list.
ONE_HOST_PAGE = 75
# The periodic passes: one call per round, judged per project against their interval (s).
PASSES = {"health refresh pass": 60, "drift check pass": 15 * 60}
SEEDED_DIGEST = "0" * 64
PORT_START, BLOCK = 20000, 10


class AllFree:
    def taken(self, host, ports):
        return set()


def start_standin() -> tuple[subprocess.Popen, str]:
    """The stand-in agent (answers info, health, digests and port checks at once) in its own process."""
    code = (
        "import sys, time\n"
        "from tests.standin_agent import StandInAgent\n"
        "class Fast(StandInAgent):\n"
        "    def reply(self, name, body):\n"
        "        if name == 'digests':  # every managed file as pushed: no drift\n"
        f"            return {{'digests': {{p: {SEEDED_DIGEST!r} for p in body.get('paths', [])}}}}\n"
        "        if name == 'ports':\n"
        "            return {'taken': []}\n"
        "        return super().reply(name, body)\n"
        "agent = Fast({'info', 'health', 'digests', 'ports'})\n"
        "print(agent.url, flush=True)\n"
        "while True: time.sleep(3600)\n"
    )
    # tests/standin_agent.py builds its replies with agent.api, under platform/.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "platform")}
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, env=env)
    return process, process.stdout.readline().decode().strip()


def seed(projects: int, hosts: int, agent_url: str, per_host_range: int) -> dict:
    """The fleet, and what the measures need from it (a client, cursors, spare projects)."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.utils import timezone

    from audit.models import AuditEntry
    from hosts.models import RuntimeHost
    from operations.models import Kind, Operation, State
    from ports.actions import sync_port_blocks
    from ports.models import BlockState, PortBlock
    from projects.models import Project, Status
    from templating.actions import sync_templates
    from templating.models import TemplateVersion
    from templating.secrets import generate_project_secrets
    from tests.standin_agent import INFO

    sync_templates(ROOT / "runtimes")
    version = TemplateVersion.objects.latest_of("postgres")
    port_end = PORT_START + per_host_range * BLOCK - 1
    now = timezone.now()
    fleet = RuntimeHost.objects.bulk_create(
        RuntimeHost(
            name=f"host{n:03}",
            agent_url=agent_url,
            agent_token="bench-token-0123456789",
            port_range_start=PORT_START,
            port_range_end=port_end,
            block_size=BLOCK,
            capabilities=INFO,
            last_seen_at=now,
        )
        for n in range(hosts)
    )
    secrets = generate_project_secrets()
    statuses = [Status.ACTIVE_HEALTHY] * 8 + [Status.INACTIVE, Status.ACTIVE_UNHEALTHY]
    # Round-robin over the hosts, but the first ONE_HOST_PAGE projects on the host that the
    # "one host" measure filters by, so its page is full on either fleet (the same rows shown).
    one_host = hosts // 2
    on_host = [one_host if n < ONE_HOST_PAGE else n % hosts for n in range(projects)]
    made = Project.objects.bulk_create(
        (
            Project(
                name=f"Project {n}",
                postgres_major=15,
                template="postgres",
                template_version=version,
                host=fleet[on_host[n]],
                status=statuses[n % len(statuses)],
                secrets=secrets,
                file_digests={"runtime.toml": SEEDED_DIGEST},
            )
            for n in range(projects)
        ),
        batch_size=5000,
    )
    taken = dict.fromkeys(range(hosts), 0)

    def next_block(host_index: int) -> int:
        taken[host_index] += 1
        return PORT_START + (taken[host_index] - 1) * BLOCK

    PortBlock.objects.bulk_create(
        (
            PortBlock(
                host_id=p.host_id,
                first_port=(first := next_block(on_host[n])),
                last_port=first + BLOCK - 1,
                state=BlockState.LEASED,
                project=p,
                last_project_ref=p.ref,
                leased_at=now,
                checked_at=now,
            )
            for n, p in enumerate(made)
        ),
        batch_size=5000,
    )
    for host in fleet:
        sync_port_blocks(host)
    Operation.objects.bulk_create(
        (
            Operation(project=p, kind=kind, state=State.SUCCEEDED, deadline=now, finished_at=now)
            for p in made
            for kind in (Kind.PROVISION, Kind.RESTART)
        ),
        batch_size=10000,
    )
    AuditEntry.objects.bulk_create(
        (
            AuditEntry(actor_label="bench", action=f"operation.{kind}", project=p)
            for p in made
            for kind in ("provision", "restart")
        ),
        batch_size=10000,
    )
    # Projects created but not placed yet: placement and the lease take one each per call.
    spare = Project.objects.bulk_create(
        Project(name=f"Spare {n}", postgres_major=15, template="postgres", template_version=version, secrets=secrets)
        for n in range(400)
    )
    user = get_user_model().objects.create_user("bench", password="bench-password-1", is_staff=True)
    client = Client()
    client.force_login(user)
    # The Management API: the user owns the organization every seeded project landed in.
    from orgs.actions import create_token
    from orgs.models import Membership, Role, default_organization_id

    Membership.objects.create(organization_id=default_organization_id(), user=user, role=Role.OWNER)
    token = create_token(user, name="bench")[1]
    # What the metrics pass leaves for /metrics: the fleet's counts and a host sample each.
    from metrics.collection import record_fleet_counts, record_host_samples

    record_fleet_counts(now)
    record_host_samples(now)
    analyze()
    from berth.keyset import AFTER, _encode

    near_oldest = Project.objects.order_by("created_at", "pk")[25]
    return {
        "client": client,
        "one_host": f"host{one_host:03}",
        # The newest project's name: no other name contains it, in either fleet.
        "search": f"Project {projects - 1}",
        "last_cursor": _encode(AFTER, near_oldest, [("created_at", True), ("pk", True)]),
        "spare": [p.pk for p in spare],
        "api": Client(),
        "api_headers": {"Authorization": f"Bearer {token}"},
        # The page after this one is the list's last (it holds the 50 oldest projects).
        "last_ref": Project.objects.order_by("created_at", "pk")[50].ref,
        "placed": [],
    }


def measures(fleet: dict) -> dict:
    """Each measure: a function doing one call (on the current database)."""
    from django.urls import reverse

    from operations.drift import check_all
    from operations.health import refresh_all
    from operations.placement import place_project
    from operations.reaper import reap
    from ports.actions import lease_ports
    from projects.models import Project

    client = fleet["client"]

    def get(url, params=None, headers=None):
        def call():
            response = client.get(url, params or {}, headers=headers)
            assert response.status_code == 200, (url, response.status_code)

        return call

    def placement():
        project = Project.objects.select_related("template_version").get(pk=fleet["spare"].pop())
        place_project(project, deadline=5)
        fleet["placed"].append(project.pk)

    def lease():
        project = Project.objects.select_related("host").get(pk=fleet["placed"].pop())
        lease_ports(project, 1, checker=AllFree())

    result = {
        "projects page, first": get(reverse("dashboard:projects")),
        "projects page, last": get(reverse("dashboard:projects"), {"cursor": fleet["last_cursor"]}),
        "projects search": get(reverse("dashboard:projects"), {"q": fleet["search"]}),
        "projects, one host": get(reverse("dashboard:projects"), {"host": fleet["one_host"]}),
        "projects by name": get(reverse("dashboard:projects"), {"sort": "-name"}),
        "projects by status": get(reverse("dashboard:projects"), {"sort": "status"}),
        "projects by host": get(reverse("dashboard:projects"), {"sort": "host"}),
        "projects by last op": get(reverse("dashboard:projects"), {"sort": "-lastop"}),
        "templates page": get(reverse("dashboard:templates")),
        "operations page": get(reverse("dashboard:operations")),
        "audit page": get(reverse("dashboard:audit")),
        "audit, one action": get(reverse("dashboard:audit"), {"action": "operation.restart"}),
        "hosts page": get(reverse("dashboard:hosts")),
        "/metrics": get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}),
        "organizations page": get(reverse("dashboard:organizations")),
        "placement": placement,
        "lease": lease,
        "reaper pass": reap,
    }
    api = fleet["api"]

    def api_list(params):
        def call():
            response = api.get("/v1/projects", params, headers=fleet["api_headers"])
            assert response.status_code == 200, response.content

        return call

    result["API list, first"] = api_list({"limit": 100})
    result["API list, last"] = api_list({"limit": 100, "after": fleet["last_ref"]})
    result["health refresh pass"] = refresh_all
    result["drift check pass"] = check_all
    return result


def chosen(all_measures: dict, only: list[str] | None, p) -> dict:
    """The measures --only names, in its order (all of them without it)."""
    if only is None:
        return all_measures
    unknown = [name for name in only if name not in all_measures]
    if unknown:
        p.error(f"no measure named {', '.join(map(repr, unknown))}; measures: {', '.join(all_measures)}")
    return {name: all_measures[name] for name in only}


def time_one(call) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def count_queries(call) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        call()
    return len(captured)


def main() -> int:
    p = parser(__doc__, "fleet")
    p.add_argument("--large", type=int, default=100_000, help="projects in the large fleet (default %(default)s)")
    p.add_argument("--small", type=int, default=1_000, help="projects in the small fleet (default %(default)s)")
    p.add_argument("--hosts", type=int, default=100, help="hosts in the large fleet (default %(default)s)")
    p.add_argument("--small-hosts", type=int, default=10, help="hosts in the small fleet (default %(default)s)")
    p.add_argument(
        "--metrics-runtimes",
        type=int,
        default=100,
        help="runtimes one agent's metrics call reads, for its cost (default %(default)s; 0 skips it)",
    )
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default %(default)s)")
    p.add_argument("--per-round", type=int, default=5, help="calls per measure, fleet and round (default %(default)s)")
    p.add_argument(
        "--only",
        help="measures to time, separated by commas with no space after them (names such as "
        "'projects page, first' have a comma and a space); default: all",
    )
    args = p.parse_args()
    only = None if args.only is None else [name.strip() for name in re.split(r",(?! )", args.only)]
    if (args.rounds + 1) * args.per_round * 2 > 400:
        p.error("placement and lease take spare projects: at most 400 / 2 calls per measure and fleet")
    names = {"large": args.database + "_large", "small": args.database + "_small"}
    agent = None
    # Deployed settings (DEBUG off: no log of every query), the pages asked over plain HTTP.
    deployed = {
        **default_settings(),
        "SECURE_SSL_REDIRECT": "0",
        "BERTH_API_RATE_LIMIT": "1000000",
        "BERTH_METRICS_TOKEN": METRICS_TOKEN,
    }
    with scratch(args.database, keep=args.keep, settings=deployed):
        from django.conf import settings
        from django.test.utils import setup_test_environment

        setup_test_environment()
        settings.ALLOWED_HOSTS = ["testserver"]
        try:
            agent, url = start_standin()
            fleets = {}
            # The small fleet first: a misnamed --only measure is refused before the long seeding.
            hosts = {"small": args.small_hosts, "large": args.hosts}
            for size_name, size in (("small", args.small), ("large", args.large)):
                started = time.monotonic()
                create_database(names[size_name])
                # Both fleets' hosts have the same ranges (the large fleet's, with room to spare).
                fleets[size_name] = seed(size, hosts[size_name], url, -(-args.large // args.hosts) + 200)
                fleets[size_name]["measures"] = chosen(measures(fleets[size_name]), only, p)
                print(
                    f"seeded {size:,} projects on {hosts[size_name]} hosts in {time.monotonic() - started:.0f} s",
                    flush=True,
                )
            report(args, names, {size: fleets[size] for size in ("large", "small")})
            if args.metrics_runtimes:
                metrics_call_cost(args.metrics_runtimes, args.rounds)
        finally:
            use(args.database)
            if agent is not None:
                agent.terminate()
                agent.wait(timeout=10)
            if not args.keep:
                drop_databases(names.values())
    return 0


def report(args, names, fleets) -> None:
    timings = {size: {m: [] for m in fleets[size]["measures"]} for size in fleets}
    queries = {size: {} for size in fleets}
    for size in fleets:  # warm: template compilation, the connection, plan caches
        use(names[size])
        for name, call in fleets[size]["measures"].items():
            if name not in PASSES:
                call()
            queries[size][name] = count_queries(call)
    for _ in range(args.rounds):
        for name in fleets["large"]["measures"]:
            calls = 1 if name in PASSES else args.per_round
            for size in fleets:
                use(names[size])
                call = fleets[size]["measures"][name]
                if name not in PASSES:
                    call()  # the reconnect after the switch is not timed
                timings[size][name].extend(time_one(call) for _ in range(calls))
    large, small = f"{args.large:,}", f"{args.small:,}"
    print(
        f"\nmedian ms (interquartile), {args.rounds} interleaved rounds; {args.hosts} hosts in the large fleet,"
        f" {args.small_hosts} in the small one"
    )
    print(f"{'measure':<22}{large + ' projects':>30}{small + ' projects':>30}{'ratio':>7}{'queries':>12}")
    for name in timings["large"]:
        ratio = statistics.median(timings["large"][name]) / statistics.median(timings["small"][name])
        if name in PER_HOST:
            ratio *= args.small_hosts / args.hosts
        flag = "" if ratio <= TARGET_RATIO or name in PASSES else "  over target"
        q = f"{queries['large'][name]}/{queries['small'][name]}" if name not in PASSES else "threads"
        print(
            f"{name:<22}{spread(timings['large'][name]):>30}{spread(timings['small'][name]):>30}"
            f"{ratio:>7.2f}{q:>12}{flag}{'  (ratio per host row)' if name in PER_HOST else ''}"
        )
    for name, interval in PASSES.items():
        if name not in timings["large"]:
            continue
        per_project = {
            s: statistics.median(timings[s][name]) / n for s, n in (("large", args.large), ("small", args.small))
        }
        large_s = statistics.median(timings["large"][name]) / 1000
        ratio = per_project["large"] / per_project["small"]
        print(
            f"{name} per project: {per_project['large']:.3f} ms (large), {per_project['small']:.3f} ms (small), "
            f"ratio {ratio:.2f}; the large pass takes {large_s:.1f} s of its {interval} s interval"
        )


def metrics_call_cost(runtimes: int, rounds: int) -> None:
    """One agent's POST /v1/metrics for `runtimes` runtimes, timed on a real agent. The
    runtimes are the bench's own PostgreSQL server, named `runtimes` times: each target is
    its own connection and statement, as each runtime's would be (one server stands in for
    a host's clusters; the agent's cost per runtime is the connection and the statement)."""
    from agent.api import MetricsTarget
    from agent.client import AgentClient

    server = SERVER_URL.split("@", 1)[-1]
    address, _, port = server.partition(":")
    root = Path(tempfile.mkdtemp(prefix="bench-fleet-agent-", dir="/tmp"))
    root.chmod(0o755)  # the process driver runs PostgreSQL as `postgres`, which must reach it
    agent, url = start_agent(root, "bench-agent-token-0123456789")
    try:
        client = AgentClient(url, "bench-agent-token-0123456789", deadline=60)
        targets = [MetricsTarget(f"bench{n:04}", int(port or 5432), "unused", host=address) for n in range(runtimes)]
        client.metrics(targets)  # warm: the agent's first connections
        timings, failed = [], 0
        for _ in range(rounds):
            started = time.perf_counter()
            results = client.metrics(targets)
            timings.append((time.perf_counter() - started) * 1000)
            failed += sum(1 for r in results if r.error)
        print(
            f"\nmetrics collection, one host, {runtimes} runtimes in one agent call: {spread(timings)} ms "
            f"(median, interquartile; {rounds} calls; {failed} runtimes unread)"
        )
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
