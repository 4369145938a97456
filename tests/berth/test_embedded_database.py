"""The embedded default database (SQLite under var/) holds the concurrency `scripts/dev` itself
creates: a worker cluster with two workers, the web process and the periodic tasks, each its
own process on one database file, while a staff user creates several projects one after
another and then stops and starts them all in bulk. None of it may fail on a lock."""

import json
import subprocess
import sys

import pytest

from tests.stack import ROOT, Worker, free_port_range, worker_env

PROJECTS = 6
SETTINGS = {
    # Empty: the embedded default, sqlite:///<BERTH_VAR_DIR>/berth.sqlite3, as `scripts/dev` uses it.
    "DATABASE_URL": "",
    "Q_WORKERS": 2,
    "BERTH_OPERATION_DEADLINE": 180,
    "BERTH_AGENT_CALL_DEADLINE": 30,
}


def manage(env: dict, *argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True, **kwargs
    )


def role(name: str, folder) -> list[str]:
    return ["shell", "-c", f"from tests.embedded_roles import main; main({name!r}, {str(folder)!r})"]


@pytest.fixture
def stack(tmp_path, agent_factory):
    """An embedded-default Berth under tmp_path: migrated, set up, its worker running."""
    agent = agent_factory()
    env = worker_env(
        tmp_path,
        **SETTINGS,
        AGENT_URL=agent.base_url,
        AGENT_TOKEN=agent.token,
        PORT_RANGE_START=free_port_range(8 * 20),
        PROJECTS=PROJECTS,
    )
    for argv in (["migrate", "--noinput"], role("setup", tmp_path)):
        done = manage(env, *argv, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "berth.sqlite3").is_file()
    worker = Worker(tmp_path, **SETTINGS)
    yield env, worker
    worker.stop()


def test_transactions_that_read_first_wait_for_each_other_instead_of_failing(tmp_path):
    env = worker_env(tmp_path, **SETTINGS)
    assert manage(env, "migrate", "--noinput", timeout=120).returncode == 0
    done = manage(env, *role("read_then_write", tmp_path), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["outcomes"] == {"first": "ok", "second": "ok"}, result
    assert result["rows"] == 2
    assert result["journal_mode"] == "wal"  # readers never wait for the writer


def test_provisioning_bulk_actions_and_periodic_tasks_at_once_never_fail_on_a_lock(stack, tmp_path):
    env, worker = stack
    periodic_log = tmp_path / "periodic.log"
    with open(periodic_log, "w") as out:
        periodic = subprocess.Popen(
            [sys.executable, "manage.py", *role("periodic", tmp_path)], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        web = manage(env, *role("web", tmp_path), timeout=900)
    finally:
        (tmp_path / "stop").touch()
        periodic.wait(timeout=120)
    worker_log = worker.log.read_text()
    logs = f"web:\n{web.stdout}{web.stderr}\nperiodic:\n{periodic_log.read_text()}\nworker:\n{worker_log[-6000:]}"

    assert web.returncode == 0, logs
    assert periodic.returncode == 0, logs
    assert "database is locked" not in logs + worker_log, logs
    summary = json.loads(web.stdout.strip().splitlines()[-1])
    assert list(summary["projects"].values()) == ["ACTIVE_HEALTHY"] * PROJECTS, summary
    operations = summary["operations"]
    assert [op["kind"] for op in operations].count("provision") == PROJECTS
    assert [op["kind"] for op in operations].count("stop") == PROJECTS
    assert [op["kind"] for op in operations].count("start") == PROJECTS
    assert all(op["state"] == "succeeded" for op in operations), operations
    assert "periodic:" in periodic_log.read_text()  # the periodic tasks really ran throughout
