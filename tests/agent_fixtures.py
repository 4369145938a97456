"""Fixtures that run a real agent process on loopback for the agent tests.

Each agent gets a runtime root under /tmp (when the tests run as root, the `postgres` user
must be able to reach it), a random token and a port the system picks; the agent prints the address it bound.
"""

import os
import secrets
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.client import AgentClient
from tests.stack import PORT_BASE, ROOT, free_port_range

START_DEADLINE_S = 20.0
FAKE_DOCKER = """#!/bin/sh
# A stand-in for the docker CLI: records every call, answers as compose v2 would.
echo "$*" >> "$FAKE_DOCKER_DIR/calls"
case "$*" in
  "compose version") echo "Docker Compose version v2.99.0-fake" ;;
  *" up "*)
    if [ -f "$FAKE_DOCKER_DIR/hang" ]; then
      sleep 60 &
      echo $! > "$FAKE_DOCKER_DIR/child.pid"
      echo "pulling images"
      wait
    fi
    echo "started" ;;
  *" ps "*) cat "$FAKE_DOCKER_DIR/ps.json" 2>/dev/null || true ;;
  image*) echo "15.8.1.085" ;;
esac
"""


@dataclass
class RunningAgent:
    process: subprocess.Popen
    base_url: str
    token: str
    root: Path
    log: Path
    fake_docker: Path | None = None

    def client(self, deadline: float = 30.0) -> AgentClient:
        return AgentClient(self.base_url, self.token, deadline)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def make_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="bat-", dir="/tmp"))
    root.chmod(0o755)
    return root


def server_bindir(major: int | str) -> Path | None:
    """The bin folder of PostgreSQL `major`'s server: the checkout's (scripts/postgres) or the system's."""
    for candidate in (ROOT / "pgbin" / str(major) / "bin", Path(f"/usr/lib/postgresql/{major}/bin")):
        if (candidate / "pg_ctl").exists():
            return candidate.resolve()  # the postgres user may not search the checkout's links
    return None


def installed_server_bindir(major: int | str) -> Path:
    """server_bindir, for a test that needs that major: a clear failure when it is not here."""
    bindir = server_bindir(major)
    if bindir is None:
        pytest.fail(
            f"no PostgreSQL {major} server here (pgbin/{major}, /usr/lib/postgresql/{major}): run ./scripts/test"
        )
    return bindir


def pg_ctl_for(data: Path) -> Path:
    """The pg_ctl of the major that made the cluster in `data`."""
    bindir = server_bindir((data / "PG_VERSION").read_text().strip())
    return bindir / "pg_ctl" if bindir else sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]


def stop_clusters(root: Path) -> None:
    """Stop any Postgres a test left running under root, so none outlives the tests."""
    for data in root.glob("**/.berth-pg/**/PG_VERSION"):
        data = data.parent
        if (data / "postmaster.pid").exists():
            pg_ctl = pg_ctl_for(data)
            user = {"user": "postgres"} if os.geteuid() == 0 else {}
            subprocess.run([pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True, timeout=30, **user)


def start_agent(root: Path, *, driver: str = "process", env: dict | None = None) -> RunningAgent:
    token = secrets.token_urlsafe(24)
    log = root.parent / f"{root.name}.log"
    agent_env = {
        **os.environ,
        "BERTH_AGENT_TOKEN": token,
        "BERTH_AGENT_ROOT": str(root),
        "BERTH_AGENT_LISTEN": "127.0.0.1:0",
        "BERTH_AGENT_DRIVER": driver,
        # The router and pooler on ports the system picks, and PgBouncer on a free one of the
        # test window: 5432 and 6543 are taken or shared on a development machine.
        "BERTH_ROUTER_LISTEN": "127.0.0.1:0",
        "BERTH_POOLER_LISTEN": "127.0.0.1:0",
        "BERTH_PGBOUNCER_LISTEN": f"127.0.0.1:{free_port_range(1, PORT_BASE + 500)}",
        **(env or {}),
    }
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "platform/agent"], cwd=ROOT, env=agent_env, stdout=subprocess.PIPE, stderr=stderr
        )
    line = _first_line(process, log)
    base_url = line.split("listening on ", 1)[1].split()[0]
    return RunningAgent(process, base_url, token, root, log)


def _first_line(process: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + START_DEADLINE_S
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(0.1):
                line = process.stdout.readline().decode()
                if "listening on" in line:
                    return line
            if process.poll() is not None:
                break
    process.kill()
    pytest.fail(f"the agent did not start: {log.read_text()}")


def install_fake_docker(folder: Path) -> dict:
    """Put a fake `docker` first on PATH; returns the environment the agent needs."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_DOCKER)
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_DOCKER_DIR": str(folder)}


def tool_in_front(path: Path, real: str | Path, args: str, then: str, once: Path | None = None) -> None:
    """An executable at `path` standing in front of the real tool `real`: when its arguments, as
    " $* " (a space each side), match the sh pattern `args`, the sh lines `then` run first (and
    only once, given `once`: while that file exists, removed as they run); then, unless `then`
    exited, the real tool with the same arguments."""
    guard = "true" if once is None else f'rm "{once}" 2>/dev/null'
    path.write_text(f'#!/bin/sh\ncase " $* " in {args}) if {guard}; then\n{then}\nfi;; esac\nexec {real} "$@"\n')
    path.chmod(0o755)


def postgres_path_with_pg_ctl_in_front(major: int, args: str, then: str) -> tuple[Path, str, Path]:
    """A folder of PostgreSQL `major`'s initdb and postgres with a pg_ctl in front of the real
    one (tool_in_front, once), all reachable by the clusters' user, who runs pg_ctl. Returns the
    folder (the caller removes it), the BERTH_AGENT_POSTGRES_PATH that puts it first, and the
    file whose existence arms `then`."""
    folder = Path(tempfile.mkdtemp(prefix="bat-pgbin-"))
    folder.chmod(0o755)
    real = installed_server_bindir(major)
    for tool in ("initdb", "postgres"):
        (folder / tool).symlink_to(real / tool)
    once = folder / "marks" / "once"
    once.parent.mkdir()
    once.parent.chmod(0o777)
    tool_in_front(folder / "pg_ctl", real / "pg_ctl", args, then, once)
    return folder, f"{folder}:{ROOT / 'pgbin' / '*' / 'bin'}", once


class AgentPool:
    """Starts agents (each with its own root) and tears all of them down together."""

    def __init__(self):
        self.agents: list[RunningAgent] = []
        self.folders: list[Path] = []

    def start(self, *, driver: str = "process", env: dict | None = None, fake_docker: bool = False) -> RunningAgent:
        root = make_root()
        self.folders.append(root)
        fake = None
        if fake_docker:
            fake = Path(tempfile.mkdtemp(prefix="bat-docker-"))
            self.folders.append(fake)
            env = {**install_fake_docker(fake), **(env or {})}
        agent = start_agent(root, driver=driver, env=env)
        agent.fake_docker = fake
        self.agents.append(agent)
        return agent

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
            said = agent.log.read_text(errors="replace") if agent.log.exists() else ""
            if "Traceback" in said:
                # Captured, so pytest shows it under a failed test only: an agent's 500 says
                # why in its log, which is removed below.
                print(f"--- the agent's log ({agent.base_url}) ---\n{said[-20000:]}")
        for folder in self.folders:
            stop_clusters(folder)
            shutil.rmtree(folder, ignore_errors=True)
            Path(f"{folder}.log").unlink(missing_ok=True)


@pytest.fixture
def agent_factory():
    pool = AgentPool()
    yield pool.start
    pool.close()


@pytest.fixture
def agent(agent_factory) -> RunningAgent:
    return agent_factory()


@pytest.fixture(scope="module")
def shared_agent() -> RunningAgent:
    """One agent for a module whose tests leave no runtime state behind."""
    pool = AgentPool()
    yield pool.start()
    pool.close()


@pytest.fixture
def docker_agent(agent_factory) -> RunningAgent:
    return agent_factory(driver="docker", fake_docker=True)


@pytest.fixture
def repository_folder():
    """A folder for a file:// backup repository, under /tmp itself: the clusters' user must reach
    it (pytest's own folders are private)."""
    folder = Path(tempfile.mkdtemp(prefix="bat-repo-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
