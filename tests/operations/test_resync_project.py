"""operations.resync.resync_project, the verb each rollout re-sync runs, on runtime folders kept in memory."""

import logging
import shutil
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from audit.models import AuditEntry
from operations.models import Outcome
from operations.resync import resync_project
from operations.runtime_files import FilesMismatch
from projects.models import Project
from templating.actions import sync_templates
from templating.models import TemplateVersion
from templating.render import sha256
from tests.factories import FakeRuntimeFiles, make_host, make_project, make_runtime_project
from tests.stack import RUNTIMES

pytestmark = pytest.mark.django_db


@pytest.fixture
def files():
    return FakeRuntimeFiles()


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


def provisioned(files, name="postgres", **fields) -> Project:
    version = TemplateVersion.objects.get(name=name, revision=1)
    project = make_runtime_project(version, first_port=20000, **fields)
    files.provision(project)
    return project


def r2_of_postgres(root):
    return change_template(root, "postgres", "runtime.toml", 'driver = "process"', 'driver = "process"\n# r2')


def test_it_updates_the_files_and_records_the_version_and_digests(root, files):
    project = provisioned(files)
    target = r2_of_postgres(root)

    result = resync_project(project, target, files)

    project.refresh_from_db()
    assert result.status == Outcome.UPDATED and project.template_version == target
    assert b"# r2" in files.folders[project.ref]["runtime.toml"]
    folder = files.folders[project.ref]
    assert project.file_digests == {name: sha256(folder[name]) for name in ("runtime.toml", "supabase.sql")}
    assert files.puts == [(project.ref, ["runtime.toml"], [])]  # supabase.sql did not change
    assert AuditEntry.objects.filter(action="project.resync").count() == 1


def test_it_changes_nothing_on_a_dry_run(root, files):
    project = provisioned(files)
    before = dict(files.folders[project.ref])
    target = r2_of_postgres(root)
    audit_before = AuditEntry.objects.count()

    result = resync_project(project, target, files, dry_run=True)

    project.refresh_from_db()
    assert result.status == Outcome.UPDATED and project.template_version.revision == 1
    assert files.puts == [] and files.folders[project.ref] == before
    assert AuditEntry.objects.count() == audit_before


def test_it_reports_a_conflict_with_a_diff_and_leaves_that_project_alone(root, files):
    project = provisioned(files)
    files.folders[project.ref]["runtime.toml"] += b"# tuned by hand\n"
    target = r2_of_postgres(root)

    result = resync_project(project, target, files)

    project.refresh_from_db()
    assert result.status == Outcome.CONFLICTED and project.template_version.revision == 1 and files.puts == []
    assert b"# tuned by hand" in files.folders[project.ref]["runtime.toml"]
    (conflict,) = result.plan.conflicts
    assert conflict.reason == "edited on the host and changed in the template"
    assert "+++ runtime.toml (postgres r2)\n" in conflict.diff and "+# r2\n" in conflict.diff


def test_it_leaves_seed_files_and_kept_edits_alone_and_adds_new_files(root, files):
    project = provisioned(files)
    files.folders[project.ref]["README.md"] = b"my notes\n"
    manifest = root / "postgres" / "manifest.toml"
    manifest.write_text(
        manifest.read_text() + '\n[files."postgresql.berth.conf"]\npolicy = "managed"\nrender = "copy"\n'
    )
    (root / "postgres" / "postgresql.berth.conf").write_text("# tuning\n")
    sync_templates(root)

    resync_project(project, TemplateVersion.objects.latest_of("postgres"), files)

    assert files.folders[project.ref]["README.md"] == b"my notes\n"
    assert files.folders[project.ref]["postgresql.berth.conf"] == b"# tuning\n"
    assert files.puts == [(project.ref, ["postgresql.berth.conf"], [])]


def test_it_refuses_a_project_whose_major_the_target_no_longer_supports(root, files):
    project = provisioned(files, postgres_major=14)
    target = change_template(root, "postgres", "manifest.toml", "[postgres.versions.14]\nlocal_major = 14\n", "")

    with pytest.raises(ValidationError, match="Postgres 14 is not supported by template postgres r2"):
        resync_project(project, target, files)
    project.refresh_from_db()
    assert project.template_version.revision == 1


def test_it_records_the_target_for_a_project_never_provisioned(root, files):
    r1 = TemplateVersion.objects.get(name="postgres", revision=1)
    project = make_project(template_version=r1)
    target = r2_of_postgres(root)

    resync_project(project, target, files)

    project.refresh_from_db()
    assert project.template_version == target and files.puts == []


def test_its_conflict_diffs_and_logs_never_hold_a_secret(root, files, caplog):
    caplog.set_level(logging.DEBUG)
    project = provisioned(files, name="supabase")
    # A conflict in the env file, whose diff context holds secrets.
    files.folders[project.ref][".env"] += b"EXTRA=1\n"
    target = change_template(
        root, "supabase", ".env", "# Symmetric encryption key", "# Symmetric (HS256) encryption key"
    )

    result = resync_project(project, target, files)

    diff = "".join(action.diff or "" for action in result.plan.conflicts)
    assert "+# Symmetric (HS256) encryption key" in diff
    assert " POSTGRES_PASSWORD=<secret:postgres_password>\n" in diff and " JWT_SECRET=<secret:jwt_secret>\n" in diff
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for key, value in project.secrets.items():
        if isinstance(value, str) and key != "dashboard_username":
            assert value not in diff, key
            assert value not in logged, key


def test_it_refuses_when_the_agent_reports_other_content_than_was_sent(root, files):
    project = provisioned(files)
    files.corrupting = True
    target = r2_of_postgres(root)
    with pytest.raises(FilesMismatch, match="the agent reports other content than was sent for: runtime.toml"):
        resync_project(project, target, files)
    project.refresh_from_db()
    assert project.template_version.revision == 1


def test_it_records_a_version_whose_files_render_the_same_as_unchanged(root, files):
    project = provisioned(files)
    target = change_template(root, "postgres", "manifest.toml", "# Postgres alone", "# Postgres, alone")

    result = resync_project(project, target, files)

    project.refresh_from_db()
    assert result.status == Outcome.UNCHANGED and project.template_version == target and files.puts == []


def test_it_refuses_a_project_whose_host_cannot_run_what_the_target_needs(root, files):
    host = make_host(capabilities={"driver": "process", "postgres_versions": [15]}, block_size=1)
    project = provisioned(files, host=host)
    # r2 runs major 15 from another local installation, one this host does not have.
    target = change_template(
        root,
        "postgres",
        "manifest.toml",
        "[postgres.versions.15]\nlocal_major = 15\n",
        "[postgres.versions.15]\nlocal_major = 16\n",
    )
    with pytest.raises(ValidationError, match=f"Postgres 15 cannot run on host {host.name}"):
        resync_project(project, target, files)
    project.refresh_from_db()
    assert project.template_version.revision == 1
    assert not files.puts
