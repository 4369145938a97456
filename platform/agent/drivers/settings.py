"""A process runtime's database settings, applied to its running cluster (the Management API's
Postgres config, SSL enforcement and network restrictions).

They live in files of their own, so they compose with what other parts of the agent write:
- `berth-settings.conf` in the data folder, included by postgresql.conf after everything else
  (after `berth.conf`, which the driver rewrites on every start with the port, addresses, TLS
  and whatever else every Berth cluster has), so the project's values win for the parameters
  the control plane lets it set, and nothing here is lost on a start;
- pg_hba.conf, written whole: `local`, then this host's own addresses (the agent's probes and
  queries, the router, PgBouncer, which all connect from this host: never restricted, never
  made to use TLS), then the project's allowed ranges, `hostssl` when SSL is enforced.

Invariant: a value PostgreSQL rejects leaves the old configuration running. The new files are
written, the server is asked what it thinks of them (`pg_file_settings`, `pg_hba_file_rules`)
before any reload, and on any objection, or a restart that does not come up, the old files
are put back and the server reloaded (or started) with them.
"""

import ipaddress
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from agent.commands import Deadline
from agent.drivers.process import ClusterPaths, PostgresSettings, ProcessDriver
from agent.errors import ApiError, CommandFailed, Invalid

if TYPE_CHECKING:
    from agent.runtimes import Runtime

SETTINGS_FILE = "berth-settings.conf"
INCLUDE = f"include_if_exists '{SETTINGS_FILE}'"
HBA_FILE = "pg_hba.conf"
# How long a reload may take to show in new sessions (the postmaster handles SIGHUP first).
RELOAD_SETTLE_S = 5.0
STATE_FILE = "settings.json"  # in .berth-pg: the last settings applied, without secrets (bans rewrite pg_hba.conf)
BANS_FILE = "bans.json"  # in .berth-pg: where the log was read to, failures per address, the banned ones
# Failed password attempts from one address that ban it, until it is unbanned.
BAN_THRESHOLD = 5
# A failed password in the server's log, whose line prefix names the client (process.server_conf).
_FAILED_PASSWORD = re.compile(r"\] (\S+) FATAL:  password authentication failed for user")


class SettingsRejected(Invalid):
    """PostgreSQL refused the new settings; the old ones still run."""

    code = "settings_rejected"


def settings_conf(parameters: dict[str, str]) -> str:
    lines = [
        "# Managed by the Berth agent: the project's own settings (Management API), applied by a",
        "# reload or a restart; rewritten whole on every change.",
    ]
    lines += [f"{name} = '{value}'" for name, value in sorted(parameters.items())]
    return "\n".join(lines) + "\n"


def hba_conf(own: list[str], allowed: list[str], ssl_enforced: bool, banned: list[str] = ()) -> str:
    kind = "hostssl" if ssl_enforced else "host"
    lines = [
        "# Managed by the Berth agent from the project's settings; rewritten whole on every change.",
        "local all all scram-sha-256",
        "# This host's own connections (the agent, the router, PgBouncer, base backups from loopback):",
        "# never restricted.",
        *(f"host all all {address} scram-sha-256" for address in own),
        "host replication all 127.0.0.1/32 scram-sha-256",
        "host replication all ::1/128 scram-sha-256",
        "# Banned for repeated failed passwords (network bans).",
        *(f"host all all {_single(address)} reject" for address in banned),
        "# The project's allowed ranges" + (" (SSL enforced)." if ssl_enforced else "."),
        *(f"{kind} all all {cidr} scram-sha-256" for cidr in allowed),
    ]
    return "\n".join(lines) + "\n"


def _single(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def own_addresses(listen_addresses: tuple[str, ...]) -> list[str]:
    """This host's addresses its own connections come from: loopback, and every specific
    address the runtimes listen on (a connection from this host to one comes from it)."""
    found = ["127.0.0.1/32", "::1/128"]
    for address in listen_addresses:
        ip = ipaddress.ip_address(address)
        if not ip.is_unspecified:
            found.append(f"{ip}/{ip.max_prefixlen}")
    return list(dict.fromkeys(found))


class ProcessSettings:
    """Applies a SettingsRequest to a process runtime's cluster, under the runtime's lock."""

    def __init__(self, driver: ProcessDriver):
        self.driver = driver

    def apply(self, runtime: "Runtime", request, deadline: Deadline) -> dict:
        for cidr in request.allowed_cidrs:
            try:
                ipaddress.ip_network(cidr)
            except ValueError:
                raise Invalid(f"not an address range: {cidr!r}") from None
        settings = PostgresSettings.from_manifest(runtime.manifest())
        paths = ClusterPaths.of(runtime.folder)
        major = paths.initialised_major()
        if major is None:
            raise Invalid(f"runtime {runtime.ref} has no cluster yet")
        bindir = self.driver.bindir(major)
        if self.driver.status(runtime, deadline)[0] != "running":
            raise Invalid(f"runtime {runtime.ref} is not running; start it first")
        old = {name: _read(paths.data / name) for name in (SETTINGS_FILE, HBA_FILE)}
        self._include_settings(paths)
        own = own_addresses(self.driver.listen_addresses)
        self.driver.write_owned(paths.data / SETTINGS_FILE, settings_conf(request.parameters), mode=0o600)
        banned = Bans.load(paths).banned
        self.driver.write_owned(
            paths.data / HBA_FILE, hba_conf(own, request.allowed_cidrs, request.ssl_enforced, banned), mode=0o600
        )
        names = sorted(request.parameters)
        log_offset = _size(paths.log)
        try:
            with _connect(settings, self.driver, deadline) as connection:
                waiting = _check_files(connection)
                (loaded_before,) = connection.execute("select pg_conf_load_time()").fetchone()
                connection.execute("select pg_reload_conf()")
            values, pending = _wait_for_reload(settings, self.driver, names, loaded_before, deadline)
            if rejected := [name for name in waiting if name not in pending]:
                said = _said_about(paths.log, log_offset, rejected)
                listed = ", ".join(f"{name} = {request.parameters[name]!r}" for name in rejected)
                raise SettingsRejected(
                    f"PostgreSQL rejected {listed}" + (f": {said}" if said else "") + "; the old settings still run"
                )
        except ApiError:
            self._put_back(runtime, settings, paths, old, deadline)
            raise
        restarted = False
        if pending and request.restart:
            try:
                self.driver.stop_cluster(bindir, paths, deadline)
                self.driver.start_cluster(bindir, paths, settings, deadline)
            except ApiError as error:
                self._restore_files(paths, old)
                self.driver.start_cluster(bindir, paths, settings, deadline)
                raise SettingsRejected(
                    f"PostgreSQL did not start with the new settings, and runs with the old ones again: {error.message}"
                ) from None
            restarted = True
            values, pending = _current(settings, self.driver, names, deadline)
        applied = {"ssl_enforced": request.ssl_enforced, "allowed_cidrs": list(request.allowed_cidrs)}
        (paths.state / STATE_FILE).write_text(json.dumps(applied))
        return {"values": values, "pending_restart": pending, "restarted": restarted}

    def bans(self, runtime: "Runtime", unban: list[str], deadline: Deadline) -> dict:
        """Count the failed passwords the server logged since the last look, ban each address
        that reached BAN_THRESHOLD (pg_hba.conf `reject`, then a reload), lift the bans of
        `unban` (their count starts again); returns the banned addresses."""
        paths = ClusterPaths.of(runtime.folder)
        if paths.initialised_major() is None:
            return {"banned": []}
        for address in unban:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise Invalid(f"not an address: {address!r}") from None
        state = Bans.load(paths)
        own = [ipaddress.ip_network(cidr) for cidr in own_addresses(self.driver.listen_addresses)]
        before = list(state.banned)
        state.read_log(paths.log, own)
        state.lift(unban)
        if state.banned != before:
            self._write_hba(runtime, paths, state.banned, deadline)
        state.save(paths)
        return {"banned": state.banned}

    def _write_hba(self, runtime: "Runtime", paths: ClusterPaths, banned: list[str], deadline: Deadline) -> None:
        self.driver.write_owned(paths.data / HBA_FILE, _stored_hba(self.driver, paths, banned), mode=0o600)
        if self.driver.status(runtime, deadline)[0] == "running":
            settings = PostgresSettings.from_manifest(runtime.manifest())
            with _connect(settings, self.driver, deadline) as connection:
                connection.execute("select pg_reload_conf()")

    def _include_settings(self, paths: ClusterPaths) -> None:
        """postgresql.conf includes the settings file last (once; clusters made before it was)."""
        conf = paths.data / "postgresql.conf"
        text = conf.read_text()
        if INCLUDE not in text.splitlines():
            with open(conf, "a") as handle:
                handle.write(
                    f"\n# Added by the Berth agent: the project's own settings, last so they win.\n{INCLUDE}\n"
                )

    def _restore_files(self, paths: ClusterPaths, old: dict[str, str | None]) -> None:
        for name, text in old.items():
            if text is None:
                (paths.data / name).unlink(missing_ok=True)
            else:
                self.driver.write_owned(paths.data / name, text, mode=0o600)

    def _put_back(self, runtime, settings: PostgresSettings, paths: ClusterPaths, old, deadline: Deadline) -> None:
        self._restore_files(paths, old)
        try:
            with _connect(settings, self.driver, deadline) as connection:
                connection.execute("select pg_reload_conf()")
        except ApiError:
            pass  # the old files are back; the server reads them at its next reload or start


def carry_settings(driver: ProcessDriver, old_data: Path, paths: ClusterPaths) -> None:
    """A new cluster about to serve in paths.data (a major upgrade's) gets the project's
    settings the old one in `old_data` had: its parameters file, and pg_hba.conf written again
    from the last settings applied and the bans. Without either it keeps initdb's defaults."""
    parameters = _read(old_data / SETTINGS_FILE)
    if parameters is not None:
        driver.write_owned(paths.data / SETTINGS_FILE, parameters, mode=0o600)
        ProcessSettings(driver)._include_settings(paths)
    banned = Bans.load(paths).banned
    if (paths.state / STATE_FILE).exists() or banned:
        driver.write_owned(paths.data / HBA_FILE, _stored_hba(driver, paths, banned), mode=0o600)


def _stored_hba(driver: ProcessDriver, paths: ClusterPaths, banned: list[str]) -> str:
    """pg_hba.conf from the last settings applied (every range when none were) and `banned`."""
    applied = json.loads(_read(paths.state / STATE_FILE) or "{}")
    allowed = applied.get("allowed_cidrs", ["0.0.0.0/0", "::/0"])
    return hba_conf(own_addresses(driver.listen_addresses), allowed, applied.get("ssl_enforced", False), banned)


class Bans:
    """A runtime's network bans: how far its server log was read, failed passwords per
    address since that address was last unbanned, and the banned addresses."""

    def __init__(self, offset: int = 0, failures: dict | None = None, banned: list | None = None):
        self.offset, self.failures, self.banned = offset, failures or {}, sorted(banned or [])

    @classmethod
    def load(cls, paths: ClusterPaths) -> "Bans":
        text = _read(paths.state / BANS_FILE)
        return cls(**json.loads(text)) if text else cls()

    def save(self, paths: ClusterPaths) -> None:
        state = {"offset": self.offset, "failures": self.failures, "banned": self.banned}
        (paths.state / BANS_FILE).write_text(json.dumps(state))

    def read_log(self, log: Path, own: list) -> None:
        size = _size(log)
        if size < self.offset:
            self.offset = 0  # a new log file: read it from its start
        try:
            with open(log, "rb") as handle:
                handle.seek(self.offset)
                text = handle.read()
        except FileNotFoundError:
            return
        # Only whole lines: a line being written is read next time.
        whole = text[: text.rfind(b"\n") + 1]
        self.offset += len(whole)
        for match in _FAILED_PASSWORD.finditer(whole.decode("utf-8", errors="replace")):
            try:
                address = ipaddress.ip_address(match.group(1))
            except ValueError:
                continue  # "[local]": a unix socket
            if any(address in network for network in own):
                continue  # this host's own connections are never banned
            self.failures[str(address)] = self.failures.get(str(address), 0) + 1
        self.banned = sorted({*self.banned, *(a for a, n in self.failures.items() if n >= BAN_THRESHOLD)})

    def lift(self, addresses: list[str]) -> None:
        for address in addresses:
            self.failures.pop(address, None)
        self.banned = sorted(set(self.banned) - set(addresses))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _connect(settings: PostgresSettings, driver: ProcessDriver, deadline: Deadline):
    host = driver.listen_addresses[0] if driver.listen_addresses else "127.0.0.1"
    if ipaddress.ip_address(host).is_unspecified:
        host = "127.0.0.1"
    try:
        return psycopg.connect(
            host=host,
            port=settings.port,
            user=settings.user,
            password=settings.password,
            dbname="postgres",
            connect_timeout=max(2, int(deadline.remaining())),
            application_name="berth-agent-settings",
            autocommit=True,
        )
    except psycopg.Error as error:
        raise CommandFailed(f"could not connect to the runtime's database: {str(error).strip()}") from None


def _check_files(connection) -> None:
    """Refuse what the server would not take from the files as they are now written."""
    problems, waiting = [], []
    rows = connection.execute(
        "select f.name, f.setting, f.error, s.context from pg_file_settings f left join pg_settings s using (name) "
        "where f.error is not null and f.sourcefile like %s",
        (f"%/{SETTINGS_FILE}",),
    ).fetchall()
    for name, setting, error, context in rows:
        if context == "postmaster":
            # Only a start sets it, so it shows an error here whatever its value: the reload
            # marks a valid one pending restart, and leaves an invalid one unmarked.
            waiting.append(name)
        else:
            problems.append(f"{name} = {setting!r}: {_detail(connection, name, setting) or error}")
    for line, error in connection.execute(
        "select line_number, error from pg_hba_file_rules where error is not null"
    ).fetchall():
        problems.append(f"pg_hba.conf line {line}: {error}")
    if problems:
        raise SettingsRejected("PostgreSQL rejected " + "; ".join(problems) + "; the old settings still run")
    return waiting


def _said_about(log: Path, offset: int, names: list[str]) -> str:
    """What the server logged since `offset` about these parameters (why a reload left them)."""
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            text = handle.read(64 * 1024).decode("utf-8", errors="replace")
    except OSError:
        return ""
    said = [line.split(":  ", 1)[-1].strip() for line in text.splitlines() if any(f'"{n}"' in line for n in names)]
    return "; ".join(dict.fromkeys(said))[:1000]


def _detail(connection, name: str, value: str) -> str:
    """PostgreSQL's own words for a rejected value, when a session may try it (SET LOCAL in a
    transaction rolled back); '' for parameters a session cannot set."""
    try:
        with connection.transaction(force_rollback=True):
            connection.execute("select set_config(%s, %s, true)", (name, value))
    except psycopg.Error as error:
        message = error.diag.message_primary if error.diag else str(error)
        return "" if "cannot be changed" in (message or "") or "permission" in (message or "") else message
    return ""


def _current(settings, driver, names: list[str], deadline: Deadline) -> tuple[dict[str, str], list[str]]:
    with _connect(settings, driver, deadline) as connection:
        values = dict(
            connection.execute("select name, current_setting(name) from pg_settings where name = any(%s)", (names,))
        )
        pending = [
            row[0]
            for row in connection.execute(
                "select name from pg_settings where pending_restart and name = any(%s) order by name", (names,)
            )
        ]
    return values, pending


def _wait_for_reload(settings, driver, names: list[str], loaded_before, deadline: Deadline):
    """The values new sessions see once the postmaster took the reload (its configuration
    load time moved past `loaded_before`), or after RELOAD_SETTLE_S at most."""
    ends = time.monotonic() + min(RELOAD_SETTLE_S, deadline.remaining())
    while time.monotonic() < ends:
        with _connect(settings, driver, deadline) as connection:
            (loaded,) = connection.execute("select pg_conf_load_time()").fetchone()
        if loaded > loaded_before:
            break
        time.sleep(0.02)
    return _current(settings, driver, names, deadline)
