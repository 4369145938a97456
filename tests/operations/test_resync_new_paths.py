"""Re-sync and a file a new template revision adds (docs/architecture.md, Templates: Re-sync):
new files are added unless the host holds other content there, which is a conflict, and any
conflict leaves the whole project untouched. The host here already holds the user's own file
at the path the new revision adds."""

import shutil
from pathlib import Path

import pytest

from operations.models import Outcome
from operations.resync import resync_project
from templating.actions import sync_templates
from templating.models import TemplateVersion
from templating.render import sha256
from tests.factories import FakeRuntimeFiles, make_runtime_project
from tests.stack import RUNTIMES

pytestmark = pytest.mark.django_db

NEW_FILE = b"# pool settings from the template\nmax_connections = 50\n"
USERS_FILE = b"# my own settings, written by hand\nmax_connections = 500\n"


@pytest.fixture
def root(tmp_path):
    shutil.copytree(RUNTIMES / "postgres", tmp_path / "postgres")
    sync_templates(tmp_path)
    return tmp_path


def add_file(root: Path) -> TemplateVersion:
    """The next revision of `postgres` adds a managed file, pool.conf, and changes runtime.toml."""
    (root / "postgres" / "pool.conf").write_bytes(NEW_FILE)
    manifest = root / "postgres" / "manifest.toml"
    manifest.write_text(manifest.read_text() + '\n[files."pool.conf"]\npolicy = "managed"\n')
    runtime = root / "postgres" / "runtime.toml"
    runtime.write_text(runtime.read_text().replace('driver = "process"', 'driver = "process"\n# r2', 1))
    sync_templates(root)
    return TemplateVersion.objects.latest_of("postgres")


@pytest.fixture
def files():
    return FakeRuntimeFiles()


def provisioned(files):
    project = make_runtime_project(TemplateVersion.objects.get(name="postgres", revision=1))
    files.provision(project)
    return project


def test_it_never_overwrites_the_users_own_file_at_a_path_the_new_revision_adds(root, files):
    project = provisioned(files)
    files.folders[project.ref]["pool.conf"] = USERS_FILE
    before = dict(files.folders[project.ref])
    target = add_file(root)

    result = resync_project(project, target, files)

    assert result.status == Outcome.CONFLICTED
    (conflict,) = result.plan.conflicts
    assert conflict.path == "pool.conf"
    assert files.folders[project.ref] == before  # nothing written, runtime.toml's change neither
    assert files.puts == []
    project.refresh_from_db()
    assert project.template_version.revision == 1


def test_it_adds_the_new_file_where_the_host_holds_none(root, files):
    project = provisioned(files)
    target = add_file(root)

    result = resync_project(project, target, files)

    assert result.status == Outcome.UPDATED
    assert files.folders[project.ref]["pool.conf"] == NEW_FILE
    project.refresh_from_db()
    assert project.template_version == target
    assert project.file_digests["pool.conf"] == sha256(NEW_FILE)


def test_a_host_that_already_holds_the_new_file_is_not_a_conflict(root, files):
    project = provisioned(files)
    files.folders[project.ref]["pool.conf"] = NEW_FILE
    target = add_file(root)

    result = resync_project(project, target, files)

    assert result.status == Outcome.UPDATED
    assert not result.plan.conflicts
