"""The agent's settings: strict, and a bad value stops startup with a message naming it."""

import os
import resource
import subprocess
import sys

import pytest

from agent.config import ConfigError, load_config
from agent.drivers.process import ProcessDriver
from tests.stack import ROOT

TOKEN = "a-token-long-enough-1234"


def config(tmp_path, **env):
    return load_config({"BERTH_AGENT_TOKEN": TOKEN, "BERTH_AGENT_ROOT": str(tmp_path / "runtimes"), **env})


def test_defaults(tmp_path):
    loaded = config(tmp_path)
    assert (loaded.listen_host, loaded.listen_port) == ("127.0.0.1", 8470)
    assert (loaded.driver, loaded.deadline_s, loaded.probe_host_override) == ("auto", 60.0, None)
    assert loaded.root == (tmp_path / "runtimes").resolve() and loaded.root.is_dir()
    assert (loaded.threads, loaded.connection_limit, loaded.max_body_bytes, loaded.idle_timeout_s) == (
        16,
        1000,
        16 << 20,
        30,
    )


def test_server_limits(tmp_path):
    loaded = config(
        tmp_path,
        BERTH_AGENT_THREADS="4",
        BERTH_AGENT_CONNECTION_LIMIT="50",
        BERTH_AGENT_MAX_BODY_MB="2",
        BERTH_AGENT_IDLE_TIMEOUT="5",
    )
    assert (loaded.threads, loaded.connection_limit, loaded.max_body_bytes, loaded.idle_timeout_s) == (
        4,
        50,
        2 << 20,
        5,
    )


def test_ipv6_listen_and_token_file(tmp_path):
    (tmp_path / "token").write_text(TOKEN + "\n")
    loaded = load_config(
        {
            "BERTH_AGENT_TOKEN_FILE": str(tmp_path / "token"),
            "BERTH_AGENT_ROOT": str(tmp_path),
            "BERTH_AGENT_LISTEN": "[::1]:9000",
        }
    )
    assert (loaded.token, loaded.listen_host, loaded.listen_port) == (TOKEN, "::1", 9000)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"BERTH_AGENT_TOKEN": ""}, "BERTH_AGENT_TOKEN"),
        ({"BERTH_AGENT_TOKEN": "short"}, "BERTH_AGENT_TOKEN"),
        ({"BERTH_AGENT_TOKEN_FILE": "/nonexistent/token"}, "BERTH_AGENT_TOKEN"),
        ({"BERTH_AGENT_LISTEN": "8470"}, "BERTH_AGENT_LISTEN"),
        ({"BERTH_AGENT_LISTEN": "127.0.0.1:99999"}, "BERTH_AGENT_LISTEN"),
        ({"BERTH_AGENT_DRIVER": "kubernetes"}, "BERTH_AGENT_DRIVER"),
        ({"BERTH_AGENT_DEADLINE": "soon"}, "BERTH_AGENT_DEADLINE"),
        ({"BERTH_AGENT_DEADLINE": "0"}, "BERTH_AGENT_DEADLINE"),
        ({"BERTH_AGENT_ROOT": "/proc/berth"}, "BERTH_AGENT_ROOT"),
        ({"BERTH_AGENT_THREADS": "0"}, "BERTH_AGENT_THREADS"),
        ({"BERTH_AGENT_THREADS": "many"}, "BERTH_AGENT_THREADS"),
        ({"BERTH_AGENT_CONNECTION_LIMIT": "-5"}, "BERTH_AGENT_CONNECTION_LIMIT"),
        ({"BERTH_AGENT_MAX_BODY_MB": "2048"}, "BERTH_AGENT_MAX_BODY_MB"),
        ({"BERTH_AGENT_IDLE_TIMEOUT": "1.5"}, "BERTH_AGENT_IDLE_TIMEOUT"),
        ({"BERTH_AGENT_POSTGRES_PATH": "/opt/pg/16/bin:pgbin/*/bin"}, "BERTH_AGENT_POSTGRES_PATH"),
    ],
)
def test_bad_values_name_the_variable(tmp_path, env, named):
    with pytest.raises(ConfigError, match=named):
        config(tmp_path, **env)


def test_the_postgres_search_path_is_the_checkouts_pgbin_unless_set(tmp_path):
    assert config(tmp_path).postgres_path == (str(ROOT / "pgbin" / "*" / "bin"),)
    assert config(tmp_path, BERTH_AGENT_POSTGRES_PATH="/opt/pg/*/bin: /srv/pg17/bin").postgres_path == (
        "/opt/pg/*/bin",
        "/srv/pg17/bin",
    )


def start(env: dict, open_files: int | None = None) -> subprocess.CompletedProcess:
    """Run the agent to its exit; `open_files` caps its open files (soft and hard)."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("BERTH_AGENT")}
    # The database router on ports the system picks: 5432 and 6543 are shared on this machine.
    base.update(BERTH_ROUTER_LISTEN="127.0.0.1:0", BERTH_POOLER_LISTEN="127.0.0.1:0")

    def cap():
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    return subprocess.run(
        [sys.executable, "platform/agent"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=cap if open_files else None,
    )


def test_startup_refuses_a_missing_token():
    result = start({})
    assert result.returncode == 2 and "BERTH_AGENT_TOKEN" in result.stderr


def test_startup_refuses_limits_the_open_files_limit_cannot_hold(tmp_path):
    env = {"BERTH_AGENT_TOKEN": TOKEN, "BERTH_AGENT_ROOT": str(tmp_path), "BERTH_AGENT_DRIVER": "docker"}
    result = start({**env, "BERTH_AGENT_LISTEN": "127.0.0.1:0"}, open_files=256)
    assert (
        result.returncode == 2
        and "BERTH_AGENT_CONNECTION_LIMIT=1000" in result.stderr
        and "(ulimit -n)" in result.stderr
    )


def test_startup_refuses_a_probe_host_that_does_not_resolve(tmp_path):
    env = {"BERTH_AGENT_TOKEN": TOKEN, "BERTH_AGENT_ROOT": str(tmp_path), "BERTH_AGENT_DRIVER": "docker"}
    result = start({**env, "BERTH_AGENT_PROBE_HOST": "nope.invalid"})
    assert result.returncode == 2 and "BERTH_AGENT_PROBE_HOST='nope.invalid' does not resolve" in result.stderr


def test_python_dash_m_agent_starts_too(tmp_path):
    base = {key: value for key, value in os.environ.items() if not key.startswith("BERTH_AGENT")}
    env = {**base, "PYTHONPATH": str(ROOT / "platform"), "BERTH_AGENT_ROOT": str(tmp_path), "BERTH_AGENT_TOKEN": TOKEN}
    env.update(BERTH_AGENT_LISTEN="127.0.0.1:0", BERTH_AGENT_DRIVER="docker")
    env.update(BERTH_ROUTER_LISTEN="127.0.0.1:0", BERTH_POOLER_LISTEN="127.0.0.1:0")
    process = subprocess.Popen([sys.executable, "-m", "agent"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert "listening on http://127.0.0.1:" in process.stdout.readline()
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_process_driver_runs_clusters_as_postgres_only_when_root(tmp_path, monkeypatch):
    tmp_path.chmod(0o755)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert ProcessDriver.for_root(tmp_path, ["127.0.0.1"]).run_as is None


def test_as_root_a_runtime_root_the_postgres_user_cannot_reach_stops_startup(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only an agent running as root hands clusters to the postgres user")
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not reachable by the 'postgres' user"):
        ProcessDriver.for_root(hidden / "runtimes", ["127.0.0.1"])
