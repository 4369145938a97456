"""The operation runner's failure policy, with a scripted agent in place of a real one."""

import hashlib
import itertools
from unittest import mock

import pytest

from agent.api import ArchiverStatus, CancelReply, CommandReply, PortCheck, ProbeResult, RuntimeStatus
from agent.client import AgentUnreachable
from operations import tasks
from operations.actions import request_operation, retry_project
from operations.creation import create_project
from operations.health import refresh_all
from operations.models import Kind, State
from ports.models import PortBlock
from projects.models import Project, Status
from tests.standin_agent import agent_info

pytestmark = pytest.mark.django_db


class ScriptedAgent:
    """Answers like an agent; `probe_status` decides what every probe reports."""

    def __init__(self, probe_status="pass", server_major=15, unreachable=False):
        self.probe_status, self.server_major, self.unreachable = probe_status, server_major, unreachable
        self.runtime_state = "running"  # what status reports until a down or delete
        self.calls = []

    def __call__(self, host, *, deadline, operation=None):
        return self

    def _record(self, name, *args):
        if self.unreachable:
            raise AgentUnreachable("connection refused")
        self.calls.append((name, *args))

    def info(self):
        self._record("info")
        return agent_info(ephemeral_ports=None)

    def check_ports(self, ports):
        self._record("check_ports")
        return PortCheck(free=list(ports), taken=[])

    def put_files(self, ref, files, user_paths=(), remove=(), private_paths=(), backup=(), backup_suffix=None):
        self._record("put_files", ref, tuple(private_paths))
        return {f.path: hashlib.sha256(f.content).hexdigest() for f in files}

    def up(self, ref, deadline_s=None):
        self._record("up", ref)
        self.runtime_state = "running"
        return CommandReply("running", "")

    def down(self, ref, deadline_s=None):
        self._record("down", ref)
        self.runtime_state = "stopped"
        return CommandReply("stopped", "")

    def cancel(self, ref, operation, wait_s=5.0):
        self._record("cancel", ref, operation)
        return CancelReply(cancelled=False, running=False)

    def status(self, ref):
        self._record("status", ref)
        return RuntimeStatus(self.runtime_state, "scripted")

    def restart(self, ref, deadline_s=None):
        self._record("restart", ref)
        return CommandReply("running", "")

    def delete(self, ref, purge_data=False, deadline_s=None):
        self._record("delete", ref, purge_data)
        return "absent"

    def backup_archiving(self, ref, repository, archive_timeout_s=60, deadline_s=None):
        self._record("backup_archiving", ref)
        return ArchiverStatus(enabled=True, url=repository.url, archive_timeout_s=archive_timeout_s)

    def health(self, probes, deadline_s=None):
        self._record("health")
        major = self.server_major if self.probe_status == "pass" else None
        return [ProbeResult(p.name, self.probe_status, "scripted", major) for p in probes]

    def called(self, name):
        return [c for c in self.calls if c[0] == name]


@pytest.fixture
def agent_script(settings):
    settings.BERTH_HEALTH_POLL_INITIAL = 0.01
    settings.BERTH_HEALTH_POLL_MAX = 0.02
    script = ScriptedAgent()
    with mock.patch("hosts.agents.client_for", script), mock.patch("django_q.tasks.async_task"):
        yield script


_names = itertools.count(1)


def provision(host, **kwargs):
    # Names are unique within an organization; these all land in the default one.
    project = create_project(name=f"Runner {next(_names)}", postgres_major=15, template="postgres", **kwargs)
    operation = project.operations.get()
    assert tasks.run_operation(operation.pk) is True
    operation.refresh_from_db()
    project.refresh_from_db()
    return project, operation


def test_it_provisions_to_active_healthy(agent_script, host):
    project, operation = provision(host)
    assert operation.state == State.SUCCEEDED
    assert project.status == Status.ACTIVE_HEALTHY
    assert project.host == host
    assert project.file_digests
    steps = list(operation.events.values_list("step", flat=True))
    assert steps[:2] == ["queued", "claimed"]
    assert {"place", "lease", "files", "up", "health", "finished"} <= set(steps)


def test_running_the_same_task_twice_does_the_work_once(agent_script, host):
    project, operation = provision(host)
    assert tasks.run_operation(operation.pk) is False
    assert len(agent_script.called("up")) == 1


def test_provisioning_that_never_becomes_healthy_ends_init_failed_with_the_runtime_stopped(
    agent_script, host, settings
):
    settings.BERTH_OPERATION_DEADLINE = 16  # the runner keeps 15 s back to stop the runtime
    agent_script.probe_status = "fail"
    project, operation = provision(host)
    assert operation.state == State.FAILED
    assert operation.error_code == "unhealthy"
    assert project.status == Status.INIT_FAILED
    assert agent_script.called("down"), "the runtime is stopped"
    assert not agent_script.called("delete"), "its data is kept"
    assert project.port_block.state == "leased", "its ports are kept"


def test_a_misconfigured_probe_reports_the_cause_and_tears_nothing_down(agent_script, host):
    agent_script.probe_status = "misconfigured"
    project, operation = provision(host)
    assert operation.error_code == "probe_misconfigured"
    assert project.status == Status.UNKNOWN
    assert "misconfigured" in project.status_reason
    assert not agent_script.called("down") and not agent_script.called("delete")


def test_a_server_running_another_major_is_never_healthy(agent_script, host, settings):
    settings.BERTH_OPERATION_DEADLINE = 16
    agent_script.server_major = 17
    project, operation = provision(host)
    assert project.status == Status.INIT_FAILED
    event = operation.events.filter(step="health").first()
    assert "server runs Postgres 17, project asked for 15" in str(event.data)


def test_an_unreachable_agent_fails_provisioning_without_a_transitional_status(agent_script, host):
    agent_script.unreachable = True
    project, operation = provision(host)
    assert operation.state == State.FAILED
    assert operation.error_code == "no_host"
    assert project.status == Status.INIT_FAILED


def test_retry_stops_what_the_failed_attempt_left_then_runs_every_step(agent_script, host, settings):
    settings.BERTH_OPERATION_DEADLINE = 16
    agent_script.probe_status = "fail"
    project, _ = provision(host)
    agent_script.probe_status = "pass"
    agent_script.calls.clear()
    retry = retry_project(project)
    tasks.run_operation(retry.pk)
    project.refresh_from_db()
    assert project.status == Status.ACTIVE_HEALTHY
    names = [c[0] for c in agent_script.calls]
    assert names.index("down") < names.index("up")


def test_delete_releases_the_lease_into_its_cooldown(agent_script, host):
    project, _ = provision(host)
    operation = request_operation(project, Kind.DELETE, params={"purge_data": True})
    tasks.run_operation(operation.pk)
    project.refresh_from_db()
    assert project.status == Status.REMOVED
    assert agent_script.called("delete") == [("delete", project.ref, True)]
    block = PortBlock.objects.get(last_project_ref=project.ref)
    assert block.state == "cooling" and block.project is None


class TestHealthRefresh:
    def test_a_healthy_project_turns_unhealthy_only_after_several_failed_refreshes(self, agent_script, host, settings):
        settings.BERTH_UNHEALTHY_AFTER = 3
        project, _ = provision(host)
        agent_script.probe_status = "fail"
        agent_script.calls.clear()
        for expected in [Status.ACTIVE_HEALTHY, Status.ACTIVE_HEALTHY, Status.ACTIVE_UNHEALTHY]:
            refresh_all()
            assert Project.objects.get(pk=project.pk).status == expected
        assert not agent_script.called("down") and not agent_script.called("delete"), "never torn down"
        agent_script.probe_status = "pass"
        refresh_all()
        project.refresh_from_db()
        assert project.status == Status.ACTIVE_HEALTHY and project.probe_failures == 0

    def test_a_misconfigured_probe_leaves_the_status_and_says_why(self, agent_script, host):
        project, _ = provision(host)
        agent_script.probe_status = "misconfigured"
        refresh_all()
        project.refresh_from_db()
        assert project.status == Status.ACTIVE_HEALTHY
        assert project.status_reason.startswith("probe misconfigured")

    def test_it_asks_each_host_once_for_all_its_projects(self, agent_script, host):
        for _ in range(3):
            provision(host)
        agent_script.calls.clear()
        assert refresh_all() == 3
        assert len(agent_script.called("health")) == 1

    def test_it_skips_projects_with_an_operation_in_flight(self, agent_script, host):
        project, _ = provision(host)
        request_operation(project, Kind.RESTART)
        agent_script.calls.clear()
        assert refresh_all() == 0

    def test_it_moves_no_status_of_a_project_whose_operation_started_during_the_probe(self, agent_script, host):
        restarted, left_alone = (provision(host)[0] for _ in range(2))
        Project.objects.update(status=Status.ACTIVE_UNHEALTHY, probe_failures=3)
        answer = agent_script.health

        def restart_meanwhile(probes, deadline_s=None):
            request_operation(restarted, Kind.RESTART)
            return answer(probes, deadline_s)

        with mock.patch.object(agent_script, "health", restart_meanwhile):
            assert refresh_all() == 2
        restarted.refresh_from_db()
        left_alone.refresh_from_db()
        assert (restarted.status, restarted.probe_failures) == (Status.ACTIVE_UNHEALTHY, 3)
        assert (left_alone.status, left_alone.probe_failures) == (Status.ACTIVE_HEALTHY, 0)

    def test_it_starts_no_host_call_past_its_time_budget(self, agent_script, host, settings):
        provision(host)
        settings.BERTH_OPERATION_DEADLINE = 1
        settings.BERTH_AGENT_CALL_DEADLINE = 1
        agent_script.calls.clear()
        assert refresh_all() == 0
        assert not agent_script.called("health")

    def test_it_splits_a_host_call_at_the_agents_probe_limit(self, agent_script, host, settings):
        for _ in range(3):
            provision(host)
        agent_script.calls.clear()
        with mock.patch("agent.api.MAX_PROBES", 2):
            assert refresh_all() == 3
        assert len(agent_script.called("health")) == 2
        assert set(Project.objects.values_list("status", flat=True)) == {Status.ACTIVE_HEALTHY}


def test_a_resync_stopped_by_a_conflict_leaves_the_project_status_alone(agent_script, host):
    from operations.models import Outcome
    from operations.resync import ResyncResult

    project, _ = provision(host)
    Project.objects.filter(pk=project.pk).update(status_reason="checked at noon")
    operation = request_operation(project, Kind.RESYNC)
    conflict = ResyncResult(project.ref, Outcome.CONFLICTED, 1, 1, message="conflict: runtime.toml")
    with mock.patch("operations.runner.resync_project", return_value=conflict):
        tasks.run_operation(operation.pk)
    operation.refresh_from_db()
    project.refresh_from_db()
    assert (operation.state, operation.error_code) == (State.FAILED, "conflict")
    assert (project.status, project.status_reason) == (Status.ACTIVE_HEALTHY, "checked at noon")
    assert not agent_script.called("restart")


def test_a_deadline_inside_the_cleanup_reserve_still_probes_once(agent_script, host, settings):
    settings.BERTH_OPERATION_DEADLINE = 12  # less than the 15 s kept back for stopping the runtime
    settings.BERTH_AGENT_CALL_DEADLINE = 5
    project, operation = provision(host)
    assert len(agent_script.called("health")) == 1
    assert operation.state == State.SUCCEEDED
    assert project.status == Status.ACTIVE_HEALTHY


def test_an_unhealthy_runtime_with_a_short_deadline_is_judged_by_a_probe(agent_script, host, settings):
    settings.BERTH_OPERATION_DEADLINE = 12
    settings.BERTH_AGENT_CALL_DEADLINE = 5
    agent_script.probe_status = "fail"
    project, operation = provision(host)
    assert agent_script.called("health"), "probed before being called unhealthy"
    assert operation.error_code == "unhealthy"
    assert project.status == Status.INIT_FAILED
    assert agent_script.called("down")


def test_a_failed_agent_command_keeps_the_agents_output_on_the_event(agent_script, host):
    from agent.client import AgentError

    command = "/usr/lib/postgresql/15/bin/pg_ctl -D /var/lib/berth/runtimes/" + "x" * 200 + "..."
    tail = "waiting for server to start....\nFATAL:  could not create lock file: Permission denied\n"
    failure = AgentError(f"POST /up: {command} exited with status 1", code="command_failed", output_tail=tail)
    with mock.patch.object(ScriptedAgent, "up", side_effect=failure):
        project, operation = provision(host)
    assert operation.error_code == "agent_command_failed"
    assert operation.error_message.endswith("FATAL:  could not create lock file: Permission denied")
    finished = operation.events.get(step="finished")
    assert finished.data["output_tail"] == tail


def test_provisioning_names_the_secret_bearing_files_to_the_agent(agent_script, host):
    project, _ = provision(host)
    assert agent_script.called("put_files") == [("put_files", project.ref, ("runtime.toml",))]


def test_a_resync_keeps_its_result_and_its_restart_on_the_operation(agent_script, host):
    from operations.models import Outcome
    from operations.resync import ResyncResult
    from templating.resync import WRITE, FileAction, Plan

    project, _ = provision(host)
    operation = request_operation(project, Kind.RESYNC)
    plan = Plan(actions=[FileAction("runtime.toml", WRITE, "changed in the template")])
    updated = ResyncResult(project.ref, Outcome.UPDATED, 1, 2, message="1 written, 0 removed", plan=plan)
    with mock.patch("operations.runner.resync_project", return_value=updated):
        tasks.run_operation(operation.pk)
    operation.refresh_from_db()
    assert (operation.state, operation.result, operation.restarted) == (State.SUCCEEDED, Outcome.UPDATED, True)
    assert operation.result_message == f"{project.template_version}: 1 written, 0 removed"
    assert agent_script.called("restart")


def test_a_resync_stopped_by_a_conflict_keeps_the_conflicting_paths_on_the_operation(agent_script, host):
    from operations.models import Outcome
    from operations.resync import ResyncResult
    from templating.resync import CONFLICT, FileAction, Plan

    project, _ = provision(host)
    operation = request_operation(project, Kind.RESYNC)
    plan = Plan(actions=[FileAction("runtime.toml", CONFLICT, "changed on the host and in the template")])
    conflict = ResyncResult(project.ref, Outcome.CONFLICTED, 1, 2, message="conflict: runtime.toml", plan=plan)
    with mock.patch("operations.runner.resync_project", return_value=conflict):
        tasks.run_operation(operation.pk)
    operation.refresh_from_db()
    assert (operation.result, operation.conflict_paths, operation.restarted) == (
        Outcome.CONFLICTED,
        ["runtime.toml"],
        False,
    )


def test_provisioning_fails_when_the_agent_holds_other_content_than_was_pushed(agent_script, host):
    honest = ScriptedAgent.put_files

    def other_runtime_toml(self, ref, files, **kwargs):
        return {**honest(self, ref, files, **kwargs), "runtime.toml": "0" * 64}

    with mock.patch.object(ScriptedAgent, "put_files", other_runtime_toml):
        project, operation = provision(host)
    assert (operation.state, operation.error_code) == (State.FAILED, "files")
    assert operation.error_message == "the agent reports other content than was sent for: runtime.toml"
    assert project.status == Status.INIT_FAILED
    assert not agent_script.called("up")
