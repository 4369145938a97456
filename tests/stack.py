"""The real stack for end-to-end tests: a worker cluster (manage.py qcluster) against the test
database, and a port range free for the runtimes a real agent starts."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent  # the checkout
RUNTIMES = ROOT / "runtimes"  # the templates Berth ships


def worker_env(tmp_path: Path, **overrides) -> dict:
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTH_", "Q_", "DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="berth.settings",
        DEBUG="1",
        DATABASE_URL=url,
        BERTH_VAR_DIR=str(tmp_path),
        BERTH_ENCRYPTION_KEY=settings.BERTH_ENCRYPTION_KEY,
        SECRET_KEY=settings.SECRET_KEY,
        Q_WORKERS="1",
        Q_POLL="0.2",
        PYTHONUNBUFFERED="1",
    )
    env.update({key: str(value) for key, value in overrides.items()})
    return env


class Worker:
    """`manage.py qcluster` in its own process group, so it can be stopped or killed whole."""

    def __init__(self, tmp_path: Path, **overrides):
        self.log = tmp_path / f"qcluster-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "qcluster"],
                cwd=ROOT,
                env=worker_env(tmp_path, **overrides),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL the whole cluster: no cleanup, as when a machine dies."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        # qcluster's graceful stop can take a long while; tests give it a moment, then kill.
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(predicate, *, timeout: float, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# Below Linux's ephemeral range (32768-60999), where short-lived client sockets would collide
# with runtimes. BERTH_TEST_PORT_BASE moves it, so parallel checkouts on one machine keep apart;
# each pytest-xdist worker of a run (scripts/test runs two) takes its own window of
# PORT_WINDOW ports above it, and looks for free ports only there: a range one worker found
# free must not be handed to the other's cluster before the first binds it.
PORT_WINDOW = 1200
PORT_BASE = int(os.environ.get("BERTH_TEST_PORT_BASE", "24000")) + PORT_WINDOW * int(
    os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
)
PORT_CEILING = 32768
assert PORT_BASE + PORT_WINDOW <= PORT_CEILING, f"BERTH_TEST_PORT_BASE leaves no room below {PORT_CEILING}"


def free_port_range(size: int, start: int = PORT_BASE) -> int:
    """A start port whose next `size` ports are free to bind on every address right now, in
    this worker's window."""
    for first in range(start, PORT_BASE + PORT_WINDOW - size + 1, size):
        try:
            for port in range(first, first + size):
                for address in ("127.0.0.1", "0.0.0.0"):
                    with socket.socket() as s:
                        s.bind((address, port))
        except OSError:
            continue
        return first
    raise AssertionError("no free port range")


def agent_host(agent, *, name: str = "local", block_size: int = 20, blocks: int = 2, start: int = PORT_BASE):
    """Templates registered, and a runtime host on `agent` whose port range is free right now,
    which has reported to Berth (as after `manage.py hosts refresh`).

    The agent's first info looks up its Postgres installations; on a loaded machine that can
    outlast the page deadline creation allows, which is not what these tests are about."""
    from hosts.models import RuntimeHost
    from templating.actions import sync_templates

    sync_templates()
    first = free_port_range(block_size * blocks, start)
    host = RuntimeHost.objects.create(
        name=name,
        agent_url=agent.base_url,
        agent_token=agent.token,
        port_range_start=first,
        port_range_end=first + block_size * blocks - 1,
        block_size=block_size,
    )
    # In a thread of its own: the browser tests' Playwright keeps an event loop running in this
    # one, where the agent client cannot start its own.
    with ThreadPoolExecutor(1) as pool:
        reported = pool.submit(_refresh_and_close, host).result()
    assert reported, f"the agent at {agent.base_url} did not report"
    host.refresh_from_db()
    return host


def _refresh_and_close(host) -> bool:
    from hosts.actions import refresh_host

    try:
        return refresh_host(host, deadline=30)
    finally:
        connection.close()


def connect(project, password: str | None = None) -> psycopg.Connection:
    """The superuser on `project`'s database, at the port the database names now (a restore
    onto another host moves it)."""
    from projects.models import Project

    project = Project.objects.select_related("port_block").get(pk=project.pk)
    return psycopg.connect(
        host="127.0.0.1",
        port=project.port_block.first_port,
        user="postgres",
        password=password or project.secrets["postgres_password"],
        dbname="postgres",
        autocommit=True,
        connect_timeout=5,
    )


class SilentServer:
    """Accepts connections and never answers; with `trickle`, sends HTTP headers and then one
    byte a second forever. Stands in for a wedged agent or an image registry that hangs."""

    def __init__(self, trickle: bool = False):
        self.trickle = trickle
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn):
        with conn:
            try:
                if self.trickle:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                while not self.stopped.is_set():
                    if self.trickle:
                        conn.sendall(b" ")
                    time.sleep(1)
            except OSError:
                return

    def close(self):
        self.stopped.set()
        self.sock.close()
