"""The host's database endpoint: the router (agent.router), PgBouncer (agent.pooler) and their routes.

`PUT /v1/routes` hands the whole table over (`update`): the router routes on it at once,
and a worker thread then prepares the pooler for new projects and reloads PgBouncer, so
the call never waits on a project's database. The table is kept (without passwords) in
the agent's root, so an agent that restarts routes as before it stopped, before the
control plane pushes again.
"""

import logging
import ssl
import subprocess
import threading
from pathlib import Path

import msgspec

from agent import api
from agent.config import AgentConfig, ConfigError
from agent.pooler import PgBouncer
from agent.router import Router, Table

log = logging.getLogger("agent.endpoint")

FOLDER = ".berth-router"
CERT_DEADLINE_S = 30


class Endpoint:
    def __init__(self, config: AgentConfig, probe_host: str):
        self.folder = config.root / FOLDER
        self.folder.mkdir(mode=0o700, exist_ok=True)
        self.pgbouncer = PgBouncer(config.root, config.pgbouncer_listen, probe_host)
        tls, tls_error = tls_context(config, self.folder)
        self.router = Router(
            db=config.router_listen,
            pooler=config.pooler_listen,
            pgbouncer=config.pgbouncer_listen,
            tls=tls,
            probe_host=probe_host,
            max_connections=config.router_max_connections,
            tls_error=tls_error,
        )
        self._lock = threading.Lock()
        self._request = api.RoutesRequest(domain="")
        self._pooled: frozenset[str] = frozenset()
        self._wake = threading.Event()
        self._worker = threading.Thread(target=self._work, name="berth-pooler", daemon=True)

    def start(self) -> None:
        self.pgbouncer.setup()
        try:
            kept = msgspec.json.decode((self.folder / "routes.json").read_bytes(), type=api.RoutesRequest)
        except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            kept = None
        self.router.start()
        self._worker.start()
        if kept is not None:
            self.update(kept, keep=False)

    def stop(self) -> None:
        self.router.stop()
        self.pgbouncer.stop()

    def status(self) -> api.RouterStatus:
        return self.router.status(self.pgbouncer.status())

    def update(self, request: api.RoutesRequest, keep: bool = True) -> api.RouterStatus:
        with self._lock:
            self._request = request
            self._publish()
            if keep:
                bare = api.RoutesRequest(
                    domain=request.domain,
                    routes=[msgspec.structs.replace(route, password="") for route in request.routes],
                )
                staging = self.folder / "routes.json.new"
                staging.write_bytes(msgspec.json.encode(bare))
                staging.replace(self.folder / "routes.json")
        self._wake.set()
        return self.status()

    def _publish(self) -> None:
        routes = {route.ref: route for route in self._request.routes}
        self.router.set_table(Table(self._request.domain, routes, self._pooled & routes.keys()))

    def _work(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                routes = list(self._request.routes)
            try:
                pooled = self.pgbouncer.apply(routes)
            except Exception:
                log.exception("configuring PgBouncer failed; the next route change tries again")
                continue
            with self._lock:
                self._pooled = pooled
                self._publish()


def tls_context(config: AgentConfig, folder: Path) -> tuple[ssl.SSLContext | None, str | None]:
    """The certificate the router shows where it ends TLS (the pooler's name, refusals), or
    None and why there is none.

    `BERTH_ROUTER_TLS_CERT_FILE`/`_KEY_FILE` when set (a file that does not load stops
    startup); else a self-signed one made once by openssl and kept in the root (clients that
    require TLS without verifying it accept it, as they accept the runtimes' own). A host
    without openssl runs on without one: the router reports it and serves what needs none."""
    cert, key = config.router_tls_cert, config.router_tls_key
    if cert is None:
        cert, key = folder / "tls.crt", folder / "tls.key"
        if not cert.exists():
            try:
                make_certificate(cert, key)
            except ConfigError as error:
                return None, str(error)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"BERTH_ROUTER_TLS_CERT_FILE: cannot load {cert} with its key: {exc}") from None
    return context, None


def make_certificate(cert: Path, key: Path) -> None:
    argv = [
        *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-days", "3650", "-subj", "/CN=berth database router", "-keyout", str(key), "-out", str(cert)),
    ]
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=CERT_DEADLINE_S)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(
            f"the router needs a TLS certificate: set BERTH_ROUTER_TLS_CERT_FILE and _KEY_FILE, "
            f"or install openssl to make one ({exc})"
        ) from None
    key.chmod(0o600)
