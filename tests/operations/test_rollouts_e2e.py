"""Rollouts end to end: a real django-q2 worker, a real agent and the process driver's real Postgres."""

import json
import shutil
import socket
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from operations import rollouts
from operations.conflicts import three_way
from operations.creation import create_project
from operations.models import Kind, Operation, Outcome, Rollout
from projects.models import Project, Status
from templating.actions import sync_templates
from templating.models import TemplateVersion
from templating.render import render_project
from tests.stack import RUNTIMES, Worker, agent_host, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DEADLINE = 40  # seconds an operation may run


@pytest.fixture
def stack(agent_factory, tmp_path):
    """An agent with room for 8 projects and a worker that runs 3 tasks at once."""
    agent = agent_factory()
    host = agent_host(agent, blocks=8)
    worker = Worker(tmp_path, BERTH_OPERATION_DEADLINE=DEADLINE, BERTH_AGENT_CALL_DEADLINE=10, Q_WORKERS=3)
    yield agent, host
    worker.stop()


@pytest.fixture
def template_root(tmp_path):
    root = tmp_path / "runtimes"
    root.mkdir()
    shutil.copytree(RUNTIMES / "postgres", root / "postgres")
    return root


def new_revision(root: Path, old: str, new: str, path: str = "runtime.toml") -> TemplateVersion:
    target = root / "postgres" / path
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))
    sync_templates(root)
    return TemplateVersion.objects.latest_of("postgres")


def healthy_projects(count: int) -> list[Project]:
    projects = [create_project(name=f"Shop {n}", postgres_major=15, template="postgres") for n in range(count)]
    for project in projects:
        wait_for(
            lambda p=project: Project.objects.get(pk=p.pk).status == Status.ACTIVE_HEALTHY,
            timeout=120,
            what=f"{project.ref} to be healthy",
        )
    return sorted(Project.objects.filter(pk__in=[p.pk for p in projects]), key=lambda p: p.ref)


def migrate(*args) -> tuple[int, dict]:
    """Run migrate_runtimes with --json; its exit status and what it printed."""
    out = StringIO()
    try:
        call_command("migrate_runtimes", *args, "--json", stdout=out, stderr=StringIO())
        status = 0
    except CommandError as error:
        status = error.returncode
    return status, json.loads(out.getvalue())


def not_updated(record: dict) -> list[tuple]:
    """Each project the rollout did not update: its outcome, message, and its operation's error."""
    errors = dict(Operation.objects.values_list("pk", "error_message"))
    return [
        (p["ref"], p["outcome"], p["message"], errors.get(p["operation"]))
        for p in record["projects"]
        if p["outcome"] != "updated"
    ]


def resolve(*args) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("resolve_conflicts", *args, stdout=out)
        status = 0
    except CommandError as error:
        status = error.returncode
    return status, out.getvalue()


def event_at(operation: Operation, step: str):
    return operation.events.filter(step=step).order_by("at").values_list("at", flat=True).last()


def test_a_rollout_restarts_wave_by_wave_rolls_back_and_resolves_conflicts(stack, template_root):
    agent, host = stack
    projects = healthy_projects(7)
    r1 = projects[0].template_version
    r2 = new_revision(template_root, 'driver = "process"', 'driver = "process"\n# r2')

    status, record = migrate("--template", "postgres", "--to", "latest", "--canary", "1", "--wave-size", "2")

    assert status == 0, (record.get("state"), not_updated(record))
    assert record["state"] == "finished"
    assert [p["wave"] for p in record["projects"]] == [0, 1, 1, 2, 2, 3, 3]
    assert {p["outcome"] for p in record["projects"]} == {"updated"}
    assert all(p["restarted"] for p in record["projects"])
    rollout = Rollout.objects.get(pk=record["rollout"])
    waves: dict[int, list[Operation]] = {}
    for entry in rollout.projects.select_related("operation"):
        waves.setdefault(entry.wave, []).append(entry.operation)
    for wave in range(1, 4):
        previous_healthy = max(event_at(op, "health") for op in waves[wave - 1])
        started = min(op.created_at for op in waves[wave])
        assert started >= previous_healthy, f"wave {wave} started before wave {wave - 1} was healthy"
        # Within a wave both restarts were requested before either was healthy: the wave runs concurrently.
        assert max(op.created_at for op in waves[wave]) < min(event_at(op, "health") for op in waves[wave])
    for project in projects:
        project.refresh_from_db()
        assert (project.template_version, project.status) == (r2, Status.ACTIVE_HEALTHY)
        assert b"# r2" in (agent.root / project.ref / "runtime.toml").read_bytes()

    status, record = migrate("--rollback", str(rollout.pk))

    assert status == 0, (record.get("state"), not_updated(record))
    assert record["rollback_of"] == rollout.pk
    assert {(p["from_revision"], p["to_revision"], p["outcome"]) for p in record["projects"]} == {(2, 1, "updated")}
    for project in projects:
        project.refresh_from_db()
        assert (project.template_version, project.status) == (r1, Status.ACTIVE_HEALTHY)
        assert b"# r2" not in (agent.root / project.ref / "runtime.toml").read_bytes()

    # Two hosts edit runtime.toml, and the next revision changes it too: both conflict.
    taker, keeper = projects[0], projects[1]
    for project in (taker, keeper):
        path = agent.root / project.ref / "runtime.toml"
        path.write_text(path.read_text() + "# edited on the host\n")
    r3 = new_revision(template_root, 'driver = "process"', 'driver = "process"\n# r3')

    status, record = migrate("--template", "postgres", "--to", "latest", "--wave-size", "3", "--concurrency", "3")

    assert status == 3, record  # finished, conflicts left
    outcomes = {p["ref"]: (p["outcome"], p["conflicts"]) for p in record["projects"]}
    assert outcomes[taker.ref] == outcomes[keeper.ref] == ("conflicted", ["runtime.toml"])
    assert {outcomes[p.ref][0] for p in projects[2:]} == {"updated"}
    keeper.refresh_from_db()
    assert (keeper.template_version, keeper.status) == (r1, Status.ACTIVE_HEALTHY)

    (view,) = three_way(keeper, r3, deadline=10)
    assert "+# edited on the host" in view.host_diff
    assert "+# r3" in view.template_diff and "# edited on the host" not in view.template_diff
    password = keeper.secrets["postgres_password"]
    for text in (view.pushed, view.host, view.template, view.host_diff, view.template_diff):
        assert password not in text
    assert "<secret:postgres_password>" in view.host

    status, out = resolve("--project", taker.ref, "--take-template")

    assert status == 0, out
    taker.refresh_from_db()
    folder = agent.root / taker.ref
    assert (taker.template_version, taker.status, taker.drifted_paths) == (r3, Status.ACTIVE_HEALTHY, [])
    assert (folder / "runtime.toml").read_bytes() == render_project(taker, r3).files["runtime.toml"]
    (backup,) = folder.glob("runtime.toml.backup-*")
    assert backup.read_text().endswith("# edited on the host\n")
    assert backup.name in out

    status, out = resolve("--project", keeper.ref, "--keep-local")

    assert status == 0, out
    keeper.refresh_from_db()
    assert (keeper.template_version, keeper.drifted_paths) == (r3, ["runtime.toml"])
    assert (agent.root / keeper.ref / "runtime.toml").read_text().endswith("# edited on the host\n")
    assert not list((agent.root / keeper.ref).glob("*.backup-*"))
    entries = Rollout.objects.get(pk=record["rollout"]).projects
    assert set(entries.filter(outcome=Outcome.RESOLVED).values_list("project__ref", flat=True)) == {
        taker.ref,
        keeper.ref,
    }


def test_a_revision_that_never_becomes_healthy_halts_after_the_canary_and_resumes_once_fixed(stack, template_root):
    agent, host = stack
    projects = healthy_projects(6)
    r1 = projects[0].template_version
    # The bad revision adds a probe of a port nothing listens on: a restarted runtime never passes it.
    (template_root / "postgres" / "manifest.toml").write_text(
        (template_root / "postgres" / "manifest.toml")
        .read_text()
        .replace("[ports]\ndb = 0\n", "[ports]\ndb = 0\nsidecar = 1\n")
        + '\n[[probes]]\nname = "sidecar"\nkind = "tcp"\nslot = "sidecar"\n'
    )
    bad = new_revision(template_root, 'driver = "process"', 'driver = "process"\n# needs a sidecar')

    status, record = migrate("--template", "postgres", "--to", str(bad.revision), "--canary", "1", "--wave-size", "2")

    assert status == 4, record
    assert record["state"] == "halted"
    canary, *others = projects
    assert canary.ref in record["reason"]
    by_ref = {p["ref"]: p for p in record["projects"]}
    assert by_ref[canary.ref]["outcome"] == "failed"
    assert {by_ref[p.ref]["outcome"] for p in others} == {"pending"}
    for project in others:
        project.refresh_from_db()
        assert (project.template_version, project.status) == (r1, Status.ACTIVE_HEALTHY)
        assert not project.operations.filter(kind=Kind.RESYNC).exists()
        assert b"sidecar" not in (agent.root / project.ref / "runtime.toml").read_bytes()
    canary.refresh_from_db()
    assert canary.status == Status.ACTIVE_UNHEALTHY

    # The fix: the sidecar each runtime needs now listens.
    listeners = []
    for project in projects:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", project.port_block.first_port + 1))
        sock.listen(8)
        listeners.append(sock)
    try:
        status, record = migrate("--resume", str(record["rollout"]))
    finally:
        for sock in listeners:
            sock.close()

    assert status == 0, (record.get("state"), not_updated(record))
    assert record["state"] == "finished"
    by_ref = {p["ref"]: p["outcome"] for p in record["projects"]}
    assert by_ref.pop(canary.ref) == "unchanged"  # its files were pushed before it halted
    assert set(by_ref.values()) == {"updated"}
    for project in projects:
        project.refresh_from_db()
        assert project.template_version == bad
    retried = Rollout.objects.get(pk=record["rollout"]).projects.get(project=canary)
    assert retried.restarted and retried.operation.events.filter(step="restart").exists()


def test_it_refuses_a_second_rollout_of_a_template_while_one_is_unfinished(stack, template_root):
    projects = healthy_projects(1)
    r2 = new_revision(template_root, 'driver = "process"', 'driver = "process"\n# r2')
    rollout = rollouts.start_rollout(r2)
    assert rollouts.pause(rollout)

    with pytest.raises(rollouts.RolloutRefused, match="unfinished"):
        rollouts.start_rollout(r2)

    assert rollouts.cancel(rollout)
    wait_for(lambda: not rollout.projects.filter(outcome=Outcome.RUNNING).exists(), timeout=60, what="settled")
    assert Project.objects.get(pk=projects[0].pk).status == Status.ACTIVE_HEALTHY
