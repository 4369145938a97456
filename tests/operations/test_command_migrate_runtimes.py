"""manage.py migrate_runtimes and resolve_conflicts without a worker: dry runs, controls, --json, exit codes.
The watched rollouts on real runtimes are in test_rollouts_e2e.py."""

import json
import shutil
from io import StringIO
from unittest import mock

import pytest
from django.core.management import CommandError, call_command

from operations import rollouts
from operations.management.commands.migrate_runtimes import Command
from operations.models import Outcome, Rollout
from templating.actions import sync_templates
from templating.models import TemplateVersion
from tests.factories import FakeRuntimeFiles, make_runtime_project
from tests.stack import RUNTIMES

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("enqueued")]


@pytest.fixture
def files(monkeypatch):
    fake = FakeRuntimeFiles()
    monkeypatch.setattr(Command, "runtime_files", staticmethod(lambda: fake))
    return fake


@pytest.fixture
def root(tmp_path):
    shutil.copytree(RUNTIMES / "postgres", tmp_path / "postgres")
    sync_templates(tmp_path)
    return tmp_path


def r2(root) -> TemplateVersion:
    path = root / "postgres" / "runtime.toml"
    path.write_text(path.read_text().replace('driver = "process"', 'driver = "process"\n# r2', 1))
    sync_templates(root)
    return TemplateVersion.objects.latest_of("postgres")


def provisioned(files, count=1):
    version = TemplateVersion.objects.get(name="postgres", revision=1)
    projects = []
    for _ in range(count):
        project = make_runtime_project(version, first_port=20000)
        files.provision(project)
        projects.append(project)
    return sorted(projects, key=lambda p: p.ref)


def run(*args) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("migrate_runtimes", *args, stdout=out, stderr=StringIO())
    except CommandError as error:
        return error.returncode, out.getvalue()
    return 0, out.getvalue()


def test_a_dry_run_plans_every_project_by_wave_and_changes_nothing(root, files):
    projects = provisioned(files, 3)
    r2(root)

    status, out = run("--template", "postgres", "--to", "latest", "--dry-run", "--json", "--wave-size", "2")

    assert status == 0
    record = json.loads(out)
    assert [(p["ref"], p["wave"], p["outcome"]) for p in record["projects"]] == [
        (projects[0].ref, 0, "updated"),
        (projects[1].ref, 1, "updated"),
        (projects[2].ref, 1, "updated"),
    ]
    assert files.puts == [] and not Rollout.objects.exists()


def test_a_dry_run_exits_3_on_conflicts_and_4_when_planning_fails(root, files):
    conflicted, broken = provisioned(files, 2)
    files.folders[conflicted.ref]["runtime.toml"] += b"# by hand\n"
    r2(root)
    status, out = run("--template", "postgres", "--to", "latest", "--dry-run", "--project", conflicted.ref)
    assert status == 3 and "runtime.toml: edited on the host and changed in the template" in out
    files.broken.add(broken.ref)
    status, out = run("--template", "postgres", "--to", "latest", "--dry-run")
    assert status == 4 and "unreachable" in out


def test_it_starts_a_rollout_that_the_worker_drives(root, files, enqueued, django_capture_on_commit_callbacks):
    provisioned(files, 2)
    target = r2(root)
    with mock.patch.object(Command, "_watch") as watch:
        status, out = run("--template", "postgres", "--to", "2", "--canary", "0", "--wave-size", "2", "--json")
    rollout = Rollout.objects.get()
    watch.assert_called_once()
    assert (rollout.target, rollout.canary, rollout.wave_size, rollout.restart) == (target, 0, 2, True)
    assert status == 0  # running, nothing failed yet
    assert json.loads(out)["rollout"] == rollout.pk


def test_pause_resume_and_cancel_move_the_rollout_and_say_so_in_the_exit_status(root, files):
    provisioned(files, 2)
    rollout = rollouts.start_rollout(r2(root))

    status, out = run("--pause", str(rollout.pk), "--json")
    assert status == 5 and json.loads(out)["state"] == "paused"
    status, _ = run("--pause", str(rollout.pk))
    assert status == 1  # a paused rollout cannot be paused
    status, out = run("--cancel", str(rollout.pk), "--json")
    assert status == 5 and {p["outcome"] for p in json.loads(out)["projects"]} == {Outcome.SKIPPED}
    status, _ = run("--resume", str(rollout.pk))
    assert status == 1


def test_show_prints_a_table_of_every_project(root, files):
    projects = provisioned(files, 2)
    rollout = rollouts.start_rollout(r2(root))
    status, out = run("--show", str(rollout.pk))
    assert status == 0  # running, nothing failed
    assert all(p.ref in out for p in projects) and "pending" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--template", "postgres"], "--template needs --to"),
        (["--template", "postgres", "--to", "7"], "template postgres has no version 7"),
        (["--template", "postgres", "--to", "newest"], "--to takes 'latest' or a revision number"),
        (["--template", "postgres", "--to", "1"], "no postgres project to move"),
        (["--template", "postgres", "--to", "1", "--project", "nosuchproject"], "no live postgres project"),
        (["--resume", "999"], "no rollout #999"),
    ],
)
def test_it_refuses_bad_requests_with_a_clear_message(root, args, message):
    with pytest.raises(CommandError, match=message) as refused:
        call_command("migrate_runtimes", *args, stdout=StringIO())
    assert refused.value.returncode == 1


def test_resolve_conflicts_refuses_a_project_with_no_conflict(root, files):
    (project,) = provisioned(files)
    with pytest.raises(CommandError, match=f"{project.ref} has no conflicted rollout to resolve"):
        call_command("resolve_conflicts", "--project", project.ref, "--keep-local", stdout=StringIO())
    with pytest.raises(CommandError, match="no project nosuchproject"):
        call_command("resolve_conflicts", "--project", "nosuchproject", "--keep-local", stdout=StringIO())
