import logging
import shutil
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit.models import AuditEntry
from operations.management.commands.migrate_runtimes import Command
from operations.models import Kind, Operation
from projects.models import DesiredState, Project
from templating.actions import sync_templates
from templating.models import TemplateVersion
from templating.render import sha256
from tests.factories import FakeRuntimeFiles, make_host, make_project, make_runtime_project

RUNTIMES = Path(__file__).resolve().parent.parent / "runtimes"

pytestmark = pytest.mark.django_db


@pytest.fixture
def files(monkeypatch):
    fake = FakeRuntimeFiles()
    monkeypatch.setattr(Command, "runtime_files", staticmethod(lambda: fake))
    return fake


@pytest.fixture
def root(tmp_path):
    for name in ("supabase", "postgres"):
        shutil.copytree(RUNTIMES / name, tmp_path / name)
    sync_templates(tmp_path)
    return tmp_path


def change_template(root: Path, name: str, path: str, old: str, new: str) -> TemplateVersion:
    target = root / name / path
    target.write_text(target.read_text().replace(old, new, 1))
    sync_templates(root)
    return TemplateVersion.objects.latest_of(name)


def migrate(*args) -> str:
    out = StringIO()
    call_command("migrate_runtimes", *args, stdout=out)
    return out.getvalue()


def provisioned(files, name="postgres", **fields) -> Project:
    version = TemplateVersion.objects.get(name=name, revision=1)
    project = make_runtime_project(version, first_port=20000, **fields)
    files.provision(project)
    return project


def r2_of_postgres(root):
    return change_template(root, "postgres", "runtime.toml", 'driver = "process"', 'driver = "process"\n# r2')


def test_it_updates_every_project_records_the_version_and_restarts_running_ones(root, files):
    running = provisioned(files)
    stopped = provisioned(files, desired_state=DesiredState.STOPPED)
    target = r2_of_postgres(root)

    out = migrate("--template", "postgres", "--to", "latest")

    for project in (running, stopped):
        project.refresh_from_db()
        assert project.template_version == target
        assert b"# r2" in files.folders[project.ref]["runtime.toml"]
        assert project.file_digests == {"runtime.toml": sha256(files.folders[project.ref]["runtime.toml"])}
    assert [(ref, paths) for ref, paths, _ in files.puts] == sorted(
        [(running.ref, ["runtime.toml"]), (stopped.ref, ["runtime.toml"])]
    )
    assert Operation.objects.filter(project=running, kind=Kind.RESTART).count() == 1
    assert not Operation.objects.filter(project=stopped).exists()
    assert AuditEntry.objects.filter(action="project.resync").count() == 2
    assert "2 updated, 0 unchanged, 0 conflicted, 0 failed, 0 already on r2 (skipped)" in out
    assert "restart queued" in out


def test_it_changes_nothing_on_a_dry_run(root, files):
    project = provisioned(files)
    before = dict(files.folders[project.ref])
    r2_of_postgres(root)
    audit_before = AuditEntry.objects.count()

    out = migrate("--template", "postgres", "--to", "latest", "--dry-run")

    project.refresh_from_db()
    assert project.template_version.revision == 1
    assert files.puts == [] and files.folders[project.ref] == before
    assert not Operation.objects.exists() and AuditEntry.objects.count() == audit_before
    assert "dry run: nothing will change" in out and f"{project.ref}  r1    r2  updated" in out


def test_it_changes_nothing_on_a_second_run(root, files):
    provisioned(files)
    provisioned(files)
    r2_of_postgres(root)
    migrate("--template", "postgres", "--to", "latest")
    puts, operations = len(files.puts), Operation.objects.count()

    out = migrate("--template", "postgres", "--to", "latest")

    assert len(files.puts) == puts and Operation.objects.count() == operations
    assert "Migrating 0 postgres project(s) to r2" in out
    assert "0 updated, 0 unchanged, 0 conflicted, 0 failed, 2 already on r2 (skipped)" in out


def test_it_reports_a_conflict_with_a_diff_and_leaves_that_project_alone(root, files):
    project = provisioned(files)
    files.folders[project.ref]["runtime.toml"] += b"# tuned by hand\n"
    r2_of_postgres(root)

    out = migrate("--template", "postgres", "--to", "latest")

    project.refresh_from_db()
    assert project.template_version.revision == 1 and files.puts == []
    assert b"# tuned by hand" in files.folders[project.ref]["runtime.toml"]
    assert f"Conflicts in {project.ref} (nothing was changed):" in out
    assert "runtime.toml: edited on the host and changed in the template" in out
    assert "+++ runtime.toml (postgres r2)\n" in out and "+# r2\n" in out
    assert "0 updated, 0 unchanged, 1 conflicted, 0 failed" in out


def test_it_leaves_seed_files_and_kept_edits_alone_and_adds_new_files(root, files):
    project = provisioned(files)
    files.folders[project.ref]["README.md"] = b"my notes\n"
    manifest = root / "postgres" / "manifest.toml"
    manifest.write_text(
        manifest.read_text() + '\n[files."postgresql.berth.conf"]\npolicy = "managed"\nrender = "copy"\n'
    )
    (root / "postgres" / "postgresql.berth.conf").write_text("# tuning\n")
    sync_templates(root)

    migrate("--template", "postgres", "--to", "latest")

    assert files.folders[project.ref]["README.md"] == b"my notes\n"
    assert files.folders[project.ref]["postgresql.berth.conf"] == b"# tuning\n"
    assert files.puts == [(project.ref, ["postgresql.berth.conf"], [])]


def test_it_exits_non_zero_when_a_project_fails_after_finishing_the_others(root, files):
    healthy = provisioned(files)
    broken = provisioned(files)
    files.broken.add(broken.ref)
    r2_of_postgres(root)

    out = StringIO()
    with pytest.raises(CommandError, match="1 project\\(s\\) failed"):
        call_command("migrate_runtimes", "--template", "postgres", "--to", "latest", "--batch-size", "1", stdout=out)

    healthy.refresh_from_db()
    broken.refresh_from_db()
    assert healthy.template_version.revision == 2 and broken.template_version.revision == 1
    assert "Batch 1/2" in out.getvalue() and "Batch 2/2" in out.getvalue()
    assert "unreachable" in out.getvalue() and "1 updated, 0 unchanged, 0 conflicted, 1 failed" in out.getvalue()


def test_it_fails_a_project_whose_major_the_target_no_longer_supports(root, files):
    project = provisioned(files, postgres_major=14)
    change_template(root, "postgres", "manifest.toml", "[postgres.versions.14]\nlocal_major = 14\n", "")

    with pytest.raises(CommandError):
        out = StringIO()
        call_command("migrate_runtimes", "--template", "postgres", "--to", "latest", stdout=out)
    assert "Postgres 14 is not supported by template postgres r2; supported: 15, 16, 17, 18" in out.getvalue()
    project.refresh_from_db()
    assert project.template_version.revision == 1


def test_it_records_the_target_for_a_project_never_provisioned(root, files):
    r1 = TemplateVersion.objects.get(name="postgres", revision=1)
    project = make_project(template_version=r1)
    r2_of_postgres(root)

    migrate("--template", "postgres", "--to", "2")

    project.refresh_from_db()
    assert project.template_version.revision == 2 and files.puts == []


def test_it_migrates_only_the_named_projects_and_refuses_unknown_refs_and_revisions(root, files):
    chosen = provisioned(files)
    other = provisioned(files)
    r2_of_postgres(root)

    migrate("--template", "postgres", "--to", "latest", "--project", chosen.ref)

    chosen.refresh_from_db()
    other.refresh_from_db()
    assert (chosen.template_version.revision, other.template_version.revision) == (2, 1)
    with pytest.raises(CommandError, match="no live postgres project with ref: nosuchproject"):
        migrate("--template", "postgres", "--to", "latest", "--project", "nosuchproject")
    with pytest.raises(CommandError, match="template postgres has no version 7"):
        migrate("--template", "postgres", "--to", "7")


def test_it_never_logs_or_prints_a_secret(root, files, caplog):
    caplog.set_level(logging.DEBUG)
    project = provisioned(files, name="supabase")
    # A conflict in the env file, whose diff context holds secrets.
    files.folders[project.ref][".env"] += b"EXTRA=1\n"
    change_template(root, "supabase", ".env", "# Symmetric encryption key", "# Symmetric (HS256) encryption key")
    stdout = StringIO()

    call_command("migrate_runtimes", "--template", "supabase", "--to", "latest", stdout=stdout)

    out = stdout.getvalue()
    assert "Conflicts in" in out and "+# Symmetric (HS256) encryption key" in out
    assert " POSTGRES_PASSWORD=<secret:postgres_password>\n" in out and " JWT_SECRET=<secret:jwt_secret>\n" in out
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert logged  # sync and the command did log
    for key, value in project.secrets.items():
        if isinstance(value, str) and key != "dashboard_username":
            assert value not in out, key
            assert value not in logged, key


def test_it_fails_a_project_when_the_agent_reports_other_content_than_was_sent(root, files):
    project = provisioned(files)
    files.corrupting = True
    r2_of_postgres(root)
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("migrate_runtimes", "--template", "postgres", "--to", "latest", stdout=out)
    assert "the agent reports other content than was sent for: runtime.toml" in out.getvalue()
    project.refresh_from_db()
    assert project.template_version.revision == 1


def test_it_refuses_a_project_with_an_operation_in_progress(root, files):
    project = provisioned(files)
    Operation.objects.create(project=project, kind=Kind.START, deadline=timezone.now() + timedelta(minutes=5))
    r2_of_postgres(root)
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("migrate_runtimes", "--template", "postgres", "--to", "latest", stdout=out)
    assert "has an operation in progress; run again once it finishes" in out.getvalue()
    assert files.puts == []


def test_it_records_a_version_whose_files_render_the_same_as_unchanged_without_a_restart(root, files):
    project = provisioned(files)
    change_template(root, "postgres", "manifest.toml", "# Postgres alone", "# Postgres, alone")

    out = migrate("--template", "postgres", "--to", "latest")

    project.refresh_from_db()
    assert project.template_version.revision == 2 and files.puts == []
    assert not Operation.objects.exists()
    assert "0 updated, 1 unchanged, 0 conflicted, 0 failed" in out


def test_it_fails_a_project_whose_host_cannot_run_what_the_target_needs(root, files):
    host = make_host(capabilities={"driver": "process", "postgres_versions": [15]}, block_size=1)
    project = provisioned(files, host=host)
    # r2 runs major 15 from another local installation, one this host does not have.
    change_template(
        root,
        "postgres",
        "manifest.toml",
        "[postgres.versions.15]\nlocal_major = 15\n",
        "[postgres.versions.15]\nlocal_major = 16\n",
    )
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("migrate_runtimes", "--template", "postgres", "--to", "latest", stdout=out)
    assert f"Postgres 15 cannot run on host {host.name}" in out.getvalue()
    project.refresh_from_db()
    assert project.template_version.revision == 1
    assert not files.puts
