"""Benchmark a template rollout over many projects: plan and push throughput, Berth's overhead.

    .venv/bin/python bench/rollout.py [--projects 200] [--workers 2] [--concurrency 4] [--wave-size 50]

Runs the real thing without runtimes: a local agent with the process driver and a
django-q2 cluster on its default settings, against a throwaway database of its own on
BENCH_DATABASE_URL's server (default postgres://postgres@127.0.0.1:5432), dropped at the
end. The projects are stopped ones (placed, ports leased, files pushed, never
started), so the rollout pushes files and restarts nothing, as `--no-restart` would.
Prints:
- plan: `migrate_runtimes --dry-run` (one digests call per project, the three-way plan), projects/s;
- push: `migrate_runtimes --no-restart` from start to finished (a re-sync operation per
  project through the worker, in waves: canary 1, then --wave-size), projects/s;
- the agent's own time per project (the same digests and files calls made directly), and
  Berth's overhead per project: the worker time a project took in the rollout beyond that.
It stops only the agent and worker it started, and removes the folder it made.
"""

import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from io import StringIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, parser, scratch, start_agent, start_worker  # noqa: E402


def stopped_projects(host, version, count: int):
    """Placed, leased, files pushed through the agent, never started: what a stopped project is."""
    from hosts.agents import client_for
    from operations.runtime_files import AgentRuntimeFiles
    from ports.models import BlockState, PortBlock
    from projects.models import DesiredState, Project, Status
    from templating.render import render_project
    from templating.secrets import generate_project_secrets

    files = AgentRuntimeFiles(deadline=30)
    projects = []
    for n in range(count):
        project = Project.objects.create(
            name=f"bench {n}",
            postgres_major=15,
            template=version.name,
            template_version=version,
            host=host,
            desired_state=DesiredState.STOPPED,
            status=Status.INACTIVE,
            secrets=generate_project_secrets(),
        )
        port = host.port_range_start + n
        PortBlock.objects.create(host=host, first_port=port, last_port=port, state=BlockState.LEASED, project=project)
        rendered = render_project(project, version)
        files.put_files(project, rendered, sorted(rendered.files), remove=[])
        Project.objects.filter(pk=project.pk).update(file_digests=rendered.managed_digests)
        projects.append(project)
    return projects, client_for(host, deadline=30)


def new_revision(folder: Path):
    from templating.actions import sync_templates
    from templating.models import TemplateVersion

    shutil.copytree(ROOT / "runtimes" / "postgres", folder / "postgres")
    runtime = folder / "postgres" / "runtime.toml"
    runtime.write_text(runtime.read_text().replace('driver = "process"', 'driver = "process"\n# bench r2', 1))
    sync_templates(folder)
    return TemplateVersion.objects.latest_of("postgres")


def agent_seconds(projects, target) -> list[float]:
    """The agent's own time per project: the digests and files calls a re-sync makes, made directly."""
    from operations.runtime_files import AgentRuntimeFiles
    from projects.models import Project
    from templating.render import render_project
    from templating.resync import paths_to_check

    files = AgentRuntimeFiles(deadline=30)
    took = []
    for project in Project.objects.filter(pk__in=[p.pk for p in projects]).select_related("host", "template_version"):
        rendered = render_project(project, target)
        paths = paths_to_check(project, target)
        started = time.perf_counter()
        files.digests(project, paths)
        files.put_files(project, rendered, ["runtime.toml"], remove=[])
        took.append(time.perf_counter() - started)
    return took


def migrate(*args) -> tuple[float, dict]:
    from django.core.management import CommandError, call_command

    out = StringIO()
    started = time.perf_counter()
    try:
        call_command("migrate_runtimes", *args, "--json", stdout=out, stderr=StringIO())
    except CommandError as error:
        if error.returncode != 0:
            print(out.getvalue()[-1000:], file=sys.stderr)
            raise
    return time.perf_counter() - started, json.loads(out.getvalue())


def main():
    p = parser(__doc__, "rollout")
    p.add_argument("--projects", type=int, default=200, help="stopped projects to roll out (default %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="django-q2 workers (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=4, help="re-syncs in flight per wave (default %(default)s)")
    p.add_argument("--wave-size", type=int, default=50, help="projects per wave after the canary (default %(default)s)")
    args = p.parse_args()
    with scratch(args.database, keep=args.keep):
        run(args)


def run(args):
    from django.db import connections

    from hosts.actions import save_host
    from hosts.models import RuntimeHost
    from templating.actions import sync_templates
    from templating.models import TemplateVersion

    sync_templates()
    root = Path(tempfile.mkdtemp(prefix="bbr-", dir="/tmp"))
    root.chmod(0o755)
    templates = Path(tempfile.mkdtemp(prefix="bbr-templates-"))
    token = secrets.token_urlsafe(24)
    agent, url = start_agent(root, token)
    worker = None
    try:
        host = RuntimeHost(
            name="bench",
            agent_url=url,
            agent_token=token,
            port_range_start=20000,
            port_range_end=20000 + args.projects - 1,
            block_size=1,
        )
        assert save_host(host, label="bench"), "the agent did not answer"
        r1 = TemplateVersion.objects.get(name="postgres", revision=1)
        projects, _ = stopped_projects(host, r1, args.projects)
        target = new_revision(templates)

        plan_s, plan = migrate("--template", "postgres", "--to", "latest", "--dry-run")
        assert len(plan["projects"]) == args.projects and {p["outcome"] for p in plan["projects"]} == {"updated"}

        worker = start_worker(Q_WORKERS=str(args.workers))
        push_s, record = migrate(
            "--template", "postgres", "--to", "latest", "--no-restart", "--canary", "1",
            "--wave-size", str(args.wave_size), "--concurrency", str(args.concurrency),
        )  # fmt: skip
        outcomes = {p["outcome"] for p in record["projects"]}
        assert record["state"] == "finished" and outcomes == {"updated"}, (record["state"], outcomes)

        from operations.models import Kind, Operation

        resyncs = Operation.objects.filter(kind=Kind.RESYNC)
        waits = [(o.started_at - o.created_at).total_seconds() for o in resyncs]
        runs = [(o.finished_at - o.started_at).total_seconds() for o in resyncs]
        agent_each = agent_seconds(projects, target)
        agent_median = statistics.median(agent_each)
        worker_seconds = push_s * args.workers
        print(f"{args.projects} stopped projects, process-driver agent, {args.workers} workers:")
        print(f"  plan (--dry-run)          : {plan_s:6.2f} s, {args.projects / plan_s:7.1f} projects/s")
        waves = len({p["wave"] for p in record["projects"]})
        print(
            f"  push (--no-restart)       : {push_s:6.2f} s, {args.projects / push_s:7.1f} projects/s "
            f"({waves} waves, {args.concurrency} at a time)"
        )
        print(f"  agent's own time/project  : {agent_median * 1000:6.1f} ms (median of direct digests + files calls)")
        print(
            f"  Berth overhead/project    : {(worker_seconds / args.projects - agent_median) * 1000:6.1f} ms "
            f"(worker time per project in the rollout, less the agent's)"
        )
        print(f"  re-sync queued, median    : {statistics.median(waits) * 1000:6.1f} ms (requested -> claimed)")
        print(f"  re-sync ran, median       : {statistics.median(runs) * 1000:6.1f} ms (claimed -> settled)")
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        agent.terminate()
        agent.wait(timeout=10)
        connections.close_all()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(templates, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
