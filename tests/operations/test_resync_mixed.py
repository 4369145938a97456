"""A re-sync plan that mixes a conflict with a clean change writes nothing: the runtime's files
stay byte-identical on the host (a real agent), so a runtime is never half on one version."""

import shutil
from pathlib import Path

import pytest

from operations import tasks
from operations.actions import request_operation
from operations.models import Kind, Outcome, State
from operations.resync import resync_project
from operations.runtime_files import AgentRuntimeFiles
from projects.models import Project
from templating.actions import sync_templates
from templating.models import TemplateVersion
from templating.render import render_project
from templating.resync import CONFLICT, WRITE
from tests.dashboard_helpers import PROCESS_CAPABILITIES, placed_project
from tests.factories import make_host
from tests.stack import RUNTIMES

pytestmark = pytest.mark.django_db

TWO_MANAGED_FILES = """
[files."a.conf"]
policy = "managed"

[files."b.conf"]
policy = "managed"
"""


def register(folder: Path, a: str, b: str) -> TemplateVersion:
    """The postgres template with two more managed files, registered as its next revision."""
    template = folder / "runtimes" / "postgres"
    if not template.exists():
        shutil.copytree(RUNTIMES / "postgres", template)
        with open(template / "manifest.toml", "a") as manifest:
            manifest.write(TWO_MANAGED_FILES)
    (template / "a.conf").write_text(a)
    (template / "b.conf").write_text(b)
    sync_templates(folder / "runtimes")
    return TemplateVersion.objects.latest_of("postgres")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def conflicted(agent, tmp_path):
    """A project pushed at r1 through the agent, a.conf edited on the host, and an r2 that changes
    a.conf (a conflict) and b.conf (a clean change)."""
    v1 = register(tmp_path, a="a = 1\n", b="b = 1\n")
    host = make_host(agent_url=agent.base_url, agent_token=agent.token, capabilities=PROCESS_CAPABILITIES)
    project = placed_project(v1, host)
    rendered = render_project(project, v1)
    AgentRuntimeFiles().put_files(project, rendered, sorted(rendered.files), remove=[])
    Project.objects.filter(pk=project.pk).update(file_digests=rendered.managed_digests)
    project.refresh_from_db()
    folder = agent.root / project.ref
    (folder / "a.conf").write_text("a = 1  # tuned by hand\n")
    v2 = register(tmp_path, a="a = 2\n", b="b = 2\n")
    return project, v1, v2, folder


def test_the_verb_writes_none_of_the_clean_changes(conflicted):
    project, v1, v2, folder = conflicted
    before = snapshot(folder)
    result = resync_project(project, v2, AgentRuntimeFiles())
    assert result.status == Outcome.CONFLICTED
    actions = {a.path: a.action for a in result.plan.actions}
    assert actions["a.conf"] == CONFLICT and actions["b.conf"] == WRITE, "the plan mixes both"
    assert snapshot(folder) == before
    project.refresh_from_db()
    assert project.template_version == v1


def test_the_resync_operation_writes_none_of_the_clean_changes(conflicted):
    project, v1, v2, folder = conflicted
    before = snapshot(folder)
    operation = request_operation(project, Kind.RESYNC, params={"template_version": v2.pk})
    tasks.run_operation(operation.pk)
    operation.refresh_from_db()
    assert operation.state == State.FAILED and operation.error_code == "conflict"
    assert snapshot(folder) == before
    assert Project.objects.get(pk=project.pk).template_version == v1
