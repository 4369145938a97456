"""The process driver: a project's Postgres run from locally installed PostgreSQL binaries.

The cluster lives in the runtime folder under `.berth-pg/` (data and log), which the files
API can never write. It listens on TCP only, with password authentication: everything
that talks to it (probes, the project's users) comes over TCP, and a unix socket would
bound the root folder's length by the 107 bytes a socket path may have.

It listens on exactly the addresses it serves, fixed when the agent starts: where the
agent probes it and where callers reach the agent (the control plane publishes the agent
URL's host as the runtime's address); loopback alone by default. A start that could not
bind one of them is a failed start, with PostgreSQL's own message: PostgreSQL carries on
with the addresses it could bind and `pg_ctl` reports success, so a server listening on
IPv6 alone would otherwise wait out the health deadline while probes to 127.0.0.1 fail.
runtime.toml says what to run:

    driver = "process"
    [postgres]
    major = 15          # must be installed here; data made by another major is refused
    port = 54000        # the leased db port
    password = "..."    # the superuser's, set by initdb (scram-sha-256 everywhere)
    user = "postgres"   # optional
    tls_cert = "..."    # optional, with tls_key: PEM text; the cluster then serves TLS
    tls_key = "..."
    init_sql = "supabase.sql"  # optional: a file of the runtime run once the cluster is up

The init SQL (the `postgres` template's Supabase roles and schemas) runs as the superuser in one
transaction after every start whenever the file differs from the one that last ran there: its
sha256 is kept in the data folder, so a revision a rollout pushes runs at the restart that
follows, and a cluster a major upgrade builds (whose data folder is new) runs it once more. The
SQL is idempotent; a failure fails the `up` with PostgreSQL's message and runs again next time.

initdb and postgres refuse to run as root, so an agent running as root runs them as the
`postgres` system user, which owns `.berth-pg/`; a normal user's agent runs them itself.
"""

import hashlib
import ipaddress
import os
import pwd
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from agent import files
from agent.archiving import archive_conf
from agent.commands import CommandResult, Deadline, RunAs, run, run_checked
from agent.config import ConfigError
from agent.errors import CommandFailed, CommandTimeout, Invalid

if TYPE_CHECKING:
    from agent.runtimes import Runtime

STATE_DIR = ".berth-pg"
TLS_CERT, TLS_KEY = "server.crt", "server.key"
# Searched after the agent's own search path (BERTH_AGENT_POSTGRES_PATH, by default the
# checkout's pgbin/*/bin that scripts/postgres fills), in this order; the first folder found
# for a major wins.
BINDIR_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin")
SERVER_TOOLS = ("pg_ctl", "initdb", "postgres")  # the first one says the version
CLIENT_TOOLS = ("pg_dump", "pg_dumpall", "psql")
# Every cluster is made with this locale and encoding: the npm builds' initdb needs them
# spelt out when the environment names no locale, and they exist wherever glibc does.
CLUSTER_LOCALE, CLUSTER_ENCODING = "C.UTF-8", "UTF8"
# Loaded at start when the installation ships it (the npm builds and Debian's do), as on
# Supabase: `create extension pg_stat_statements` then works without a restart.
PRELOAD = "pg_stat_statements"
SYSTEM_USER = "postgres"
PG_CTL_STOPPED = 3  # pg_ctl status: not running
INIT_APPLIED = "berth-init.sha256"  # in the data folder: the digest of the init SQL that last ran
_CONNECT_TIMEOUT_S = 10
_VERSION = re.compile(r"\(PostgreSQL\) (\d+)")
_DISCOVERY_DEADLINE_S = 5.0
# What the server says about a start in its log ("LOG:  could not bind IPv4 address ...").
_LOG_MESSAGE = re.compile(r"\b(LOG|WARNING|ERROR|FATAL|PANIC):\s+(.*)")
_START_PROBLEMS = ("could not bind", "could not create listen socket", "could not create any")
_HBA = """\
# Managed by the Berth agent: password (scram-sha-256) authentication for every connection.
local all all scram-sha-256
host all all 0.0.0.0/0 scram-sha-256
host all all ::/0 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
host replication all ::1/128 scram-sha-256
"""


@dataclass(frozen=True)
class PostgresSettings:
    major: int
    port: int
    password: str
    user: str
    tls_cert: str | None = None
    tls_key: str | None = None
    init_sql: str | None = None

    @classmethod
    def from_manifest(cls, manifest: dict) -> "PostgresSettings":
        section = manifest.get("postgres")
        if not isinstance(section, dict):
            raise Invalid("runtime.toml needs a [postgres] table with major, port and password")
        major, port, password = section.get("major"), section.get("port"), section.get("password")
        user = section.get("user", "postgres")
        if not isinstance(major, int) or isinstance(major, bool):
            raise Invalid("runtime.toml: postgres.major must be a whole number")
        if not isinstance(port, int) or isinstance(port, bool) or not 1024 <= port <= 65535:
            raise Invalid("runtime.toml: postgres.port must be a whole number in 1024-65535")
        if not isinstance(password, str) or not password or "\n" in password:
            raise Invalid("runtime.toml: postgres.password must be a non-empty single-line string")
        if not isinstance(user, str) or not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", user):
            raise Invalid("runtime.toml: postgres.user must be a plain lowercase role name")
        cert, key = section.get("tls_cert"), section.get("tls_key")
        if (cert is None) != (key is None):
            raise Invalid("runtime.toml: postgres.tls_cert and postgres.tls_key go together")
        if cert is not None and not (
            isinstance(cert, str) and "BEGIN CERTIFICATE" in cert and isinstance(key, str) and "PRIVATE KEY" in key
        ):
            raise Invalid("runtime.toml: postgres.tls_cert and tls_key must be PEM text")
        init_sql = section.get("init_sql")
        if init_sql is not None:
            if not isinstance(init_sql, str):
                raise Invalid("runtime.toml: postgres.init_sql must be the path of a file of the runtime")
            files.validate_path(init_sql)
        return cls(major, port, password, user, cert, key, init_sql)


@dataclass(frozen=True)
class ClusterPaths:
    state: Path
    data: Path
    log: Path

    @classmethod
    def of(cls, folder: Path) -> "ClusterPaths":
        state = folder / STATE_DIR
        return cls(state, state / "data", state / "postgres.log")

    def initialised_major(self) -> int | None:
        try:
            return int((self.data / "PG_VERSION").read_text().split(".")[0])
        except FileNotFoundError:
            return None


class ProcessDriver:
    name = "process"

    def __init__(self, run_as: RunAs | None, listen_addresses: tuple[str, ...], search_path: tuple[str, ...] = ()):
        self.run_as = run_as
        self.listen_addresses = listen_addresses
        self.search_path = search_path

    @classmethod
    def for_root(cls, root: Path, serve_hosts: Iterable[str], search_path: tuple[str, ...] = ()) -> "ProcessDriver":
        """Check at startup what would otherwise fail on the first `up`.

        `serve_hosts`: where runtimes must answer (see listen_addresses); `search_path`: bin
        folders or glob patterns searched for PostgreSQL before the system's usual places.
        """
        addresses = listen_addresses(serve_hosts)
        if os.geteuid() != 0:
            return cls(run_as=None, listen_addresses=addresses, search_path=search_path)
        try:
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise ConfigError(
                f"the agent runs as root and PostgreSQL refuses to; create a {SYSTEM_USER!r} system user "
                "for the process driver to run clusters as, or run the agent as a normal user"
            ) from None
        driver = cls(RunAs(entry.pw_uid, entry.pw_gid), addresses, search_path)
        if run(["test", "-x", str(root)], Deadline(_DISCOVERY_DEADLINE_S), run_as=driver.run_as).returncode != 0:
            raise ConfigError(
                f"BERTH_AGENT_ROOT={str(root)!r} is not reachable by the {SYSTEM_USER!r} user that runs "
                "PostgreSQL; every folder above it must be searchable (chmod o+x)"
            )
        return driver

    def installations(self) -> dict[int, Path]:
        """Major version -> bin folder of each local PostgreSQL server installation (initdb,
        pg_ctl and postgres); the first found in search order wins."""
        found: dict[int, Path] = {}
        for bindir in self._candidate_bindirs():
            major = _major_of(bindir, SERVER_TOOLS)
            if major is not None:
                found.setdefault(major, bindir)
        return found

    def client_tools(self) -> dict[int, Path]:
        """Major version -> bin folder holding that major's pg_dump, pg_dumpall and psql
        (a server installation's own, or client tools alone such as pgbin/clients/bin)."""
        found: dict[int, Path] = {}
        for bindir in self._candidate_bindirs():
            major = _major_of(bindir, CLIENT_TOOLS)
            if major is not None:
                found.setdefault(major, bindir)
        return found

    def postgres_versions(self) -> list[int]:
        return sorted(self.installations())

    def folder_group(self) -> int | None:
        # PostgreSQL runs as this user and reaches its cluster through the runtime folder.
        return self.run_as.gid if self.run_as else None

    def up(self, runtime: "Runtime", deadline: Deadline) -> str:
        settings = PostgresSettings.from_manifest(runtime.manifest())
        bindir = self.bindir(settings.major)
        paths = ClusterPaths.of(runtime.folder)
        self.ensure_state_dir(paths)
        output, data_major = "", paths.initialised_major()
        if data_major is None:
            output += self.initdb(bindir, paths, settings, deadline)
        elif data_major != settings.major:
            raise Invalid(
                f"runtime {runtime.ref}: its data was made by PostgreSQL {data_major}, "
                f"and runtime.toml asks for {settings.major}"
            )
        tls = settings.tls_cert is not None
        if tls:
            # In the agent's own folder, owned by the server's user with mode 600: PostgreSQL
            # refuses a key others can read, and the files API can never write there.
            self.write_owned(paths.state / TLS_CERT, settings.tls_cert, mode=0o600)
            self.write_owned(paths.state / TLS_KEY, settings.tls_key, mode=0o600)
        self.write_serving_conf(bindir, paths, settings)
        if shutting_down(paths.data):
            # A stop cut short (its pg_ctl killed by a cancel or a deadline) leaves the
            # postmaster shutting down, and pg_ctl status still says it runs: "already
            # running" would be a cluster gone a moment later. Its stop is seen through first,
            # and only then is status asked: asked first, the shutdown could end between the
            # two looks and a stopped cluster be taken for a running one.
            output += self.stop_cluster(bindir, paths, deadline)
        running = self._pg_ctl(bindir, paths, deadline, "status").returncode == 0
        if running:
            output += "already running\n"
        else:
            output += self.start_cluster(bindir, paths, settings, deadline)
        return output + self.run_init_sql(runtime, paths, settings, deadline)

    def write_serving_conf(self, bindir: Path, paths: ClusterPaths, settings: PostgresSettings) -> None:
        """berth.conf of the cluster that serves the project, written before each start: its
        port and addresses, TLS, the preloaded library, and WAL archiving into its own
        cluster's folder. One writer for every start (up, an upgrade's switch, a rollback),
        so a cluster never serves without what the runtime was set to do (archiving)."""
        tls = settings.tls_cert is not None
        conf = server_conf(
            settings.port, self.listen_addresses, paths.state if tls else None, preload=ships_library(bindir, PRELOAD)
        ) + archive_conf(paths.state, paths.data, self.run_as)
        self.write_owned(paths.data / "berth.conf", conf)

    def run_init_sql(
        self, runtime: "Runtime", paths: ClusterPaths, settings: PostgresSettings, deadline: Deadline
    ) -> str:
        """runtime.toml's init SQL, when it differs from what last ran on this cluster (see above)."""
        if settings.init_sql is None:
            return ""
        script = files.contents(runtime.folder, [settings.init_sql])[settings.init_sql]
        if script is None:
            raise Invalid(f"runtime {runtime.ref}: postgres.init_sql names {settings.init_sql}, which is not there")
        digest = hashlib.sha256(script).hexdigest()
        marker = paths.data / INIT_APPLIED
        if marker.is_file() and marker.read_text().strip() == digest:
            return ""
        remaining_ms = max(1000, int(deadline.remaining() * 1000))
        try:
            with psycopg.connect(
                host=self.local_address(),
                port=settings.port,
                user=settings.user,
                password=settings.password,
                dbname="postgres",
                connect_timeout=min(_CONNECT_TIMEOUT_S, max(1, int(deadline.remaining()))),
                application_name="berth-agent-init",
                options=f"-c statement_timeout={remaining_ms} -c client_min_messages=error",
                autocommit=True,
            ) as connection:
                with connection.transaction():
                    # No parameters: psycopg sends the script whole (simple query protocol).
                    connection.execute(script.decode())
        except psycopg.Error as exc:
            raise CommandFailed(f"{settings.init_sql} failed on runtime {runtime.ref}: {str(exc).strip()}") from None
        self.write_owned(marker, digest + "\n")
        return f"ran {settings.init_sql}\n"

    def local_address(self) -> str:
        """Where a cluster answers on this host (a wildcard listens on loopback too)."""
        address = self.listen_addresses[0] if self.listen_addresses else "127.0.0.1"
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)

    def start_cluster(self, bindir: Path, paths: ClusterPaths, settings: PostgresSettings, deadline: Deadline) -> str:
        """pg_ctl start; a failed start, or a start that left an address unbound, raises with the server's words."""
        log_start = _size(paths.log)  # the log is appended to; this start's messages follow
        seconds = str(max(1, int(deadline.remaining())))
        start = [str(bindir / "pg_ctl"), "-D", str(paths.data), "-l", str(paths.log), "-w", "-t", seconds, "start"]
        try:
            result = self._run_checked(start, paths, deadline, settled=started(paths.data))
        except CommandFailed as failure:
            # pg_ctl only says "examine the log"; the reason (a taken port, say) is there.
            said = _start_messages(paths.log, log_start, problems_only=False)
            raise CommandFailed(
                f"PostgreSQL {settings.major} did not start on port {settings.port}: {said or failure.message}",
                output_tail=(failure.output_tail or "") + _log_tail(paths.log),
            ) from None
        unbound = _start_messages(paths.log, log_start, problems_only=True)
        if unbound:
            # Running on some addresses is not serving: stop it, so no half-reachable server stays up.
            self.stop_cluster(bindir, paths, deadline)
            raise CommandFailed(
                f"PostgreSQL {settings.major} could not listen on every address it serves "
                f"({', '.join(self.listen_addresses)}) on port {settings.port}, and was stopped: {unbound}",
                output_tail=result.output_tail + _log_tail(paths.log),
            )
        return result.output_tail

    def reload(self, runtime: "Runtime", deadline: Deadline) -> str:
        """Rewrite berth.conf and have the running server read it again (settings that need no restart)."""
        output = self.up(runtime, deadline)
        paths = ClusterPaths.of(runtime.folder)
        bindir = self.bindir(PostgresSettings.from_manifest(runtime.manifest()).major)
        return (
            output
            + self._run_checked([str(bindir / "pg_ctl"), "-D", str(paths.data), "reload"], paths, deadline).output_tail
        )

    def down(self, runtime: "Runtime", deadline: Deadline) -> str:
        paths = ClusterPaths.of(runtime.folder)
        major = paths.initialised_major()
        if major is None:
            return "no cluster\n"
        bindir = self.bindir(major)
        if self._pg_ctl(bindir, paths, deadline, "status").returncode != 0:
            return "already stopped\n"
        return self.stop_cluster(bindir, paths, deadline)

    def status(self, runtime: "Runtime", deadline: Deadline) -> tuple[str, str]:
        paths = ClusterPaths.of(runtime.folder)
        major = paths.initialised_major()
        if major is None:
            return "stopped", "no cluster yet"
        result = self._pg_ctl(self.bindir(major), paths, deadline, "status")
        if result.returncode == 0:
            return "running", result.output_tail.strip().splitlines()[0]
        if result.returncode == PG_CTL_STOPPED:
            return "stopped", f"PostgreSQL {major} cluster is not running"
        raise CommandFailed(f"pg_ctl status exited with {result.returncode}", output_tail=result.output_tail)

    def remove(self, runtime: "Runtime", purge_data: bool, deadline: Deadline) -> None:
        # The clusters live in the runtime folder, which the caller removes or keeps: the one
        # that serves, and one an upgrade left running beside it (.berth-pg/next).
        self.down(runtime, deadline)
        for data in ClusterPaths.of(runtime.folder).state.glob("*/data"):
            major = ClusterPaths(data.parent, data, data.parent / "postgres.log").initialised_major()
            if major is not None and (data / "postmaster.pid").exists():
                self.stop_cluster(self.bindir(major), ClusterPaths(data.parent, data, data.parent / "log"), deadline)

    def _candidate_bindirs(self) -> list[Path]:
        patterns = (*self.search_path, *BINDIR_GLOBS)
        # Resolved: PostgreSQL runs as another user when the agent is root, and must reach the
        # binaries by a path it may search (a checkout's pgbin/16 is a link into node_modules).
        candidates = [Path(path).resolve() for pattern in patterns for path in sorted(glob(pattern))]
        try:
            result = run(["pg_config", "--bindir"], Deadline(_DISCOVERY_DEADLINE_S))
        except (CommandFailed, CommandTimeout):
            return candidates  # no pg_config on PATH
        if result.returncode == 0:
            candidates.append(Path(result.output_tail.strip()))
        return candidates

    def bindir(self, major: int) -> Path:
        installations = self.installations()
        if major not in installations:
            available = ", ".join(str(found) for found in sorted(installations)) or "none"
            raise Invalid(f"PostgreSQL {major} is not installed on this host (available: {available})")
        return installations[major]

    def ensure_state_dir(self, paths: ClusterPaths) -> None:
        paths.state.mkdir(mode=0o700, exist_ok=True)
        if self.run_as:
            os.chown(paths.state, self.run_as.uid, self.run_as.gid)

    def initdb(
        self,
        bindir: Path,
        paths: ClusterPaths,
        settings: PostgresSettings,
        deadline: Deadline,
        locale: tuple[str, str] = (CLUSTER_LOCALE, CLUSTER_ENCODING),
    ) -> str:
        """A new cluster in paths.data; `locale` is (locale, encoding): a new project's, or the
        cluster's that an upgrade replaces, so text sorts as it did."""
        password_file = paths.state / "initdb-password"
        self.write_owned(password_file, settings.password + "\n", mode=0o600)
        initdb = [
            str(bindir / "initdb"),
            *("-D", str(paths.data), "-U", settings.user, "--auth=scram-sha-256"),
            *(f"--pwfile={password_file}", f"--locale={locale[0]}", f"--encoding={locale[1]}"),
        ]
        try:
            output = self._run_checked(initdb, paths, deadline).output_tail
        except CommandTimeout:
            # Killed midway, initdb cannot clean up; a half-made cluster would block the retry.
            shutil.rmtree(paths.data, ignore_errors=True)
            raise
        finally:
            password_file.unlink(missing_ok=True)
        (paths.data / "pg_hba.conf").write_text(_HBA)
        with open(paths.data / "postgresql.conf", "a") as conf:
            conf.write("\n# Added by the Berth agent: port and addresses, rewritten on every start.\n")
            conf.write("include 'berth.conf'\n")
        return output

    def stop_cluster(self, bindir: Path, paths: ClusterPaths, deadline: Deadline) -> str:
        """pg_ctl stop -m fast. A postmaster whose shutdown was already under way may end
        between the caller's look and pg_ctl's, which then fails with "PID file does not
        exist": the cluster is stopped, as asked, so that is no failure."""
        seconds = str(max(1, int(deadline.remaining())))
        stop = [str(bindir / "pg_ctl"), "-D", str(paths.data), "-m", "fast", "-w", "-t", seconds, "stop"]
        try:
            return self._run_checked(stop, paths, deadline, settled=stopped(paths.data)).output_tail
        except CommandFailed as failure:
            if (paths.data / "postmaster.pid").exists():
                raise
            return failure.output_tail or ""

    def _pg_ctl(self, bindir: Path, paths: ClusterPaths, deadline: Deadline, action: str) -> CommandResult:
        return run(
            [str(bindir / "pg_ctl"), "-D", str(paths.data), action], deadline, cwd=paths.state, run_as=self.run_as
        )

    def _run_checked(self, argv: list[str], paths: ClusterPaths, deadline: Deadline, **kwargs) -> CommandResult:
        return run_checked(argv, deadline, cwd=paths.state, run_as=self.run_as, **kwargs)

    def write_owned(self, path: Path, text: str, mode: int = 0o644) -> None:
        # Created with its final mode, so a password file is never readable by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "w") as handle:
            os.fchmod(fd, mode)
            if self.run_as:
                os.fchown(fd, self.run_as.uid, self.run_as.gid)
            handle.write(text)


def started(data: Path) -> Callable[[], bool]:
    """`run`'s `settled` for `pg_ctl -w start`: true once a postmaster started from now on has
    written `data`'s postmaster.pid saying it accepts connections ("ready", or "standby" while it
    recovers), as pg_ctl itself judges, without pg_ctl's 100 ms between looks. A stale file a
    crash left is older, or names a dead process."""
    since = int(time.time()) - 2  # pg_ctl's own slack: the file's start time is whole seconds

    def check() -> bool:
        lines = _pid_file(data)
        if _status(lines) not in ("ready", "standby"):
            return False
        try:
            pid, start = int(lines[0]), int(lines[2])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            return False
        except PermissionError:
            pass  # alive, another user's
        return start >= since

    return check


def stopped(data: Path) -> Callable[[], bool]:
    """`run`'s `settled` for `pg_ctl -w stop`: true once the postmaster that runs now has removed
    its postmaster.pid (its last act: shut down, checkpoint written, port free). With no
    postmaster.pid now, never true: pg_ctl says itself that nothing runs."""
    pid_file = data / "postmaster.pid"
    running = pid_file.exists()
    return lambda: running and not pid_file.exists()


def shutting_down(data: Path) -> bool:
    """Whether `data`'s postmaster is shutting down: it writes "stopping" into its
    postmaster.pid as a smart or fast shutdown begins, and removes the file at the end."""
    return _status(_pid_file(data)) == "stopping"


def _pid_file(data: Path) -> list[str]:
    """`data`'s postmaster.pid, line by line; none while no postmaster runs there."""
    try:
        return (data / "postmaster.pid").read_text().split("\n")
    except (FileNotFoundError, UnicodeDecodeError):
        return []


def _status(lines: list[str]) -> str | None:
    """The postmaster's status line of postmaster.pid (its 8th: "starting", "ready",
    "standby", "stopping"), None before it is written."""
    return lines[7].strip() if len(lines) >= 8 else None


def _major_of(bindir: Path, tools: tuple[str, ...]) -> int | None:
    """The major of the installation in bindir when it holds every one of `tools`, None for an
    incomplete or broken one (read from the first tool's --version).

    A `--version` that outlives its deadline (a loaded host) raises CommandTimeout:
    "unknown" must never read as "not installed", or the host would report no versions."""
    if not all(os.access(bindir / tool, os.X_OK) for tool in tools):
        return None
    try:
        result = run([str(bindir / tools[0]), "--version"], Deadline(_DISCOVERY_DEADLINE_S))
    except CommandFailed:
        return None
    match = _VERSION.search(result.output_tail)
    return int(match.group(1)) if match else None


def listen_addresses(hosts: Iterable[str]) -> tuple[str, ...]:
    """The numeric addresses a server must bind to answer on every one of `hosts`.

    Names become every address they resolve to. A wildcard of a family stands for every
    address of it: PostgreSQL would fail binding a specific one beside it, so those drop.
    """
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for host in hosts:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise ConfigError(f"runtimes must answer on {host!r}, which does not resolve") from None
        found += [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    wildcard_versions = {address.version for address in found if address.is_unspecified}
    kept = [address for address in found if address.is_unspecified or address.version not in wildcard_versions]
    return tuple(dict.fromkeys(str(address) for address in kept))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _start_messages(log: Path, offset: int, *, problems_only: bool, limit: int = 1000) -> str:
    """What the server logged since `offset` (the start of this start), as "SEVERITY: message" lines.

    problems_only keeps the addresses it could not listen on; else every warning and error.
    """
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            text = handle.read(64 * 1024).decode("utf-8", errors="replace")
    except OSError:
        return ""
    said = []
    for match in _LOG_MESSAGE.finditer(text):
        severity, message = match.groups()
        if message.startswith(_START_PROBLEMS) or (not problems_only and severity != "LOG"):
            said.append(f"{severity}: {message.strip()}")
    return "; ".join(dict.fromkeys(said))[:limit]


def _log_tail(log: Path, limit: int = 4096) -> str:
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, log.stat().st_size - limit))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def ships_library(bindir: Path, name: str) -> bool:
    """Whether the installation of bindir has the server library `name` (lib/ beside bin/, as
    Debian and PGDG lay it out, or lib/postgresql/ as the npm builds do)."""
    lib = bindir.resolve().parent / "lib"
    return any((folder / f"{name}.so").is_file() for folder in (lib, lib / "postgresql"))


def server_conf(
    port: int,
    addresses: tuple[str, ...],
    tls_dir: Path | None = None,
    preload: bool = False,
    socket_dir: Path | None = None,
) -> str:
    """berth.conf: what the cluster listens on and the settings every Berth cluster has.
    `socket_dir` only for a cluster an upgrade prepares, which listens there alone."""
    conf = (
        "# Managed by the Berth agent from runtime.toml and where it serves; rewritten on every start.\n"
        f"port = {port}\n"
        f"listen_addresses = '{','.join(addresses)}'\n"
        f"unix_socket_directories = '{socket_dir or ''}'\n"
        # Logical decoding, as on Supabase: a major upgrade replicates into the new cluster
        # while this one serves, and needs no restart of it first.
        "wal_level = logical\n"
        # Each line names the client (%h): network bans count failed passwords by address.
        "log_line_prefix = '%m [%p] %h '\n"
    )
    if preload:
        conf += f"shared_preload_libraries = '{PRELOAD}'\n"
    if tls_dir is not None:
        conf += f"ssl = on\nssl_cert_file = '{tls_dir / TLS_CERT}'\nssl_key_file = '{tls_dir / TLS_KEY}'\n"
    return conf
