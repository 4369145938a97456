"""The agent's HTTP API (v1, JSON, bearer token) served by waitress; see docs/architecture.md.

Invariants:
- Every request is authenticated before anything else, routes included (`BearerAuth`): a
  missing or wrong token gets 401 with no detail, and the app never reads its body.
  Tokens are compared in constant time.
- A body is decoded into its route's request type from agent.api, and a query string
  into its query type; anything else is 422 `invalid`. Replies are the reply types of
  agent.api, checked before they are sent; errors are api.ErrorReply.
- Runtime refs are checked against the project ref pattern before any path is built.
- What a flood can take is bounded: a fixed pool of request threads, at most
  `connection_limit` open connections (a connection is not a thread: waitress reads and
  buffers requests on one event loop), bodies of at most `max_body_bytes`, refused before
  any thread sees them, and idle connections closed after `idle_timeout_s`.
"""

import hmac
import logging
import os
import re
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qsl

import msgspec
import waitress

from agent import AGENT_VERSION, API_VERSION, api
from agent.backups import Backups
from agent.config import MAX_DEADLINE_S, AgentConfig, ConfigError, load_config
from agent.docker_backups import DockerBackups
from agent.drivers import Driver, select_driver
from agent.drivers.docker import compose_command
from agent.endpoint import Endpoint
from agent.errors import ApiError, Invalid, NotFound
from agent.files import FileWrite
from agent.metrics import collect as collect_metrics
from agent.portcheck import check_ports, ephemeral_ports
from agent.probes import ProbeHost, engine_shares_network, resolve_probe_host, run_probes
from agent.query import run_query
from agent.runtimes import Runtimes, check_ref

log = logging.getLogger("agent")

UNAUTHORIZED = api.ErrorReply(api.ErrorDetail("unauthorized", "unauthorized"))
INTERNAL = api.ErrorReply(api.ErrorDetail("internal", "internal error; see the agent's log"))
# How often waitress looks for idle connections, so one closes at most this long after its timeout.
IDLE_CHECK_S = 5
# Open files beyond one per connection: per request thread, one health call's probe
# sockets and a command's pipes; for the process, its log, the listening socket, the
# server's wake-up pipe and what libraries open.
FILES_PER_THREAD = api.MAX_PROBES + 8
FILES_RESERVED = 64
# A routed connection: the client's socket and the upstream's, and for a passed-through one
# the two pipes its bytes move through (agent.router.Splice).
FILES_PER_ROUTED = 6
# Looking up installed Postgres majors runs commands (pg_ctl --version, docker image ls);
# info reuses the answer this long, so a burst of info calls does not fork a process each.
POSTGRES_VERSIONS_TTL_S = 30.0
# An upgrade's prepare and switch copy the project's data (a schema, or with the dump method
# everything): they may ask for up to this long, past BERTH_AGENT_DEADLINE; the control plane
# asks for what its operation has left.
UPGRADE_DEADLINE_S = MAX_DEADLINE_S
_REF = r"(?P<ref>[^/]+)"
_ACTION = r"(?P<action>up|down|restart)"
# How often the agent reads its runtimes' logs for failed passwords (network bans).
BAN_SCAN_S = 10.0
_UPGRADE_STEP = r"(?P<step>switch|abort|rollback|discard)"


class Agent:
    """The API over this host's runtimes, as a WSGI application (behind BearerAuth)."""

    def __init__(self, config: AgentConfig, driver: Driver, probe_host: ProbeHost, endpoint: Endpoint):
        self.config = config
        self.driver = driver
        self.probe_host = probe_host
        self.endpoint = endpoint
        self.runtimes = Runtimes(config.root, driver, config.deadline_s)
        # The docker driver's database runs in a container: its own backups (agent.docker_backups).
        self.backups = DockerBackups(self.runtimes) if driver.name == "docker" else Backups(self.runtimes)
        self._versions_lock = threading.Lock()
        self._versions: tuple[float, list[int]] = (-POSTGRES_VERSIONS_TTL_S, [])

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        try:
            status, reply = 200, self._dispatch(environ)
        except ApiError as error:
            status, reply = error.status, error.body()
        except Exception:
            log.exception("%s %s failed", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            status, reply = 500, INTERNAL
        return respond(start_response, status, reply)

    def _dispatch(self, environ: dict) -> api.Reply:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        for route in ROUTES:
            match = route.path.fullmatch(path)
            if match and route.method == method:
                arguments = match.groupdict()
                if route.body:
                    arguments["body"] = decode_body(route.body, read_body(environ))
                if route.query:
                    arguments["query"] = decode_query(route.query, environ.get("QUERY_STRING", ""))
                return route.handler(self, **arguments)
        raise NotFound(f"no route for {method} {path}")

    def info(self) -> api.AgentInfo:
        compose = compose_command()
        return api.AgentInfo(
            agent_version=AGENT_VERSION,
            api_version=API_VERSION,
            driver=self.driver.name,
            probe_host=self.probe_host.host,
            probe_host_source=self.probe_host.source,
            postgres_versions=self.postgres_versions(),
            compose=" ".join(compose) if compose else None,
            ephemeral_ports=ephemeral_ports(),
            router=self.endpoint.status(),
            memory_bytes=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        )

    def warm(self) -> None:
        """Run info's lookups (the Postgres majors, the compose command) once before serving:
        a host's registration asks info as soon as the agent listens, within the page
        deadline, and a loaded host's first lookup alone can take most of it. A lookup that
        fails here is looked up again by the first info call."""
        try:
            self.info()
        except ApiError as error:
            log.warning("looking up what this host runs failed (%s); the first info call tries again", error)

    def postgres_versions(self) -> list[int]:
        """The driver's Postgres majors, looked up at most every POSTGRES_VERSIONS_TTL_S.

        A lookup that raises (it timed out) is not kept: the next call looks again."""
        with self._versions_lock:  # one lookup at a time; callers meanwhile wait for its answer
            looked_up_at, versions = self._versions
            if time.monotonic() - looked_up_at >= POSTGRES_VERSIONS_TTL_S:
                versions = self.driver.postgres_versions()
                self._versions = (time.monotonic(), versions)
            return versions

    def put_files(self, ref: str, body: api.PutFilesRequest) -> api.FilesReply:
        writes = [FileWrite(file.path, file.content, file.policy) for file in body.files]
        reply = self.runtimes.put_files(
            ref, writes, body.user_paths, body.remove, body.private_paths, body.backup, body.backup_suffix
        )
        return checked(api.FilesReply, reply)

    def contents(self, ref: str, body: api.ContentsRequest) -> api.ContentsReply:
        return checked(api.ContentsReply, self.runtimes.contents(ref, body.paths))

    def digests(self, ref: str, body: api.DigestsRequest) -> api.DigestsReply:
        return checked(api.DigestsReply, self.runtimes.digests(ref, body.paths))

    def command(self, ref: str, action: str, body: api.CommandRequest) -> api.CommandReply:
        run = getattr(self.runtimes, action)  # up | down | restart, as the route allows
        return checked(api.CommandReply, run(ref, self.runtimes.deadline(body.deadline_s), body.operation))

    def cancel(self, ref: str, body: api.CancelRequest) -> api.CancelReply:
        return checked(api.CancelReply, self.runtimes.cancel(ref, body.operation, body.wait_s))

    def upgrade_check(self, ref: str, body: api.UpgradeCheckRequest) -> api.UpgradeCheck:
        return checked(api.UpgradeCheck, self.runtimes.upgrade_check(ref, body.target_major))

    def upgrade_state(self, ref: str) -> api.UpgradeState:
        return checked(api.UpgradeState, self.runtimes.upgrade_state(ref))

    def upgrade_prepare(self, ref: str, body: api.UpgradePrepareRequest) -> api.UpgradeState:
        deadline = self.runtimes.deadline(body.deadline_s, longest_s=UPGRADE_DEADLINE_S)
        reply = self.runtimes.upgrade(
            ref, "prepare", deadline, body.operation, target=body.target_major, method=body.method
        )
        return checked(api.UpgradeState, reply)

    def upgrade_step(self, ref: str, step: str, body: api.CommandRequest) -> api.UpgradeState:
        deadline = self.runtimes.deadline(body.deadline_s, longest_s=UPGRADE_DEADLINE_S)
        return checked(api.UpgradeState, self.runtimes.upgrade(ref, step, deadline, body.operation))

    def backup_archiving(self, ref: str, body: api.ArchivingRequest) -> api.ArchiverStatus:
        deadline = self.runtimes.deadline(body.deadline_s)
        return self.backups.configure_archiving(ref, body, deadline)

    def backup_archiver(self, ref: str) -> api.ArchiverStatus:
        return self.backups.archiver_status(ref)

    def backup_start(self, ref: str, body: api.BaseBackupRequest) -> api.BackupJob:
        return self.backups.start_base_backup(ref, body)

    def restore_start(self, ref: str, body: api.RestoreRequest) -> api.BackupJob:
        return self.backups.start_restore(ref, body)

    def verify_start(self, ref: str, body: api.VerifyRequest) -> api.BackupJob:
        return self.backups.start_verify(ref, body)

    def backup_job(self, ref: str) -> api.BackupJob:
        return self.backups.job(ref)

    def backup_catalog(self, body: api.CatalogRequest) -> api.BackupCatalog:
        return self.backups.catalog(body, self.runtimes.deadline(body.deadline_s))

    def backup_prune(self, body: api.PruneRequest) -> api.PruneReply:
        return self.backups.prune(body, self.runtimes.deadline(body.deadline_s))

    def settings(self, ref: str, body: api.SettingsRequest) -> api.SettingsReply:
        deadline = self.runtimes.deadline(body.deadline_s)
        return checked(api.SettingsReply, self.runtimes.apply_settings(ref, body, deadline))

    def bans(self, ref: str, body: api.BansRequest) -> api.BansReply:
        deadline = self.runtimes.deadline()
        return checked(api.BansReply, self.runtimes.bans(ref, body.unban, deadline))

    def scan_bans_until(self, stop: threading.Event) -> None:
        """Network bans without anyone asking: every runtime's log is read every BAN_SCAN_S."""
        while not stop.wait(BAN_SCAN_S):
            self.runtimes.scan_bans()

    def status(self, ref: str) -> api.RuntimeStatus:
        return checked(api.RuntimeStatus, self.runtimes.status(ref))

    def query(self, ref: str, body: api.QueryRequest) -> api.QueryReply:
        check_ref(ref)  # no path is built from it here, but a malformed ref is refused like on every route
        deadline = self.runtimes.deadline(body.deadline_s)
        return run_query(body, self.probe_host.host, deadline.seconds)

    def delete(self, ref: str, query: api.DeleteQuery) -> api.DeleteReply:
        deadline = self.runtimes.deadline(query.deadline_s)
        return checked(api.DeleteReply, self.runtimes.delete(ref, query.purge_data, deadline, query.operation))

    def check_ports(self, body: api.PortsRequest) -> api.PortCheck:
        return check_ports(body.ports)

    def routes(self, body: api.RoutesRequest) -> api.RouterStatus:
        return self.endpoint.update(body)

    def health(self, body: api.HealthRequest) -> api.HealthReply:
        deadline = self.runtimes.deadline(body.deadline_s)
        return api.HealthReply(run_probes(body.probes, self.probe_host.host, deadline.seconds))

    def metrics(self, body: api.MetricsRequest) -> api.MetricsReply:
        deadline = self.runtimes.deadline(body.deadline_s)
        return api.MetricsReply(collect_metrics(body.targets, self.probe_host.host, deadline.seconds))


@dataclass(frozen=True)
class Route:
    method: str
    path: re.Pattern
    handler: Callable[..., api.Reply]  # an Agent method; it gets the path's groups, and `body` or `query` when typed
    body: type[api.Request] | None = None
    query: type[api.Request] | None = None


ROUTES = (
    Route("GET", re.compile(r"/v1/info"), Agent.info),
    Route("PUT", re.compile(rf"/v1/runtimes/{_REF}/files"), Agent.put_files, body=api.PutFilesRequest),
    Route("POST", re.compile(rf"/v1/runtimes/{_REF}/digests"), Agent.digests, body=api.DigestsRequest),
    Route("POST", re.compile(rf"/v1/runtimes/{_REF}/contents"), Agent.contents, body=api.ContentsRequest),
    Route("POST", re.compile(rf"/v1/runtimes/{_REF}/{_ACTION}"), Agent.command, body=api.CommandRequest),
    Route("POST", re.compile(rf"/v1/runtimes/{_REF}/cancel"), Agent.cancel, body=api.CancelRequest),
    Route("GET", re.compile(rf"/v1/runtimes/{_REF}/status"), Agent.status),
    Route("GET", re.compile(rf"/v1/runtimes/{_REF}/upgrade"), Agent.upgrade_state),
    Route("POST", re.compile(rf"/v1/runtimes/{_REF}/upgrade/check"), Agent.upgrade_check, body=api.UpgradeCheckRequest),
    Route(
        "POST",
        re.compile(rf"/v1/runtimes/{_REF}/upgrade/prepare"),
        Agent.upgrade_prepare,
        body=api.UpgradePrepareRequest,
    ),
    Route(
        "POST", re.compile(rf"/v1/runtimes/{_REF}/upgrade/{_UPGRADE_STEP}"), Agent.upgrade_step, body=api.CommandRequest
    ),
    Route("POST", re.compile(rf"/v1/runtimes/{_REF}/query"), Agent.query, body=api.QueryRequest),
    Route(
        "PUT", re.compile(rf"/v1/runtimes/{_REF}/backups/archiving"), Agent.backup_archiving, body=api.ArchivingRequest
    ),
    Route("GET", re.compile(rf"/v1/runtimes/{_REF}/backups/archiving"), Agent.backup_archiver),
    Route("POST", re.compile(rf"/v1/runtimes/{_REF}/backups/base"), Agent.backup_start, body=api.BaseBackupRequest),
    Route("POST", re.compile(rf"/v1/runtimes/{_REF}/backups/restore"), Agent.restore_start, body=api.RestoreRequest),
    Route("POST", re.compile(rf"/v1/runtimes/{_REF}/backups/verify"), Agent.verify_start, body=api.VerifyRequest),
    Route("GET", re.compile(rf"/v1/runtimes/{_REF}/backups/job"), Agent.backup_job),
    Route("POST", re.compile(r"/v1/backups/catalog"), Agent.backup_catalog, body=api.CatalogRequest),
    Route("POST", re.compile(r"/v1/backups/prune"), Agent.backup_prune, body=api.PruneRequest),
    Route("PUT", re.compile(rf"/v1/runtimes/{_REF}/settings"), Agent.settings, body=api.SettingsRequest),
    Route("POST", re.compile(rf"/v1/runtimes/{_REF}/bans"), Agent.bans, body=api.BansRequest),
    Route("DELETE", re.compile(rf"/v1/runtimes/{_REF}"), Agent.delete, query=api.DeleteQuery),
    Route("POST", re.compile(r"/v1/ports/check"), Agent.check_ports, body=api.PortsRequest),
    Route("POST", re.compile(r"/v1/health"), Agent.health, body=api.HealthRequest),
    Route("PUT", re.compile(r"/v1/routes"), Agent.routes, body=api.RoutesRequest),
    Route("POST", re.compile(r"/v1/metrics"), Agent.metrics, body=api.MetricsRequest),
)


class BearerAuth:
    """WSGI middleware: only a request bearing the token reaches the app.

    Any other gets 401 with no detail, its body unread (waitress has buffered it, within
    the body limit, before any thread sees the request).
    """

    def __init__(self, app, token: str):
        self.app = app
        self.token = token.encode()

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        scheme, _, presented = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        # WSGI hands headers over as latin-1 text; encoding it back gives the bytes sent.
        # compare_digest takes the same time wherever the first difference is.
        if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode("latin-1"), self.token):
            return self.app(environ, start_response)
        return respond(start_response, 401, UNAUTHORIZED)


def respond(start_response, status: int, reply: api.Reply) -> list[bytes]:
    data = msgspec.json.encode(reply)
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    start_response(f"{status} {HTTPStatus(status).phrase}", headers)
    return [data]


def read_body(environ: dict) -> bytes:
    # waitress has read the whole body (chunked or not) and set its length; it refused
    # any body over the limit with 413 before the request reached a thread.
    length = environ.get("CONTENT_LENGTH") or "0"
    return environ["wsgi.input"].read(int(length))


def decode_body(kind: type[api.Request], data: bytes) -> api.Request:
    try:
        return msgspec.json.decode(data or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise Invalid(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise Invalid(f"the request body is not JSON: {exc}") from None


def decode_query(kind: type[api.Request], query: str) -> api.Request:
    try:
        return msgspec.convert(dict(parse_qsl(query, keep_blank_values=True)), kind, strict=False)
    except msgspec.ValidationError as exc:
        raise Invalid(f"invalid query string: {exc}") from None


def checked(kind: type[api.Reply], reply: dict) -> api.Reply:
    """The agent's own result as its reply type; a mismatch is the agent's bug, a 500."""
    return msgspec.convert(reply, kind)


def listen_socket(config: AgentConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.listen_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.listen_host, config.listen_port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"BERTH_AGENT_LISTEN: cannot listen on {config.listen_host}:{config.listen_port}: {exc.strerror}"
        ) from None
    return sock


def ensure_open_files(config: AgentConfig) -> None:
    """Raise the soft open-files limit to what the limits can use, or refuse to start.

    A server out of file descriptors fails every accept, so this is checked up front.
    """
    routed = config.router_max_connections * FILES_PER_ROUTED
    needed = config.connection_limit + config.threads * FILES_PER_THREAD + routed + FILES_RESERVED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            f"BERTH_AGENT_CONNECTION_LIMIT={config.connection_limit} with BERTH_AGENT_THREADS={config.threads} "
            f"and BERTH_ROUTER_MAX_CONNECTIONS={config.router_max_connections} may need {needed} open files "
            f"and this process may open {hard} (ulimit -n): lower them or raise it"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def build_agent(config: AgentConfig) -> Agent:
    driver = select_driver(config)
    probe_host = resolve_probe_host(
        config.probe_host_override,
        driver.name,
        engine_shares_network=driver.name == "docker" and engine_shares_network(),
    )
    return Agent(config, driver, probe_host, Endpoint(config, probe_host.host))


def build_server(agent: Agent):
    """The agent behind its auth on waitress, bound and with its threads started; `.run()` serves."""
    config = agent.config
    ensure_open_files(config)
    return waitress.create_server(
        BearerAuth(agent, config.token),
        sockets=[listen_socket(config)],
        threads=config.threads,
        connection_limit=config.connection_limit,
        max_request_body_size=config.max_body_bytes,
        channel_timeout=config.idle_timeout_s,
        cleanup_interval=min(IDLE_CHECK_S, config.idle_timeout_s),
        # poll(), not select(): select cannot watch descriptors numbered past 1023.
        asyncore_use_poll=True,
        ident="berth-agent",
    )


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="berth-agent %(levelname)s %(name)s: %(message)s")
    # waitress warns on every request that waits for a thread; waiting is the pool doing its job.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    try:
        agent = build_agent(load_config())
        agent.warm()
        server = build_server(agent)
    except ConfigError as exc:
        print(f"berth-agent: {exc}", file=sys.stderr)
        return 2
    # Honcho and service managers stop us with SIGTERM; runtimes keep running without us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    host, port = server.socket.getsockname()[:2]
    config = agent.config
    print(
        f"berth-agent {AGENT_VERSION} listening on http://{f'[{host}]' if ':' in host else host}:{port} "
        f"(driver {agent.driver.name}, probe host {agent.probe_host.host} via {agent.probe_host.source}, "
        f"root {config.root}, {config.threads} threads, at most {config.connection_limit} connections)",
        flush=True,
    )
    agent.endpoint.start()
    stop_scans = threading.Event()
    threading.Thread(target=agent.scan_bans_until, args=(stop_scans,), name="berth-bans", daemon=True).start()
    if isinstance(agent.backups, DockerBackups):  # the archive commands wait for it
        threading.Thread(target=agent.backups.ship_until, args=(stop_scans,), name="berth-wal", daemon=True).start()
    try:
        server.run()  # returns on SIGTERM or Ctrl-C, after waiting briefly for running requests
    finally:
        stop_scans.set()
        server.close()
        agent.endpoint.stop()
    return 0
