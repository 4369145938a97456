"""The agent's HTTP API (v1, JSON, bearer token); see docs/architecture.md for the table.

Invariants:
- Every request is authenticated before anything else, routes included: a missing or
  wrong token gets 401 with no detail. Tokens are compared in constant time.
- Request bodies are capped; a reply is always JSON, errors as {"error": {code, message}}.
- Runtime refs are checked against the project ref pattern before any path is built.
"""

import base64
import binascii
import hmac
import json
import re
import signal
import socket
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from agent import AGENT_VERSION, API_VERSION
from agent.config import AgentConfig, ConfigError, load_config
from agent.drivers import Driver, select_driver
from agent.drivers.docker import compose_command
from agent.errors import ApiError, Invalid, NotFound
from agent.files import FileWrite
from agent.portcheck import check_ports, parse_ports
from agent.probes import ProbeHost, engine_shares_network, parse_probes, resolve_probe_host, run_probes
from agent.query import QuerySpec, run_query
from agent.runtimes import Runtimes, check_ref

MAX_BODY_BYTES = 16 << 20
HEALTH_DEFAULT_DEADLINE_S = 10.0
# Per-read socket timeout for incoming requests, so a stalled client cannot hold a thread.
REQUEST_READ_TIMEOUT_S = 30
_REF = r"(?P<ref>[^/]+)"
ROUTES = [
    ("GET", re.compile(r"/v1/info"), "info"),
    ("PUT", re.compile(rf"/v1/runtimes/{_REF}/files"), "put_files"),
    ("POST", re.compile(rf"/v1/runtimes/{_REF}/digests"), "digests"),
    ("POST", re.compile(rf"/v1/runtimes/{_REF}/(?P<action>up|down|restart)"), "lifecycle"),
    ("GET", re.compile(rf"/v1/runtimes/{_REF}/status"), "status"),
    ("POST", re.compile(rf"/v1/runtimes/{_REF}/query"), "query"),
    ("DELETE", re.compile(rf"/v1/runtimes/{_REF}"), "delete"),
    ("POST", re.compile(r"/v1/ports/check"), "check_ports"),
    ("POST", re.compile(r"/v1/health"), "health"),
]


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, config: AgentConfig, driver: Driver, probe_host: ProbeHost):
        if ":" in config.listen_host:
            self.address_family = socket.AF_INET6
        self.token = config.token.encode()
        self.config = config
        self.driver = driver
        self.probe_host = probe_host
        self.runtimes = Runtimes(config.root, driver, config.deadline_s)
        super().__init__((config.listen_host, config.listen_port), AgentHandler)


class AgentHandler(BaseHTTPRequestHandler):
    server: AgentServer
    timeout = REQUEST_READ_TIMEOUT_S
    server_version = f"berth-agent/{AGENT_VERSION}"
    sys_version = ""  # no Python version in the Server header, even to callers without a token

    def do_GET(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def _handle(self) -> None:
        if not self._authorised():
            self._discard_body()
            self._reply(401, {"error": {"code": "unauthorized", "message": "unauthorized"}})
            return
        try:
            status, body = 200, self._dispatch()
        except ApiError as error:
            status, body = error.status, error.body()
        except Exception:
            traceback.print_exc()
            status, body = 500, {"error": {"code": "internal", "message": "internal error; see the agent's log"}}
        self._reply(status, body)

    def _authorised(self) -> bool:
        scheme, _, presented = self.headers.get("Authorization", "").partition(" ")
        # compare_digest takes the same time wherever the first difference is.
        return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), self.server.token)

    def _dispatch(self) -> dict:
        url = urlsplit(self.path)
        for method, pattern, name in ROUTES:
            match = pattern.fullmatch(url.path)
            if method == self.command and match:
                return getattr(self, f"_{name}")(self._json_body(), parse_qs(url.query), **match.groupdict())
        raise NotFound(f"no route for {self.command} {url.path}")

    def _info(self, body: dict, query: dict) -> dict:
        compose = compose_command()
        return {
            "agent_version": AGENT_VERSION,
            "api_version": API_VERSION,
            "driver": self.server.driver.name,
            "probe_host": self.server.probe_host.host,
            "probe_host_source": self.server.probe_host.source,
            "postgres_versions": self.server.driver.postgres_versions(),
            "compose": " ".join(compose) if compose else None,
        }

    def _put_files(self, body: dict, query: dict, ref: str) -> dict:
        writes = [_file_write(item) for item in _list(body, "files", dict)]
        return self.server.runtimes.put_files(ref, writes, _list(body, "user_paths", str), _list(body, "remove", str))

    def _digests(self, body: dict, query: dict, ref: str) -> dict:
        return self.server.runtimes.digests(ref, _list(body, "paths", str))

    def _lifecycle(self, body: dict, query: dict, ref: str, action: str) -> dict:
        runtimes = self.server.runtimes
        return getattr(runtimes, action)(ref, runtimes.deadline(body.get("deadline_s")))

    def _status(self, body: dict, query: dict, ref: str) -> dict:
        return self.server.runtimes.status(ref)

    def _query(self, body: dict, query: dict, ref: str) -> dict:
        check_ref(ref)
        deadline = self.server.runtimes.deadline(body.get("deadline_s"))
        return run_query(QuerySpec.from_body(body), self.server.probe_host.host, deadline.seconds)

    def _delete(self, body: dict, query: dict, ref: str) -> dict:
        purge = query.get("purge_data", ["0"])
        if purge not in (["0"], ["1"]):
            raise Invalid("purge_data must be 0 or 1")
        runtimes = self.server.runtimes
        return runtimes.delete(ref, purge == ["1"], runtimes.deadline(_query_seconds(query, "deadline_s")))

    def _check_ports(self, body: dict, query: dict) -> dict:
        free, taken = check_ports(parse_ports(body.get("ports")))
        return {"free": free, "taken": taken}

    def _health(self, body: dict, query: dict) -> dict:
        probes = parse_probes(body.get("probes"))
        deadline = self.server.runtimes.deadline(body.get("deadline_s", HEALTH_DEFAULT_DEADLINE_S))
        return {"results": run_probes(probes, self.server.probe_host.host, deadline.seconds)}

    def _json_body(self) -> dict:
        length = self._content_length()
        if not length:
            return {}
        try:
            body = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Invalid("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise Invalid("the request body must be a JSON object")
        return body

    def _content_length(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise Invalid("send the body with a Content-Length, not chunked")
        text = self.headers.get("Content-Length", "0")
        if not text.isdigit():
            raise Invalid("Content-Length is not a number")
        if int(text) > MAX_BODY_BYTES:
            raise Invalid(f"the request body is larger than {MAX_BODY_BYTES} bytes")
        return int(text)

    def _discard_body(self) -> None:
        # Read what the client sent, so closing the connection does not reset it before
        # the client has read our answer.
        text = self.headers.get("Content-Length", "0")
        if text.isdigit() and int(text) <= MAX_BODY_BYTES:
            self.rfile.read(int(text))

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _list(body: dict, key: str, item_type: type) -> list:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, item_type) for item in value):
        raise Invalid(f"{key} must be a list of {item_type.__name__} values")
    return value


def _query_seconds(query: dict, key: str) -> float | None:
    values = query.get(key)
    if values is None:
        return None
    try:
        return float(values[-1])
    except ValueError:
        raise Invalid(f"{key} must be a number of seconds") from None


def _file_write(item: dict) -> FileWrite:
    path, content, policy = item.get("path"), item.get("content_b64"), item.get("policy", "managed")
    if not isinstance(path, str) or not isinstance(content, str) or not isinstance(policy, str):
        raise Invalid("each file needs a path, content_b64 and a policy")
    try:
        return FileWrite(path, base64.b64decode(content, validate=True), policy)
    except binascii.Error:
        raise Invalid(f"file {path!r}: content_b64 is not base64") from None


def build_server(config: AgentConfig) -> AgentServer:
    driver = select_driver(config.driver, config.root)
    probe_host = resolve_probe_host(
        config.probe_host_override,
        driver.name,
        engine_shares_network=driver.name == "docker" and engine_shares_network(),
    )
    try:
        return AgentServer(config, driver, probe_host)
    except OSError as exc:
        raise ConfigError(
            f"BERTH_AGENT_LISTEN: cannot listen on {config.listen_host}:{config.listen_port}: {exc.strerror}"
        ) from None


def main() -> int:
    try:
        server = build_server(load_config())
    except ConfigError as exc:
        print(f"berth-agent: {exc}", file=sys.stderr)
        return 2
    # Honcho and service managers stop us with SIGTERM; runtimes keep running without us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    host, port = server.server_address[:2]
    print(
        f"berth-agent {AGENT_VERSION} listening on http://{host}:{port} "
        f"(driver {server.driver.name}, probe host {server.probe_host.host} via {server.probe_host.source}, "
        f"root {server.config.root})",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
