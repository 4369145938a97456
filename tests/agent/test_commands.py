"""Commands run under a deadline; past it their whole process group dies and the caller hears why."""

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from agent import commands
from agent.api import FileSpec
from agent.client import AgentBusy, AgentCancelled, AgentTimeout
from agent.commands import Deadline, run
from agent.errors import CommandTimeout


def process_gone(pid: int) -> bool:
    # A killed child reparented to an init that does not reap stays a zombie: dead all the same.
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


def wait_until(condition, timeout_s: float = 5.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_command_past_its_deadline_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pid_file}; echo working; wait"
    started = time.monotonic()

    with pytest.raises(CommandTimeout) as timed_out:
        run(["sh", "-c", script], Deadline(1.0))

    assert time.monotonic() - started < 2.5
    assert "working" in timed_out.value.output_tail
    assert wait_until(lambda: process_gone(int(pid_file.read_text())))


def test_a_daemon_holding_the_output_pipe_does_not_hold_the_command(tmp_path):
    pid_file = tmp_path / "daemon.pid"
    started = time.monotonic()

    result = run(["sh", "-c", f"(sleep 30 & echo $! > {pid_file}); echo done"], Deadline(10.0))

    assert time.monotonic() - started < 3
    assert (result.returncode, result.output_tail) == (0, "done\n")
    run(["kill", pid_file.read_text().strip()], Deadline(5.0))


def test_only_the_tail_of_the_output_is_kept():
    result = run(["sh", "-c", "seq 1 100000"], Deadline(10.0), output_limit=64)
    assert len(result.output_tail) == 64 and result.output_tail.endswith("99999\n100000\n")


def test_children_never_see_the_agent_token(monkeypatch):
    monkeypatch.setenv("BERTH_AGENT_TOKEN", "do-not-leak-this-token")
    assert "do-not-leak" not in run(["env"], Deadline(5.0)).output_tail


def compose_runtime(client, ref: str) -> None:
    files = [
        FileSpec("runtime.toml", b'driver = "docker"\ncompose_file = "docker-compose.yml"\n'),
        FileSpec("docker-compose.yml", b"services: {}\n"),
    ]
    client.put_files(ref, files)


def test_the_agent_answers_a_timeout_and_kills_the_command_group(docker_agent):
    client, ref = docker_agent.client(deadline=10), "hangs001"
    compose_runtime(client, ref)
    (docker_agent.fake_docker / "hang").touch()
    started = time.monotonic()

    with pytest.raises(AgentTimeout) as timed_out:
        client.up(ref, deadline_s=1)

    assert time.monotonic() - started < 3
    assert timed_out.value.status == 504 and timed_out.value.code == "timeout"
    assert "pulling images" in timed_out.value.output_tail
    child = int((docker_agent.fake_docker / "child.pid").read_text())
    assert wait_until(lambda: process_gone(child))


def test_a_second_command_on_a_busy_runtime_is_refused_at_once(docker_agent):
    client, ref = docker_agent.client(deadline=10), "busy0001"
    compose_runtime(client, ref)
    (docker_agent.fake_docker / "hang").touch()
    outcome = []

    def first_up():
        try:
            client.up(ref, deadline_s=3)
        except AgentTimeout:
            outcome.append("timeout")

    first = threading.Thread(target=first_up)
    first.start()
    assert wait_until(lambda: (docker_agent.fake_docker / "child.pid").exists())

    started = time.monotonic()
    with pytest.raises(AgentBusy):
        client.up(ref)
    assert time.monotonic() - started < 1
    with pytest.raises(AgentBusy):
        client.delete(ref)
    assert client.status(ref).state == "stopped"  # reads are not blocked by a running command
    first.join()
    assert outcome == ["timeout"]
    (docker_agent.fake_docker / "hang").unlink()
    assert client.up(ref).state == "running"


def test_a_request_may_shorten_the_deadline_but_never_lengthen_it(agent_factory):
    docker_agent = agent_factory(driver="docker", fake_docker=True, env={"BERTH_AGENT_DEADLINE": "1"})
    client, ref = docker_agent.client(deadline=10), "long0001"
    compose_runtime(client, ref)
    (docker_agent.fake_docker / "hang").touch()
    started = time.monotonic()

    with pytest.raises(AgentTimeout):
        client.up(ref, deadline_s=30)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("deadline_s", ["soon", 0, -1, True, "NaN"])
def test_a_deadline_that_is_not_a_positive_number_is_invalid(shared_agent, deadline_s):
    body = b'{"deadline_s": NaN}' if deadline_s == "NaN" else json.dumps({"deadline_s": deadline_s}).encode()
    reply = httpx.post(
        f"{shared_agent.base_url}/v1/runtimes/abcdef01/up",
        headers={"Authorization": f"Bearer {shared_agent.token}"},
        content=body,
    )
    assert reply.status_code == 422


def test_output_that_never_stops_after_the_command_exits_does_not_outlive_the_deadline(monkeypatch):
    # A daemon writing without pause keeps the pipe readable forever; stand it in by never
    # consuming what the command wrote, so the pipe always reads as ready.
    monkeypatch.setattr(commands, "_read_ready", lambda selector, fd, tail, wait: True)
    finished = []
    worker = threading.Thread(target=lambda: finished.append(run(["sh", "-c", "echo x"], Deadline(1.0))), daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert finished and finished[0].returncode == 0


def hanging_child(docker_agent) -> int:
    """The pid of the fake `up`'s hanging child, once it has written it whole."""
    pid_file = docker_agent.fake_docker / "child.pid"
    assert wait_until(lambda: pid_file.exists() and pid_file.read_text().endswith("\n"))
    return int(pid_file.read_text())


def test_cancelling_an_operation_kills_its_command_group_and_refuses_its_later_commands(docker_agent):
    ref = "cancel01"
    worker = docker_agent.client(deadline=30)
    worker.operation = "42"
    compose_runtime(worker, ref)
    (docker_agent.fake_docker / "hang").touch()
    outcome = []

    def up():
        try:
            worker.up(ref, deadline_s=25)
        except AgentCancelled as error:
            outcome.append(error)

    running = threading.Thread(target=up)
    running.start()
    child = hanging_child(docker_agent)

    started = time.monotonic()
    reply = docker_agent.client(deadline=10).cancel(ref, "42", wait_s=5)
    running.join(timeout=5)

    assert (reply.cancelled, reply.running) == (True, False)
    assert time.monotonic() - started < 3, "the command ends within a poll, not at its deadline"
    assert wait_until(lambda: process_gone(child))
    (cancelled,) = outcome
    assert cancelled.status == 409 and "its operation was cancelled" in cancelled.message
    assert "pulling images" in cancelled.output_tail
    (docker_agent.fake_docker / "hang").unlink()
    with pytest.raises(AgentCancelled, match="operation 42 was cancelled"):
        worker.down(ref)
    assert docker_agent.client().up(ref).state == "running", "commands of other operations still run"


def test_cancelling_an_operation_leaves_another_operations_command_running(docker_agent):
    ref = "cancel02"
    other = docker_agent.client(deadline=30)
    other.operation = "43"
    compose_runtime(other, ref)
    (docker_agent.fake_docker / "hang").touch()
    outcome = []

    def up():
        try:
            other.up(ref, deadline_s=25)
        except AgentCancelled as error:
            outcome.append(error.code)

    running = threading.Thread(target=up)
    running.start()
    child = hanging_child(docker_agent)

    reply = docker_agent.client(deadline=10).cancel(ref, "42", wait_s=0.5)

    assert (reply.cancelled, reply.running) == (False, False)
    assert not process_gone(child), "another operation's command is not touched"
    assert docker_agent.client(deadline=10).cancel(ref, "43", wait_s=5).cancelled
    running.join(timeout=5)
    assert outcome == ["cancelled"]
    assert wait_until(lambda: process_gone(child))


def test_cancel_needs_an_operation(shared_agent):
    response = httpx.post(
        f"{shared_agent.base_url}/v1/runtimes/cancel03/cancel",
        headers={"Authorization": f"Bearer {shared_agent.token}"},
        json={"wait_s": 1},
    )
    assert response.status_code == 422
    assert "operation" in response.json()["error"]["message"]


def test_a_settled_command_returns_at_once_and_is_reaped_after(tmp_path):
    """pg_ctl -w looks every 100 ms; `settled` looks every 10 ms and lets the command finish
    alone. What it wrote before it settled is in the output, even when `settled` is first
    asked only once that has happened (here it waits for it: a loaded machine's order)."""
    flag, pid_file = tmp_path / "ready", tmp_path / "pid"
    script = f"echo $$ > {pid_file}; echo waiting; touch {flag}; sleep 1; echo done"
    result = run(["sh", "-c", script], Deadline(30), settled=lambda: wait_until(flag.exists))
    assert result.returncode == 0 and result.output_tail == "waiting\n"
    pid = int(pid_file.read_text())
    assert not process_gone(pid)  # still sleeping, on its own
    assert wait_until(lambda: process_gone(pid))


def test_a_command_that_fails_before_it_settles_fails():
    result = run(["sh", "-c", "echo nope; exit 3"], Deadline(30), settled=lambda: False)
    assert result.returncode == 3 and result.output_tail == "nope\n"


def test_a_settled_command_still_dies_at_its_deadline(tmp_path):
    pid_file = tmp_path / "pid"
    deadline = Deadline(30)
    run(
        ["sh", "-c", f"echo $$ > {pid_file}.part && mv {pid_file}.part {pid_file}; sleep 60"],
        deadline,
        settled=pid_file.exists,
    )
    pid = int(pid_file.read_text())
    assert not process_gone(pid)
    deadline.cancel()  # as a cancelled operation does
    assert wait_until(lambda: process_gone(pid))
