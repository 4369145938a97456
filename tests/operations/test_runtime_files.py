"""One push-and-verify on the runtime files gateway (operations.runtime_files): every writer
of a runtime's files puts them and checks what the host then holds, the same way."""

import pytest

from operations.conflicts import KEEP_LOCAL, resolve_project
from operations.runtime_files import FilesMismatch
from templating.actions import sync_templates
from templating.models import TemplateVersion
from templating.render import RenderedRuntime, sha256
from tests.dashboard_helpers import placed_project, process_host, register_template
from tests.factories import FakeRuntimeFiles, make_project

pytestmark = pytest.mark.django_db


def rendered(**files) -> RenderedRuntime:
    contents = {path: content.encode() for path, (content, _) in files.items()}
    return RenderedRuntime(
        files=contents,
        policies={path: policy for path, (_, policy) in files.items()},
        user_paths=(),
        digests={path: sha256(content) for path, content in contents.items()},
    )


def test_a_push_writes_the_files_and_returns_what_the_host_holds():
    project, files = make_project(), FakeRuntimeFiles()
    runtime = rendered(**{"runtime.toml": ("port = 1\n", "managed"), "seed.sql": ("-- seed\n", "seed")})
    pushed = files.push(project, runtime, ["runtime.toml", "seed.sql"])
    assert pushed == runtime.digests
    assert files.folders[project.ref] == runtime.files


def test_a_push_whose_managed_files_come_back_different_fails_naming_them():
    project, files = make_project(), FakeRuntimeFiles()
    files.corrupting = True
    runtime = rendered(**{"b.toml": ("b", "managed"), "a.toml": ("a", "managed"), "seed.sql": ("s", "seed")})
    with pytest.raises(FilesMismatch, match="other content than was sent for: a.toml, b.toml$") as refused:
        files.push(project, runtime, ["a.toml", "b.toml", "seed.sql"])
    assert refused.value.paths == ["a.toml", "b.toml"] and refused.value.code == "files"


def test_a_seed_file_the_host_already_holds_otherwise_is_not_a_mismatch():
    project, files = make_project(), FakeRuntimeFiles()
    files.folders[project.ref] = {"seed.sql": b"-- the user's own"}
    runtime = rendered(**{"seed.sql": ("-- seed\n", "seed")})
    files.put_files = lambda *args, **kwargs: {"seed.sql": sha256(b"-- the user's own")}
    assert files.push(project, runtime, ["seed.sql"]) == {"seed.sql": sha256(b"-- the user's own")}


def test_a_resolution_checks_its_push_like_every_other_writer(tmp_path):
    old = register_template(tmp_path)
    project = placed_project(old, process_host())
    files = FakeRuntimeFiles()
    files.provision(project)
    runtime_toml = tmp_path / "runtimes" / "postgres" / "runtime.toml"
    runtime_toml.write_text(runtime_toml.read_text() + "# r2\n")
    sync_templates(tmp_path / "runtimes")
    target = TemplateVersion.objects.latest_of("postgres")
    files.corrupting = True
    with pytest.raises(FilesMismatch):
        resolve_project(project, target, KEEP_LOCAL, files, label="test")
    project.refresh_from_db()
    assert project.template_version == old
