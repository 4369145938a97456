"""`scripts/dev` on ports moved away from the defaults: it provisions a project on its local
agent, and Ctrl-C (SIGINT) leaves no process it started running, the runtime's PostgreSQL
server included; the next run starts that server again, and its Ctrl-C stops it cleanly too.
"""

import json
import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import psycopg
import pytest

from tests.agent_fixtures import make_root, stop_clusters
from tests.stack import PORT_BASE, ROOT, free_port_range, wait_for

RUNTIME_BLOCK = 20
ROUTER_ADDRESS = "127.0.0.28"


def process_start(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a live process, None once it is gone; a reused pid has another start time."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], fields[19]


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, queue = set(), [root]
    while queue:
        for child in children.get(queue.pop(), []):
            found.add(child)
            queue.append(child)
    return found


def postmasters(var: Path) -> set[int]:
    """The runtimes' PostgreSQL servers: not children of scripts/dev (pg_ctl detaches them)."""
    return {int(pid.read_text().split()[0]) for pid in (var / "runtimes").glob("*/**/postmaster.pid")}


class Dev:
    """One `scripts/dev` in its own session, as a terminal runs it; every process it starts is noted."""

    def __init__(self, env: dict, log: Path):
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                ["./scripts/dev"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started: dict[int, tuple[str, str]] = {}

    def note(self, var: Path) -> None:
        for pid in descendants(self.process.pid) | postmasters(var):
            start = process_start(pid)
            if start:
                self.started.setdefault(pid, start)

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to its process group (the terminal's foreground group), then its exit."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=90)

    def still_running(self) -> list[int]:
        alive = []
        for pid, start in self.started.items():
            now = process_start(pid)
            if now and now[1] == start[1] and now[0] != "Z":
                alive.append(pid)
        return alive

    def cleanup(self, var: Path) -> None:
        """After a failure too: nothing this run started may outlive the test."""
        self.note(var)
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for pid in self.still_running():
            os.kill(pid, signal.SIGKILL)


def until(dev: "Dev", predicate, *, timeout: float, what: str):
    """wait_for, with scripts/dev's output in the failure (and a failure at once if it exited)."""

    def check():
        assert dev.process.poll() is None, f"scripts/dev exited with {dev.process.returncode}"
        return predicate()

    try:
        return wait_for(check, timeout=timeout, what=what)
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- scripts/dev output ---\n{dev.log.read_text()[-6000:]}") from None


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError as error:
        return getattr(error, "code", None) is not None  # an HTTP error is an answer


def run_manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "manage.py"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def manage(env: dict, *args: str) -> str:
    result = run_manage(env, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_dev_on_moved_ports_stops_everything_it_started_on_ctrl_c_and_starts_the_runtimes_again(tmp_path):
    web, agent = free_port_range(2, PORT_BASE + 300), free_port_range(2, PORT_BASE + 310) + 1
    runtimes = free_port_range(RUNTIME_BLOCK * 2, PORT_BASE + 400)
    # Under /tmp, searchable by all: run as root, the process driver runs PostgreSQL as `postgres`.
    var = make_root()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTH_", "DJANGO_", "Q_"))}
    # A new user's shell: no Docker engine named either (scripts/test exports the private
    # engine's DOCKER_HOST), so the local agent's `auto` takes the process driver.
    for name in ("DEBUG", "DATABASE_URL", "SECRET_KEY", "PYTHONPATH", "DOCKER_HOST"):
        env.pop(name, None)
    env.update(
        BERTH_VAR_DIR=str(var),
        BERTH_WEB_PORT=str(web),
        BERTH_DEV_AGENT_PORT=str(agent),
        BERTH_DEV_RUNTIME_PORTS=f"{runtimes}-{runtimes + RUNTIME_BLOCK * 2 - 1}",
        # The local router on a loopback address of this test's, and the names in a hosts file
        # of its own: the machine's /etc/hosts is never edited by a test.
        BERTH_DEV_ROUTER_ADDRESS=ROUTER_ADDRESS,
        BERTH_DEV_HOSTS_FILE=str(tmp_path / "hosts"),
    )
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    log = tmp_path / "dev.log"
    # `./manage.py` as the README writes it: outside the venv, without DEBUG set.
    cli = {**env, "PATH": os.environ["PATH"].replace(str(ROOT / ".venv" / "bin") + os.pathsep, "")}

    first = second = None
    try:
        first = Dev(env, log)
        until(first, lambda: answers(f"http://127.0.0.1:{web}/"), timeout=120, what=f"the web on {web}")
        until(first, lambda: answers(f"http://127.0.0.1:{agent}/"), timeout=30, what=f"the agent on {agent}")
        assert f"http://127.0.0.1:{agent}" in manage(
            cli,
            "shell",
            "-c",
            "from hosts.models import RuntimeHost; print(RuntimeHost.objects.get(name='local').agent_url)",
        )
        # The agent's first answer can take a while on a busy machine; the page deadline is 2 s.
        until(first, lambda: run_manage(cli, "hosts", "refresh", "local").returncode == 0, timeout=60, what="the agent")
        manage(cli, "projects", "create", "devtest")
        listing = wait_for(
            lambda: (out := manage(cli, "projects", "list")) and "ACTIVE_HEALTHY" in out and out,
            timeout=120,
            what="the project to come up",
        )
        [row] = [line for line in listing.splitlines() if line.rstrip().endswith("devtest")]
        ref = row.split()[0]
        # Protected from its first start: WAL archived into the embedded default repository
        # (var/backups, made by scripts/dev), and a base backup taken (the pass's, or this one).
        shown = json.loads(manage(cli, "backups", "list", ref, "--json"))
        assert (shown["archiving"], shown["failure"]) == (True, ""), shown
        assert shown["repository"] == f"file://{var}/backups"
        asked = run_manage(cli, "backups", "run", ref)
        assert asked.returncode == 0 or "in progress" in asked.stderr, asked.stderr
        backup = wait_for(
            lambda: (
                (done := json.loads(manage(cli, "backups", "list", ref, "--json"))["backups"])
                and done[0]["status"] != "running"
                and done[0]
            ),
            timeout=120,
            what="the first base backup",
        )
        assert backup["status"] == "completed", backup["error"]
        [server] = postmasters(var)
        # The local names point at the local router, which routes db.<ref> to the runtime:
        # its own server answers (and refuses a wrong password).
        name = f"db.{ref}.berth.localhost"
        until(first, lambda: f"{ROUTER_ADDRESS} {name}" in (tmp_path / "hosts").read_text(), timeout=30, what=name)
        assert "127.0.0.1 localhost" in (tmp_path / "hosts").read_text()
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(
                host=name,
                hostaddr=ROUTER_ADDRESS,
                port=5432,
                user="postgres",
                password="wrong-password",
                sslmode="require",
                connect_timeout=10,
            )
        pgbouncer = var / "runtimes" / ".berth-pooler" / "pgbouncer.pid"
        until(first, pgbouncer.exists, timeout=60, what="PgBouncer, once the project is pooled")
        first.note(var)
        # honcho, web (and its reloader), worker, agent, devnames, Postgres, PgBouncer
        assert len(first.started) >= 7, first.started
        assert first.interrupt() in (0, 130), log.read_text()
        assert first.still_running() == [], log.read_text()
        assert process_start(server) in (None, ("Z", first.started[server][1]))  # gone (a zombie has ended)
        assert f"stopped 1 runtime(s): {ref}" in log.read_text()
        assert (tmp_path / "hosts").read_text() == "127.0.0.1 localhost\n"  # the block went with scripts/dev

        second = Dev(env, log)
        until(second, lambda: postmasters(var), timeout=120, what="the runtime to start again")
        until(second, lambda: answers(f"http://127.0.0.1:{web}/"), timeout=120, what=f"the web on {web} again")
        second.note(var)
        assert f"started 1 runtime(s): {ref}" in log.read_text()
        assert second.interrupt() in (0, 130), log.read_text()
        assert second.still_running() == [], log.read_text()
        # Stopped cleanly: pg_ctl's fast shutdown removes the pid file; a killed server leaves it.
        assert postmasters(var) == set()
    finally:
        for dev in (first, second):
            if dev is not None:
                dev.cleanup(var)
        stop_clusters(var)
        shutil.rmtree(var, ignore_errors=True)
