"""This host's PgBouncer (Debian's), run and configured by the agent from the route table.

One PgBouncer per host, in transaction mode, listening on loopback only (`BERTH_PGBOUNCER_LISTEN`):
the router's pooler address is its only client, after rewriting `postgres.<ref>` to user
`postgres` and database `<ref>`. Each running project is one `[databases]` entry naming its
runtime's port and pool size.

Invariants:
- A change of routes rewrites pgbouncer.ini and reloads PgBouncer (SIGHUP): clients connected
  stay connected; it is started only when it does not run (one left by a killed agent, found
  by its pidfile, is kept and reloaded) and stops with the agent.
- Clients authenticate against the project's own roles: `auth_query` calls
  `pgbouncer.get_auth($1)` in the project's database as its `pgbouncer` role (the Supabase
  image's shape), and PgBouncer logs in to the server with the client's SCRAM keys. The
  `pgbouncer` role's password is this host's (generated once, kept 0600 beside the config):
  `prepare` sets it, with the schema and function when missing, in each project's database,
  idempotently, before the project is listed in `[databases]`. A project whose preparation
  failed is left out (the router says the pooler is being prepared) and tried again.
- The superuser passwords that preparation uses arrive with the routes and are never written
  to disk or logged.
"""

import hashlib
import logging
import os
import pwd
import secrets
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import msgspec
import psycopg
from psycopg import sql

from agent import api
from agent.commands import RunAs, child_env

log = logging.getLogger("agent.pooler")

FOLDER = ".berth-pooler"
AUTH_ROLE = "pgbouncer"
PREPARE_DEADLINE_S = 10
PGBOUNCER_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer")
# Supabase's pgbouncer.get_auth: a login role's SCRAM secret, none once it has expired.
GET_AUTH = """
CREATE OR REPLACE FUNCTION pgbouncer.get_auth(p_usename TEXT)
RETURNS TABLE(username TEXT, password TEXT)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $func$
BEGIN
    RETURN QUERY
    SELECT rolname::TEXT, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword::TEXT END
    FROM pg_catalog.pg_authid
    WHERE rolname = p_usename AND rolcanlogin;
END;
$func$
"""


@dataclass(frozen=True)
class Prepared:
    """What a project's preparation was done for: redone when its route or this host's secret changes."""

    port: int
    host: str | None
    secret: str  # a digest of the auth role's password, never the password


class PgBouncer:
    def __init__(self, root: Path, listen: tuple[str, int], probe_host: str):
        self.folder = root / FOLDER
        self.listen = listen
        self.run_as = unprivileged()
        self.probe_host = probe_host
        self.binary = next((path for path in PGBOUNCER_PATHS if os.access(path, os.X_OK)), None)
        self.error: str | None = None
        self._lock = threading.Lock()  # one configuration at a time
        self._prepared: dict[str, Prepared] = {}
        self._process: subprocess.Popen | None = None
        self._password = ""

    @property
    def address(self) -> str:
        host, port = self.listen
        return f"{host}:{port}"

    def status(self) -> api.ListenerStatus:
        return api.ListenerStatus(self.address, self.error is None and self._pid() is not None, self.error)

    def setup(self) -> None:
        """The folder, the auth role's password and what was prepared before this process."""
        self.folder.mkdir(mode=0o700, exist_ok=True)
        if self.run_as:
            os.chown(self.folder, self.run_as.uid, self.run_as.gid)
        secret_file = self.folder / "auth-password"
        if not secret_file.exists():
            self._write(secret_file, secrets.token_urlsafe(32))
        self._password = secret_file.read_text().strip()
        try:
            kept = msgspec.json.decode((self.folder / "prepared.json").read_bytes(), type=dict[str, Prepared])
        except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            kept = {}
        self._prepared = {ref: done for ref, done in kept.items() if done.secret == self._secret_digest()}

    def apply(self, routes: list[api.RouteSpec]) -> frozenset[str]:
        """Prepare what needs it, write the configuration, start or reload PgBouncer; the refs it serves."""
        with self._lock:
            running = [route for route in routes if not route.paused]
            for route in running:
                self._prepare(route)
            pooled = [route for route in running if route.ref in self._prepared]
            self._write_json()
            if self.binary is None:
                self.error = "PgBouncer is not installed on this host (Debian: apt-get install pgbouncer)"
                return frozenset()
            self._write(self.folder / "pgbouncer.ini", self._ini(pooled))
            self._write(self.folder / "userlist.txt", f'"{AUTH_ROLE}" "{self._password}"\n')
            if pooled or self._pid() is not None:  # nothing to serve yet: nothing to start
                self._start_or_reload()
            return frozenset(route.ref for route in pooled) if self.error is None else frozenset()

    def stop(self) -> None:
        """Stop PgBouncer with the agent: its only client is the agent's router, whose
        connections end with the agent anyway. One left by a killed agent is reused."""
        pid = self._pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()

    # --- preparation ---------------------------------------------------------------------------
    def _prepare(self, route: api.RouteSpec) -> None:
        wanted = Prepared(route.port, route.host, self._secret_digest())
        if self._prepared.get(route.ref) == wanted or not route.password:
            return
        try:
            with psycopg.connect(
                host=route.host or self.probe_host,
                port=route.port,
                user="postgres",
                password=route.password,
                dbname="postgres",
                connect_timeout=PREPARE_DEADLINE_S,
                application_name="berth-agent-pooler",
                options=f"-c statement_timeout={PREPARE_DEADLINE_S * 1000}",
                autocommit=True,
            ) as connection:
                with connection.transaction():
                    self._prepare_in(connection)
        except psycopg.Error as exc:
            log.warning("pooler: preparing project %s failed: %s", route.ref, str(exc).strip())
            self._prepared.pop(route.ref, None)
            return
        self._prepared[route.ref] = wanted

    def _prepare_in(self, connection: psycopg.Connection) -> None:
        # Idempotent: the role, schema and function may exist already (the Supabase image
        # has them); only the password is this host's.
        exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [AUTH_ROLE]).fetchone()
        if not exists:
            connection.execute(f"CREATE ROLE {AUTH_ROLE} LOGIN")
        password = sql.Literal(self._password)
        connection.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(sql.Identifier(AUTH_ROLE), password))
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS pgbouncer AUTHORIZATION {AUTH_ROLE}")
        has_function = connection.execute(
            "SELECT 1 FROM pg_proc WHERE proname = 'get_auth' AND pronamespace = 'pgbouncer'::regnamespace"
        ).fetchone()
        if not has_function:
            connection.execute(GET_AUTH)
        connection.execute("REVOKE ALL ON FUNCTION pgbouncer.get_auth(TEXT) FROM PUBLIC")
        connection.execute(f"GRANT USAGE ON SCHEMA pgbouncer TO {AUTH_ROLE}")
        connection.execute(f"GRANT EXECUTE ON FUNCTION pgbouncer.get_auth(TEXT) TO {AUTH_ROLE}")

    def _secret_digest(self) -> str:
        return hashlib.sha256(self._password.encode()).hexdigest()[:16]

    # --- the process ---------------------------------------------------------------------------
    def _ini(self, routes: list[api.RouteSpec]) -> str:
        host, port = self.listen
        databases = "".join(
            f"{route.ref} = host={route.host or self.probe_host} port={route.port} dbname=postgres "
            f"auth_user={AUTH_ROLE} pool_size={route.pool_size}\n"
            for route in routes
        )
        max_clients = sum(route.max_client_conn for route in routes) or 100
        return (
            "; Written by the Berth agent from this host's routes; reloaded, never edited by hand.\n"
            f"[databases]\n{databases}\n"
            "[pgbouncer]\n"
            f"listen_addr = {host}\nlisten_port = {port}\nunix_socket_dir =\n"
            f"pidfile = {self.folder / 'pgbouncer.pid'}\nlogfile = {self.folder / 'pgbouncer.log'}\n"
            "pool_mode = transaction\n"
            f"max_client_conn = {max_clients}\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {self.folder / 'userlist.txt'}\n"
            "auth_query = SELECT username, password FROM pgbouncer.get_auth($1)\n"
            "server_tls_sslmode = disable\n"  # runtimes are on this host
            "ignore_startup_parameters = extra_float_digits,options\n"
            "log_connections = 0\nlog_disconnections = 0\n"
        )

    def _start_or_reload(self) -> None:
        pid = self._pid()
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
            self.error = None
            return
        ids = {"user": self.run_as.uid, "group": self.run_as.gid, "extra_groups": []} if self.run_as else {}
        try:
            # Its own session, so a terminal's Ctrl-C reaches the agent, which stops it (`stop`).
            self._process = subprocess.Popen(
                [self.binary, "-q", str(self.folder / "pgbouncer.ini")],
                cwd=self.folder,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                **ids,
            )
        except OSError as exc:
            self.error = f"cannot run {self.binary}: {exc.strerror}"
            return
        try:
            code = self._process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.error = None  # still running after a second: it listens
            return
        self.error = f"PgBouncer exited with status {code}: {self._log_tail()}"

    def _pid(self) -> int | None:
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        try:
            pid = int((self.folder / "pgbouncer.pid").read_text().strip())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        return pid if _is_pgbouncer(pid) else None

    def _log_tail(self) -> str:
        try:
            return (self.folder / "pgbouncer.log").read_text(errors="replace")[-500:].strip()
        except OSError:
            return "no log"

    def _write(self, path: Path, text: str) -> None:
        staging = path.with_name(path.name + ".new")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            if self.run_as:
                os.fchown(fd, self.run_as.uid, self.run_as.gid)
            handle.write(text)
        os.replace(staging, path)

    def _write_json(self) -> None:
        self._write(self.folder / "prepared.json", msgspec.json.encode(self._prepared).decode())


def unprivileged() -> RunAs | None:
    """Who runs PgBouncer: it refuses root, so under a root agent the `postgres` system user
    (Debian's PostgreSQL and PgBouncer packages make it); else the agent's own user."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        return None  # PgBouncer then refuses to start, and its status says so
    return RunAs(entry.pw_uid, entry.pw_gid)


def _is_pgbouncer(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "pgbouncer"
    except OSError:
        return False
