"""The real Docker engine, the local images and the docker-test template's compose file.

Renders runtimes/docker-test for a sample project by hand (Jinja, StrictUndefined, as the
template contract says), runs it with `docker-compose -p <ref> up -d`, checks that Postgres
15 answers on the published db port with the rendered password and the gateway answers 200
on the api port, then `down -v`. Needs an engine (`scripts/docker-engine`) and the images
(`scripts/docker-images`); without them these tests are SKIPPED with the reason. No Django
database is used.
"""

import os
import secrets
import shutil
import socket
import subprocess
import time
import tomllib
from pathlib import Path

import httpx
import jinja2
import psycopg
import pytest

from tests.stack import ROOT

TEMPLATE = ROOT / "runtimes" / "docker-test"
PRIVATE_HOST = "unix:///run/berth-docker/docker.sock"
IMAGES = ("berth/test-postgres:15", "berth/test-gateway:latest")
PASSWORD = "pa$$w'o\"rd $HOME {x}"  # compose interpolation, YAML quoting and Jinja must all keep it
UP_DEADLINE_S = 90


def _docker_bin() -> str | None:
    return "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else shutil.which("docker")


def _find_engine() -> tuple[str | None, str]:
    """The DOCKER_HOST of an engine that answers, or None and why none does."""
    docker = _docker_bin()
    if docker is None:
        return None, "no docker client installed"
    candidates = [os.environ.get("DOCKER_HOST", ""), PRIVATE_HOST, "unix:///var/run/docker.sock"]
    for host in dict.fromkeys(c for c in candidates if c):
        try:
            done = subprocess.run(
                [docker, "info", "--format", "{{.ServerVersion}}"],
                env={**os.environ, "DOCKER_HOST": host},
                capture_output=True,
                text=True,
                timeout=10,
            )
        except subprocess.TimeoutExpired:
            continue
        if done.returncode == 0:
            return host, ""
    return None, f"no Docker engine answers at {', '.join(dict.fromkeys(c for c in candidates if c))}"


def _skip(reason: str):
    pytest.skip(f'NO DOCKER: {reason}; run `eval "$(scripts/docker-engine --env)" && scripts/docker-images`')


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("0.0.0.0", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _context(ref: str, db_port: int, api_port: int) -> dict:
    manifest = tomllib.loads((TEMPLATE / "manifest.toml").read_text())
    return {
        "project": {"ref": ref, "name": "Docker engine test"},
        "postgres": {"major": 15, "image": manifest["postgres"]["versions"]["15"]["image"]},
        "ports": {"db": db_port, "api": api_port},
        "secrets": {
            "postgres_password": PASSWORD,
            "jwt_secret": secrets.token_urlsafe(32),
            "anon_key": "anon." + secrets.token_urlsafe(16),
            "service_role_key": "service." + secrets.token_urlsafe(16),
            "dashboard_username": "supabase",
            "dashboard_password": secrets.token_urlsafe(16),
        },
    }


def _render(folder: Path, context: dict) -> None:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    for name in ("runtime.toml", "docker-compose.yml"):
        text = env.from_string((TEMPLATE / name).read_text()).render(context)
        (folder / name).write_text(text)


def test_manifest_follows_the_contract():
    manifest = tomllib.loads((TEMPLATE / "manifest.toml").read_text())
    assert manifest["template"]["driver"] == "docker"
    assert manifest["ports"] == {"db": 0, "api": 1}
    assert manifest["postgres"]["versions"]["15"]["image"] == "berth/test-postgres:15"
    probes = {p["name"]: p for p in manifest["probes"]}
    assert probes["db"]["kind"] == "postgres" and probes["db"]["slot"] == "db"
    assert probes["api"]["kind"] == "http" and probes["api"]["slot"] == "api"
    assert probes["api"]["path"] == "/health" and probes["api"]["expect_status"] == 200
    on_disk = {p.name for p in TEMPLATE.iterdir()} - {"manifest.toml"}
    assert set(manifest["files"]) == on_disk
    assert all(f["policy"] == "managed" and f["render"] == "jinja" for f in manifest["files"].values())


def test_runtime_toml_names_the_docker_driver(tmp_path):
    _render(tmp_path, _context("tplcheck", 50000, 50001))
    runtime = tomllib.loads((tmp_path / "runtime.toml").read_text())
    assert runtime == {"driver": "docker", "compose_file": "docker-compose.yml"}


def require_engine(images=IMAGES) -> dict:
    """The engine, compose and images the docker tests need, or pytest.skip saying what is missing.

    Shared by every tests/*/test_docker_*.py module: they SKIP, never fail, without an engine.
    """
    host, reason = _find_engine()
    if host is None:
        _skip(reason)
    compose = shutil.which("docker-compose")
    if compose is None:
        _skip("docker-compose (v1, Debian package docker-compose) is not installed")
    env = {**os.environ, "DOCKER_HOST": host}
    for image in images:
        found = subprocess.run([_docker_bin(), "image", "inspect", image], env=env, capture_output=True, timeout=30)
        if found.returncode != 0:
            _skip(f"image {image} is missing on {host}")
    return {"env": env, "compose": compose, "docker": _docker_bin(), "host": host}


@pytest.fixture(scope="module")
def engine():
    return require_engine()


@pytest.fixture(scope="module")
def runtime(engine, tmp_path_factory):
    folder = tmp_path_factory.mktemp("docker-test-runtime")
    ref = "berthtest" + secrets.token_hex(4)
    db_port, api_port = _free_ports(2)
    _render(folder, _context(ref, db_port, api_port))

    def compose(*args, timeout=UP_DEADLINE_S):
        return subprocess.run(
            [engine["compose"], "-p", ref, *args],
            cwd=folder,
            env=engine["env"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    checked = compose("config", "-q", timeout=30)
    assert checked.returncode == 0, checked.stderr
    up = compose("up", "-d")
    try:
        assert up.returncode == 0, f"docker-compose up failed:\n{up.stdout}\n{up.stderr}"
        yield {"ref": ref, "db_port": db_port, "api_port": api_port, "compose": compose}
    finally:
        down = compose("down", "-v", "--timeout", "10")
        assert down.returncode == 0, f"docker-compose down -v failed:\n{down.stdout}\n{down.stderr}"


def _wait(check, what: str, deadline_s: float = 60):
    """Calls check() until it returns a truthy value; fails with the last error past the deadline."""
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the last error is the report
            last = exc
        time.sleep(0.5)
    pytest.fail(f"{what} not ready within {deadline_s}s: {last!r}")


def _docker_words(engine, *args: str) -> list[str]:
    """The words `docker ARGS` prints on the test engine."""
    done = subprocess.run([engine["docker"], *args], env=engine["env"], capture_output=True, text=True, timeout=30)
    return done.stdout.split()


def _health(engine, runtime, service: str) -> str:
    ids = runtime["compose"]("ps", "-q", service, timeout=30).stdout.split()
    assert ids, f"no container for service {service}"
    return " ".join(_docker_words(engine, "inspect", "-f", "{{.State.Health.Status}}", ids[0]))


def test_postgres_15_answers_on_the_published_db_port(runtime):
    def query():
        with psycopg.connect(
            host="127.0.0.1",
            port=runtime["db_port"],
            user="postgres",
            password=PASSWORD,
            dbname="postgres",
            connect_timeout=3,
        ) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]

    version = _wait(query, "Postgres on the db port")
    assert version.startswith("15."), version


def test_postgres_refuses_a_wrong_password(runtime):
    test_postgres_15_answers_on_the_published_db_port(runtime)  # ready first
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host="127.0.0.1", port=runtime["db_port"], user="postgres", password="wrong", connect_timeout=3
        ).close()


def test_gateway_answers_200_on_the_published_api_port(runtime):
    def get():
        reply = httpx.get(f"http://127.0.0.1:{runtime['api_port']}/health", timeout=3)
        return reply if reply.status_code == 200 else None

    reply = _wait(get, "the gateway on the api port")
    assert reply.json()["status"] == "ok"
    assert httpx.get(f"http://127.0.0.1:{runtime['api_port']}/nothing-here", timeout=3).status_code == 404


def test_both_services_become_healthy(engine, runtime):
    for service in ("db", "api"):
        _wait(lambda s=service: _health(engine, runtime, s) == "healthy", f"the {service} healthcheck")


def test_down_removes_the_containers_and_the_volume(engine, runtime):
    ref = runtime["ref"]
    assert _docker_words(engine, "volume", "ls", "-q", "--filter", f"name={ref}_") == [f"{ref}_db-data"]
    down = runtime["compose"]("down", "-v", "--timeout", "10")
    assert down.returncode == 0, down.stderr
    assert _docker_words(engine, "ps", "-aq", "--filter", f"label=com.docker.compose.project={ref}") == []
    assert _docker_words(engine, "volume", "ls", "-q", "--filter", f"name={ref}_") == []
