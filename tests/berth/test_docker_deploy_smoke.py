"""Smoke test of Berth's own deployment: Dockerfile + docker-compose.yml on a real engine.

Builds the images from the locally built base (berth/debian-base:bookworm; Debian's python3,
the pinned requirements from PyPI; layers are cached across runs), brings the stack up as
its own compose project (PostgreSQL from berth/test-postgres:15, web, worker, agent), logs
in over HTTP as a browser would (CSRF, behind a TLS proxy: `X-Forwarded-Proto: https`),
provisions a docker-test project through the containerised agent and waits for
ACTIVE_HEALTHY, which needs the agent's probes, run inside its container, to reach the
ports the stack published on the Docker host. Then deletes it and takes everything down.

Needs no Django test database. SKIPPED with the reason when no engine or base image is
there (`eval "$(scripts/docker-engine --env)" && scripts/docker-images`).
"""

import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from tests.agent.test_docker_engine import require_engine
from tests.stack import PORT_BASE, ROOT, free_port_range

BASE_IMAGE = "berth/debian-base:bookworm"
POSTGRES_IMAGE = "berth/test-postgres:15"
APP_IMAGE, AGENT_IMAGE = "berth/berth:latest", "berth/berth-agent:latest"
EXTRA_CA_FOLDER = Path("/usr/local/share/ca-certificates")
BUILD_TIMEOUT_S = 900
UP_TIMEOUT_S = 180
PROVISION_TIMEOUT_S = 150


def free_port(start: int = 0) -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", start))
        return s.getsockname()[1]


def build(engine, target: str, tag: str) -> float:
    """`docker build` of one Dockerfile target (classic builder, cached); returns seconds taken."""
    args = ["--build-arg", f"BASE_IMAGE={BASE_IMAGE}"]
    # A machine behind a TLS-intercepting proxy trusts extra CAs; the build needs them for PyPI.
    extra = "".join(p.read_text() for p in sorted(EXTRA_CA_FOLDER.glob("*.crt")))
    if extra:
        args += ["--build-arg", f"EXTRA_CA_CERTS={extra}"]
    started = time.monotonic()
    done = subprocess.run(
        [engine["docker"], "build", "--network", "host", "--pull=false", *args, "--target", target, "-t", tag, "."],
        cwd=ROOT,
        env={**engine["env"], "DOCKER_BUILDKIT": "0"},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert done.returncode == 0, f"building {tag} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return time.monotonic() - started


class Deployment:
    """The compose project of docker-compose.yml, run with a private name, port and secrets."""

    def __init__(self, engine, agent_root: Path):
        self.engine = engine
        self.name = "berthsmoke" + secrets.token_hex(3)
        self.web_port = free_port()
        self.admin_password = secrets.token_urlsafe(16)
        self.agent_token = secrets.token_urlsafe(24)
        host = engine["host"]
        assert host.startswith("unix://"), f"the agent needs the engine's socket to mount, not {host}"
        self.env = {
            **engine["env"],
            "SECRET_KEY": secrets.token_urlsafe(40),
            "BERTH_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "BERTH_DB_PASSWORD": secrets.token_urlsafe(16),
            "BERTH_AGENT_TOKEN": self.agent_token,
            "BERTH_POSTGRES_IMAGE": POSTGRES_IMAGE,
            "BERTH_WEB_PORT": str(self.web_port),
            "BERTH_DOCKER_SOCKET": host.removeprefix("unix://"),
            "BERTH_AGENT_ROOT": str(agent_root),
            "BERTH_OPERATION_DEADLINE": "120",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
        }
        for name in ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "DATABASE_URL", "DEBUG"):
            self.env.pop(name, None)

    def compose(self, *args: str, timeout: float = 120, check: bool = True, env: dict | None = None) -> str:
        done = subprocess.run(
            [self.engine["compose"], "-p", self.name, "-f", str(ROOT / "docker-compose.yml"), *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def manage(self, *args: str, env: dict | None = None) -> str:
        flags = [item for key, value in (env or {}).items() for item in ("-e", f"{key}={value}")]
        return self.compose("exec", "-T", *flags, "web", "python", "manage.py", *args, env=env)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"


def wait_until(check, *, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except (httpx.HTTPError, AssertionError) as error:
            last = error
        time.sleep(interval)
    raise AssertionError(f"{what} not within {timeout}s (last: {last!r})")


def log_in(deployment: Deployment) -> dict[str, str]:
    """Log in through the login form as a browser behind the TLS proxy would; returns the cookies.

    Production cookies are Secure, so they are carried by hand over this plain-HTTP hop.
    """
    proxy = {"X-Forwarded-Proto": "https"}
    with httpx.Client(headers=proxy, timeout=10) as client:
        page = client.get(deployment.url("/login/"))
        assert page.status_code == 200, page.status_code
        cookies = dict(page.cookies)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        login = client.post(
            deployment.url("/login/"),
            data={"username": "admin", "password": deployment.admin_password, "csrfmiddlewaretoken": token},
            headers={
                "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
                "Referer": f"https://127.0.0.1:{deployment.web_port}/login/",
            },
        )
        assert login.status_code == 302, f"login refused ({login.status_code}): {login.text[:500]}"
        cookies.update(login.cookies)
        assert "sessionid" in cookies
        return cookies


def get_page(deployment: Deployment, cookies: dict, path: str) -> httpx.Response:
    headers = {"X-Forwarded-Proto": "https", "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
    return httpx.get(deployment.url(path), headers=headers, timeout=10)


def remove_runtime(engine, ref: str) -> None:
    def docker(*args):
        return subprocess.run([engine["docker"], *args], env=engine["env"], capture_output=True, text=True, timeout=60)

    ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={ref}").stdout.split()
    if ids:
        docker("rm", "-f", "-v", *ids)
    names = docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={ref}").stdout.split()
    if names:
        docker("volume", "rm", "-f", *names)
    docker("network", "rm", f"{ref}_default")


def test_berth_deploys_with_docker_compose_and_provisions_through_its_agent():
    engine = require_engine(images=(BASE_IMAGE, POSTGRES_IMAGE, "berth/test-gateway:latest"))
    timings = {"build app": build(engine, "app", APP_IMAGE), "build agent": build(engine, "agent", AGENT_IMAGE)}
    # The same path inside the agent's container and on the host; short, and reachable by all.
    agent_root = Path(tempfile.mkdtemp(prefix="berth-smoke-", dir="/tmp"))
    agent_root.chmod(0o755)
    deployment = Deployment(engine, agent_root)
    refs: list[str] = []
    started = time.monotonic()
    try:
        deployment.compose("up", "-d", "--no-build", timeout=UP_TIMEOUT_S)
        wait_until(
            lambda: httpx.get(deployment.url("/login/"), headers={"X-Forwarded-Proto": "https"}).status_code == 200,
            timeout=UP_TIMEOUT_S,
            what="the web service (migrations, then gunicorn)",
        )
        timings["up"] = time.monotonic() - started

        # Static files are collected into the image and served by whitenoise.
        css = re.search(
            r'href="(/static/[^"]+\.css)"',
            httpx.get(deployment.url("/login/"), headers={"X-Forwarded-Proto": "https"}).text,
        )
        if css:
            assert httpx.get(deployment.url(css.group(1)), headers={"X-Forwarded-Proto": "https"}).status_code == 200

        deployment.manage(
            "createsuperuser",
            "--noinput",
            "--username",
            "admin",
            "--email",
            "admin@example.com",
            env={"DJANGO_SUPERUSER_PASSWORD": deployment.admin_password},
        )
        deployment.manage("templates", "sync")
        first = free_port_range(20, PORT_BASE + 1100)
        # Register this Docker host's agent (as staff would in the admin) and ask it for its info.
        registered = deployment.manage(
            "shell",
            "-c",
            "import os\n"
            "from hosts.actions import refresh_host\n"
            "from hosts.models import RuntimeHost\n"
            "host = RuntimeHost.objects.create(name='docker', agent_url='http://agent:8470',"
            f" agent_token=os.environ['AGENT_TOKEN'], port_range_start={first}, port_range_end={first + 19},"
            " block_size=10)\n"
            "assert refresh_host(host, deadline=20), host.last_error\n"
            "print('probe_host', host.capabilities['probe_host'], host.capabilities['probe_host_source'])\n"
            "print('driver', host.capabilities['driver'], host.capabilities['compose'])\n",
            env={"AGENT_TOKEN": deployment.agent_token},
        )
        info = dict(line.split(" ", 1) for line in registered.splitlines() if " " in line)
        assert info["driver"].startswith("docker "), registered

        cookies = log_in(deployment)
        assert get_page(deployment, cookies, "/").status_code == 200

        created = deployment.manage("projects", "create", "Smoke", "--template", "docker-test", "--host", "docker")
        ref = re.search(r"Created (\w+)", created).group(1)
        refs.append(ref)
        provisioning = time.monotonic()

        def status():
            listing = deployment.manage("projects", "list")
            line = next(line for line in listing.splitlines() if line.startswith(ref))
            state = line.split()[1]
            if state in ("INIT_FAILED", "UNKNOWN"):
                raise RuntimeError(f"provisioning failed: {line}\n{timeline(deployment, ref)}")
            return state == "ACTIVE_HEALTHY"

        try:
            wait_until(status, timeout=PROVISION_TIMEOUT_S, what=f"{ref} ACTIVE_HEALTHY", interval=2)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{timeline(deployment, ref)}") from None
        timings["provision"] = time.monotonic() - provisioning

        # The probes ran inside the agent's container, on the probe host it resolved there.
        agent_log = deployment.compose("logs", "--no-color", "agent")
        resolved = re.search(r"probe host (\S+) via (\S+),", agent_log)
        assert resolved, agent_log
        assert resolved.groups() == ("host.docker.internal", "host.docker.internal"), resolved.groups()
        assert info["probe_host"] == "host.docker.internal host.docker.internal"
        gateway = deployment.compose(
            "exec", "-T", "agent", "python", "-c", "import socket; print(socket.gethostbyname('host.docker.internal'))"
        ).strip()
        health = timeline(deployment, ref)
        assert "All probes pass" in health, health
        print(f"\nsmoke: agent probe host host.docker.internal -> {gateway} (extra_hosts host-gateway)")

        # The dashboard, with the logged-in session, shows the project healthy.
        page = get_page(deployment, cookies, f"/projects/{ref}/")
        if page.status_code == 404:  # the project page's path belongs to the dashboard
            page = get_page(deployment, cookies, "/")
        assert page.status_code == 200 and ref in page.text

        deployment.manage("projects", "delete", ref, "--purge-data")
        wait_until(
            lambda: "REMOVED" in deployment.manage("projects", "list"), timeout=60, what=f"{ref} REMOVED", interval=2
        )
        assert not (agent_root / ref).exists()
    finally:
        timings["total"] = time.monotonic() - started
        if os.environ.get("BERTH_SMOKE_KEEP") != "1":
            deployment.compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout=120, check=False)
            for ref in refs:
                remove_runtime(engine, ref)
            shutil.rmtree(agent_root, ignore_errors=True)
        print("smoke timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))


def timeline(deployment: Deployment, ref: str) -> str:
    """The project's operations and events, printed by the web container, for failure messages."""
    return deployment.compose(
        "exec",
        "-T",
        "web",
        "python",
        "manage.py",
        "shell",
        "-c",
        "from operations.models import Operation\n"
        f"for op in Operation.objects.filter(project__ref='{ref}').order_by('created_at'):\n"
        "    print(op.kind, op.state, op.error_code, op.error_message)\n"
        "    for e in op.events.order_by('pk'): print('   ', e.step, e.message)\n",
        check=False,
    )
