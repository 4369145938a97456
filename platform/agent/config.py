"""The agent's settings, read strictly from environment variables.

Every error names the variable, so a bad value stops startup with a message an operator
can act on instead of a misbehaving agent later.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DRIVER_CHOICES = ("process", "docker", "auto")
DEFAULT_LISTEN = "127.0.0.1:8470"
DEFAULT_ROOT = "var/runtimes"
DEFAULT_DEADLINE_S = 60.0
MAX_DEADLINE_S = 3600.0
MIN_TOKEN_LENGTH = 16
# The HTTP server (waitress): see "Agent" in docs/architecture.md for why these bounds.
DEFAULT_THREADS = 16  # requests handled at once; more wait in the server's queue
DEFAULT_CONNECTION_LIMIT = 1000  # open connections; past it new ones wait in the listen backlog
DEFAULT_MAX_BODY_MB = 16
DEFAULT_IDLE_TIMEOUT_S = 30  # a connection with no request in progress and no traffic is closed
# Where scripts/postgres installs PostgreSQL in the checkout this agent runs from (pgbin/16/bin,
# pgbin/17/bin, pgbin/clients/bin); an installed agent has no checkout and no such folder.
CHECKOUT_POSTGRES = Path(__file__).resolve().parents[2] / "pgbin" / "*" / "bin"


class ConfigError(Exception):
    """A setting is missing or malformed; the agent must not start."""


@dataclass(frozen=True)
class AgentConfig:
    listen_host: str
    listen_port: int  # 0 lets the system pick; the agent prints the port it bound
    token: str
    root: Path  # absolute and resolved, so containment checks compare real paths
    driver: str  # process | docker | auto (auto is resolved at startup)
    deadline_s: float  # default command deadline; a request may only shorten it
    probe_host_override: str | None
    threads: int
    connection_limit: int
    max_body_bytes: int
    idle_timeout_s: int
    # Bin folders (or glob patterns of them) searched for PostgreSQL before the system's usual
    # places (/usr/lib/postgresql/<major>/bin, ...), which are always searched.
    postgres_path: tuple[str, ...] = ()


def load_config(environ: Mapping[str, str] = os.environ) -> AgentConfig:
    host, port = _listen(environ)
    return AgentConfig(
        listen_host=host,
        listen_port=port,
        token=_token(environ),
        root=_root(environ),
        driver=_driver(environ),
        deadline_s=_deadline(environ),
        probe_host_override=_get(environ, "BERTH_AGENT_PROBE_HOST"),
        threads=_whole(environ, "BERTH_AGENT_THREADS", DEFAULT_THREADS, 1, 256),
        connection_limit=_whole(environ, "BERTH_AGENT_CONNECTION_LIMIT", DEFAULT_CONNECTION_LIMIT, 1, 100_000),
        max_body_bytes=_whole(environ, "BERTH_AGENT_MAX_BODY_MB", DEFAULT_MAX_BODY_MB, 1, 1024) << 20,
        idle_timeout_s=_whole(environ, "BERTH_AGENT_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT_S, 1, 3600),
        postgres_path=_postgres_path(environ),
    )


def _get(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _listen(environ: Mapping[str, str]) -> tuple[str, int]:
    value = _get(environ, "BERTH_AGENT_LISTEN") or DEFAULT_LISTEN
    host, sep, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:8470
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"BERTH_AGENT_LISTEN={value!r} is not host:port (e.g. {DEFAULT_LISTEN})")
    return host, int(port_text)


def _token(environ: Mapping[str, str]) -> str:
    token, path = _get(environ, "BERTH_AGENT_TOKEN"), _get(environ, "BERTH_AGENT_TOKEN_FILE")
    if token and path:
        raise ConfigError("set only one of BERTH_AGENT_TOKEN and BERTH_AGENT_TOKEN_FILE")
    name = "BERTH_AGENT_TOKEN"
    if path:
        name = "BERTH_AGENT_TOKEN_FILE"
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"BERTH_AGENT_TOKEN_FILE={path!r} cannot be read: {exc.strerror}") from None
    if not token:
        raise ConfigError("BERTH_AGENT_TOKEN (or BERTH_AGENT_TOKEN_FILE) is required: the bearer token callers present")
    if len(token) < MIN_TOKEN_LENGTH or any(ch.isspace() for ch in token):
        raise ConfigError(f"{name}: the token must be at least {MIN_TOKEN_LENGTH} characters without whitespace")
    return token


def _root(environ: Mapping[str, str]) -> Path:
    value = _get(environ, "BERTH_AGENT_ROOT") or DEFAULT_ROOT
    root = Path(value).expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"BERTH_AGENT_ROOT={value!r} cannot be created: {exc.strerror}") from None
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        raise ConfigError(f"BERTH_AGENT_ROOT={value!r} is not a folder the agent can write")
    return root


def _driver(environ: Mapping[str, str]) -> str:
    value = (_get(environ, "BERTH_AGENT_DRIVER") or "auto").lower()
    if value not in DRIVER_CHOICES:
        raise ConfigError(f"BERTH_AGENT_DRIVER={value!r} is not one of {', '.join(DRIVER_CHOICES)}")
    return value


def _deadline(environ: Mapping[str, str]) -> float:
    value = _get(environ, "BERTH_AGENT_DEADLINE")
    if value is None:
        return DEFAULT_DEADLINE_S
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"BERTH_AGENT_DEADLINE={value!r} is not a number of seconds") from None
    if not 0 < seconds <= MAX_DEADLINE_S:
        raise ConfigError(f"BERTH_AGENT_DEADLINE={value!r} must be above 0 and at most {MAX_DEADLINE_S:g} seconds")
    return seconds


def _postgres_path(environ: Mapping[str, str]) -> tuple[str, ...]:
    """BERTH_AGENT_POSTGRES_PATH: `:`-separated absolute bin folders or glob patterns of them
    (`/opt/pg/*/bin`); by default the checkout's pgbin/*/bin, which it replaces."""
    value = _get(environ, "BERTH_AGENT_POSTGRES_PATH")
    if value is None:
        return (str(CHECKOUT_POSTGRES),)
    entries = tuple(entry.strip() for entry in value.split(":") if entry.strip())
    relative = [entry for entry in entries if not entry.startswith("/")]
    if relative:
        raise ConfigError(f"BERTH_AGENT_POSTGRES_PATH: {relative[0]!r} is not an absolute path")
    return entries


def _whole(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = _get(environ, name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise ConfigError(f"{name}={value!r} must be a whole number from {low} to {high}")
    return int(value)
