"""Secrets around conflict resolution (docs/architecture.md, Rollouts: Conflicts; Management
API: TLS), with files that really hold them:

- the three-way view replaces every secret value by its name, the project's TLS private key
  too, which a diff shows line by line (PEM);
- take-template's one files request names every secret-bearing file of the runtime, written
  by it or not, so the agent keeps them all private.
"""

import shutil
from pathlib import Path
from unittest import mock

import pytest

from operations.conflicts import TAKE_TEMPLATE, resolve_project, three_way
from operations.runtime_files import AgentRuntimeFiles
from projects.models import Project
from templating.actions import sync_templates
from templating.models import TemplateVersion
from templating.render import render_project, sha256
from templating.secrets import generate_project_secrets, generate_tls_secrets
from tests.factories import FakeRuntimeFiles, make_runtime_project
from tests.stack import RUNTIMES

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(tmp_path):
    for name in ("supabase", "postgres"):
        shutil.copytree(RUNTIMES / name, tmp_path / name)
    sync_templates(tmp_path)
    return tmp_path


def change_template(root: Path, name: str, path: str, old: str, new: str) -> TemplateVersion:
    target = root / name / path
    assert old in target.read_text()
    target.write_text(target.read_text().replace(old, new, 1))
    sync_templates(root)
    return TemplateVersion.objects.latest_of(name)


def provisioned(files: FakeRuntimeFiles, name: str, **secrets) -> Project:
    project = make_runtime_project(TemplateVersion.objects.get(name=name, revision=1))
    project.secrets = {**generate_project_secrets(now=1_700_000_000), **secrets}
    project.save(update_fields=["secrets"])
    files.provision(project)
    return project


def key_lines(pem: str) -> list[str]:
    return [line for line in pem.splitlines() if not line.startswith("-----")]


def test_the_three_way_view_masks_the_tls_private_key_line_by_line(root):
    files = FakeRuntimeFiles()
    project = provisioned(files, "postgres", **generate_tls_secrets("ref", "example.test"))
    key = project.secrets["tls_key"]
    assert len(key_lines(key)) >= 2
    # The host's edit and the template's change both sit beside the key, so every diff shows its lines.
    folder = files.folders[project.ref]
    folder["runtime.toml"] = folder["runtime.toml"].replace(b'tls_key = """', b'# host edit\ntls_key = """')
    key_end = '{{ secrets.tls_key }}"""'
    target = change_template(root, "postgres", "runtime.toml", key_end, key_end + "\n# r2")

    with mock.patch("operations.conflicts.AgentRuntimeFiles", lambda deadline: files):
        (view,) = three_way(project, target, deadline=5)

    assert view.path == "runtime.toml"
    assert "# host edit" in view.host_diff and "# r2" in view.template_diff
    shown = "\n".join([view.pushed, view.host, view.template, view.host_diff, view.template_diff])
    assert "<secret:tls_key>" in view.host_diff and "<secret:tls_key>" in view.template_diff
    for line in key_lines(key):
        assert line not in shown
    assert project.secrets["postgres_password"] not in shown


class RecordingAgent:
    """An agent's files calls on a folder kept in memory; records each files request."""

    def __init__(self, files: FakeRuntimeFiles, project: Project):
        self.files, self.project, self.requests = files, project, []

    def digests(self, ref, paths):
        return self.files.digests(self.project, paths)

    def put_files(self, ref, files, user_paths, remove, private_paths, backup, backup_suffix):
        self.requests.append({"paths": [spec.path for spec in files], "private": private_paths, "backup": backup})
        folder = self.files.folders[ref]
        for path in backup:
            folder[f"{path}.{backup_suffix}"] = folder[path]
        for spec in files:
            folder[spec.path] = spec.content
        return {spec.path: sha256(folder[spec.path]) for spec in files}


def test_take_template_names_every_secret_bearing_file_in_its_files_request(root):
    files = FakeRuntimeFiles()
    project = provisioned(files, "supabase")
    path = "volumes/logs/vector.yml"
    folder = files.folders[project.ref]
    folder[path] = folder[path] + b"# host edit\n"
    target = change_template(root, "supabase", path, "\n", "\n# r2\n")
    private = render_project(project, target).private
    assert path not in private and private  # the conflict is in a file without secrets; others hold some

    agent = RecordingAgent(files, project)
    gateway = AgentRuntimeFiles(deadline=5)
    with mock.patch.object(gateway, "_client", lambda _project: agent):
        resolution = resolve_project(project, target, TAKE_TEMPLATE, gateway, label="test")

    (request,) = agent.requests
    assert request["paths"] == [path]
    assert request["backup"] == [path]
    assert request["private"] == sorted(private)
    (backup,) = resolution.backups
    assert backup.startswith(f"{path}.backup-")
    assert folder[backup].endswith(b"# host edit\n")
