"""Drift: managed files edited on their hosts ("locally modified"), recorded wherever Berth reads
the host's digests (re-sync, the dashboard's plan) and by the periodic check against a real agent."""

import socket
import time
from pathlib import Path
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import Schedule

from agent.client import AgentClient
from audit.models import AuditEntry
from hosts.models import RuntimeHost
from operations.drift import check_all
from operations.models import Kind, Operation
from operations.resync import resync_project
from operations.runtime_files import AgentRuntimeFiles
from projects.actions import record_drift, record_drifts
from projects.models import DesiredState, Project
from templating.actions import sync_templates
from templating.models import TemplateVersion
from templating.render import render_project, sha256
from tests.factories import FakeRuntimeFiles, make_project, make_runtime_project
from tests.stack import RUNTIMES

pytestmark = pytest.mark.django_db


def test_it_records_drifted_paths_and_audits_only_a_change():
    project = make_project(file_digests={"a.toml": "1", "b.toml": "2", "c.toml": "3"})
    assert record_drift(project, {"a.toml": "1", "b.toml": "edited", "c.toml": None}) == ["b.toml", "c.toml"]
    project.refresh_from_db()
    assert project.drifted_paths == ["b.toml", "c.toml"] and project.drift_checked_at is not None
    entry = AuditEntry.objects.get(action="project.drift")
    assert entry.detail == {"drifted": ["b.toml", "c.toml"], "before": []} and entry.actor_label == "drift check"

    record_drift(project, {"a.toml": "1", "b.toml": "edited", "c.toml": None})
    assert AuditEntry.objects.filter(action="project.drift").count() == 1
    record_drift(project, {"a.toml": "1", "b.toml": "2", "c.toml": "3"})
    project.refresh_from_db()
    assert project.drifted_paths == [] and AuditEntry.objects.filter(action="project.drift").count() == 2


def test_it_records_nothing_when_the_recorded_digests_changed_since_they_were_read():
    project = make_project(file_digests={"a.toml": "1"})
    stale = type(project).objects.get(pk=project.pk)
    type(project).objects.filter(pk=project.pk).update(file_digests={"a.toml": "2"})  # a re-sync landed meanwhile
    assert record_drift(stale, {"a.toml": "2"}) is None
    project.refresh_from_db()
    assert project.drifted_paths == [] and project.drift_checked_at is None


def test_it_records_many_answers_with_as_many_queries_for_30_projects_as_for_3():
    def answers(count):
        projects = [make_project(file_digests={"a.toml": "1"}) for _ in range(count)]
        return [(project, {"a.toml": "1"}) for project in projects]

    few, many = answers(3), answers(30)
    counts = []
    for batch in (few, many):
        with CaptureQueriesContext(connection) as captured:
            assert record_drifts(batch) == len(batch)
        counts.append(len(captured))
    assert counts[0] == counts[1]
    assert not Project.objects.filter(drift_checked_at=None).exists()


def test_it_records_many_answers_each_as_record_drift_would():
    unchanged, edited, stale = (make_project(file_digests={"a.toml": "1"}) for _ in range(3))
    Project.objects.filter(pk=stale.pk).update(file_digests={"a.toml": "2"})  # a re-sync landed meanwhile
    answers = [(unchanged, {"a.toml": "1"}), (edited, {"a.toml": "edited"}), (stale, {"a.toml": "2"})]
    assert record_drifts(answers) == 2
    for project in (unchanged, edited, stale):
        project.refresh_from_db()
    assert unchanged.drifted_paths == [] and unchanged.drift_checked_at is not None
    assert edited.drifted_paths == ["a.toml"] and edited.drift_checked_at == unchanged.drift_checked_at
    assert stale.drift_checked_at is None
    entry = AuditEntry.objects.get(action="project.drift")
    assert entry.project_id == edited.pk and entry.detail == {"drifted": ["a.toml"], "before": []}


# --- re-sync records drift ----------------------------------------------------------------


@pytest.fixture
def r1(tmp_path):
    import shutil

    shutil.copytree(RUNTIMES / "postgres", tmp_path / "postgres")
    sync_templates(tmp_path)
    return TemplateVersion.objects.latest_of("postgres")


def new_revision(root: Path, path: str, text: str) -> TemplateVersion:
    (root / "postgres" / path).write_text((root / "postgres" / path).read_text() + text)
    sync_templates(root)
    return TemplateVersion.objects.latest_of("postgres")


@pytest.fixture
def files():
    return FakeRuntimeFiles()


def edited_project(files, r1):
    project = make_runtime_project(r1)
    files.provision(project)
    files.folders[project.ref]["runtime.toml"] += b"# edited on the host\n"
    return project


def test_a_resync_that_keeps_a_local_edit_records_it_as_drift(files, r1, tmp_path):
    project = edited_project(files, r1)
    target = new_revision(tmp_path, "README.md", "more\n")
    assert resync_project(project, target, files).status == "unchanged"
    project.refresh_from_db()
    assert project.template_version == target and project.drifted_paths == ["runtime.toml"]


def test_a_conflicting_resync_records_the_drift_that_stopped_it(files, r1, tmp_path):
    project = edited_project(files, r1)
    target = new_revision(tmp_path, "runtime.toml", "# r2\n")
    assert resync_project(project, target, files).status == "conflicted"
    project.refresh_from_db()
    assert project.template_version == r1 and project.drifted_paths == ["runtime.toml"]


def test_a_resync_that_replaces_files_clears_their_drift(files, r1, tmp_path):
    project = make_runtime_project(r1, drifted_paths=["runtime.toml"])
    files.provision(project)
    target = new_revision(tmp_path, "runtime.toml", "# r2\n")
    assert resync_project(project, target, files).status == "updated"
    project.refresh_from_db()
    assert project.drifted_paths == [] and project.drift_checked_at is not None


def test_a_dry_run_records_nothing(files, r1, tmp_path):
    project = edited_project(files, r1)
    resync_project(project, new_revision(tmp_path, "runtime.toml", "# r2\n"), files, dry_run=True)
    project.refresh_from_db()
    assert project.drift_checked_at is None and not AuditEntry.objects.filter(action="project.drift").exists()


# --- the periodic check ---------------------------------------------------------------------


def test_the_drift_check_runs_as_a_schedule():
    assert Schedule.objects.filter(name="berth-drift-check", func="operations.tasks.check_drift").exists()


def pushed_project(host, version, *, first_port, **fields):
    """A project whose rendered files the real agent holds, with their digests recorded."""
    project = make_runtime_project(version, host=host, first_port=first_port, **fields)
    rendered = render_project(project, version)
    digests = AgentRuntimeFiles().put_files(project, rendered, sorted(rendered.files), remove=[])
    project.file_digests = {path: digests[path] for path in rendered.managed_digests}
    project.save(update_fields=["file_digests"])
    return project


@pytest.mark.postgres
def test_it_asks_the_agent_and_records_files_edited_on_the_host(agent):
    sync_templates()
    version = TemplateVersion.objects.latest_of("postgres")
    host = RuntimeHost.objects.create(
        name="local", agent_url=agent.base_url, agent_token=agent.token, port_range_start=43000, port_range_end=43099
    )
    edited = pushed_project(host, version, first_port=43000)
    clean = pushed_project(host, version, first_port=43010)
    busy = pushed_project(host, version, first_port=43020)
    stopped = pushed_project(host, version, first_port=43030, desired_state=DesiredState.STOPPED)
    Operation.objects.create(project=busy, kind=Kind.RESTART, deadline=timezone.now())
    for project in (edited, busy, stopped):
        with open(agent.root / project.ref / "runtime.toml", "a") as runtime_toml:
            runtime_toml.write("# tuned by hand\n")

    assert check_all() == 2

    for project in (edited, clean, busy, stopped):
        project.refresh_from_db()
    assert edited.drifted_paths == ["runtime.toml"]
    assert clean.drifted_paths == [] and clean.drift_checked_at is not None
    assert busy.drift_checked_at is None  # an operation in flight may be changing its files
    assert stopped.drift_checked_at is None
    assert sha256((agent.root / clean.ref / "runtime.toml").read_bytes()) == clean.file_digests["runtime.toml"]


def test_it_gives_up_on_a_host_whose_agent_does_not_answer_after_one_call(r1):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    host = RuntimeHost.objects.create(
        name="gone",
        agent_url=f"http://127.0.0.1:{closed_port}",
        agent_token="t" * 20,
        port_range_start=44000,
        port_range_end=44099,
    )
    for first_port in (44000, 44010):
        make_runtime_project(r1, host=host, first_port=first_port, file_digests={"runtime.toml": "x"})
    with mock.patch("hosts.agents.AgentClient", wraps=AgentClient) as clients:
        assert check_all() == 0
    assert clients.call_count == 1


def test_a_round_ends_within_its_budget_however_long_one_call_may_take(r1, settings, silent_agent):
    settings.BERTH_OPERATION_DEADLINE = 2  # the round's budget
    settings.BERTH_AGENT_CALL_DEADLINE = 10  # one call may take longer than the whole round
    settings.BERTH_HOST_THREADS = 1  # hosts one after another: the second one's turn comes after the budget
    for n, first_port in enumerate((24100, 24120)):
        host = RuntimeHost.objects.create(
            name=f"silent{n}",
            agent_url=silent_agent.url,
            agent_token="t" * 20,
            port_range_start=first_port,
            port_range_end=first_port + 19,
        )
        make_runtime_project(r1, host=host, first_port=first_port, file_digests={"runtime.toml": "x"})
    started = time.monotonic()
    with mock.patch("hosts.agents.AgentClient", wraps=AgentClient) as clients:
        assert check_all() == 0
    took = time.monotonic() - started
    assert took <= 2 + 2, f"the round took {took:.1f}s"
    assert clients.call_count == 1, "no call starts once the budget is spent"
