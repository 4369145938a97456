"""Major upgrades of a process-driver runtime: a cluster of the new major built beside the one
that serves, then a switch-over of the project's port in one short step, and the old cluster
kept, stopped, for a rollback.

Under the runtime's `.berth-pg/`:

    data/              the cluster that serves (the one up, down and status act on)
    next/data/         the new major's cluster while an upgrade prepares; it listens only on a
                       private unix socket (a folder of its own under /tmp), never on a port
    next/upgrade.json  what is being done: target major, method, socket folder, the
                       upgrade role's password (the file is the server user's, mode 600)
    previous/data/     after a switch: the old cluster, stopped, until rollback or discard

Methods (the check says which applies and why):
- `logical`: the schema (roles, passwords, databases, extensions, every object) is copied
  with the old major's own pg_dumpall where it has one (Debian's 15.20 writes a column
  option, `pg_attver`, that only its own pg_dump leaves out; see docs/architecture.md),
  else the newest client tools; then each database is replicated into the new cluster
  (a publication of all tables on the old, a subscription on the new) while the old keeps
  serving. At the switch writes stop, the new cluster catches up, sequences are copied,
  and the clusters change places: seconds of downtime. Needs wal_level = logical, a
  replica identity on every table (else the publication would make the project's UPDATEs
  and DELETEs fail while it serves), no large objects and no unlogged tables (logical
  replication carries neither).
- `dump`: at the switch writes stop and the whole cluster is dumped (pg_dumpall) into the
  new one: downtime grows with the data. Works for any running cluster.

Invariants:
- Until the switch, the serving cluster keeps serving, and an upgrade adds to it only a
  publication and a replication slot per database and the `berth_upgrade` role; `abort`
  removes them and the new cluster. A failure anywhere before the new cluster serves puts
  the old one back serving (its pg_hba.conf restored, restarted if it was stopped).
- Writes stop at the switch by pg_hba.conf: only the upgrade's own role may connect, and
  every other session is ended; a client whose write was cut off got an error, never a
  lost acknowledged write.
- previous/ is removed only by `discard`; a rollback brings it back to serve and drops the
  new cluster (writes made after the switch go with it: the rollback says so).
"""

import json
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from agent.commands import Deadline, run_checked
from agent.drivers.process import (
    PRELOAD,
    ClusterPaths,
    PostgresSettings,
    ProcessDriver,
    server_conf,
    ships_library,
)
from agent.drivers.settings import carry_settings
from agent.errors import ApiError, CommandFailed, Invalid

if TYPE_CHECKING:
    from agent.runtimes import Runtime

NEXT, PREVIOUS = "next", "previous"
STATE_FILE = "upgrade.json"
UPGRADE_ROLE = "berth_upgrade"
PUBLICATION = "berth_upgrade"
METHODS = ("logical", "dump")
# Free disk the new cluster needs, as a multiple of the data (dump: the dump file as well).
DISK_FACTOR = {"logical": 1.2, "dump": 2.2}
CONNECT_TIMEOUT_S = 5
CATCH_UP_POLL_S = 0.05
# The subscriber reports what it applied this often (the default, 10 s, would be most of the downtime).
STATUS_INTERVAL_S = 1
LISTED = 5  # names quoted in a refusal, then "and N more"


class UpgradeRefused(ApiError):
    """The runtime cannot be upgraded as asked; the message says why, nothing changed."""

    status = 422
    code = "upgrade_refused"


@dataclass
class State:
    """next/upgrade.json."""

    source: int
    target: int
    method: str
    socket_dir: str
    role_password: str
    prepared: bool = False
    failed: str | None = None  # why a switch failed: the old cluster serves again; abort, then prepare anew

    def save(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.__dict__, handle)

    @classmethod
    def load(cls, path: Path) -> "State | None":
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None


class ProcessUpgrades:
    """The upgrade commands of the process driver; each is called under the runtime's lock
    except `state` and `check`, which only read."""

    def __init__(self, driver: ProcessDriver):
        self.driver = driver

    # -- reading ------------------------------------------------------------------------

    def state(self, runtime: "Runtime") -> dict:
        """Where an upgrade of this runtime stands (phase none | preparing | copying | ready | switched)."""
        paths, kept = ClusterPaths.of(runtime.folder), _previous(runtime)
        reply = {"phase": "none", "current_major": paths.initialised_major()}
        if kept.initialised_major() is not None:
            reply.update(phase="switched", previous_major=kept.initialised_major())
        state = State.load(_next(runtime).state / STATE_FILE)
        if state is None:
            return reply
        reply.update(target_major=state.target, method=state.method, phase="preparing")
        if state.failed:
            reply.update(phase="failed", detail=state.failed)
            return reply
        if not state.prepared:
            return reply
        if state.method == "dump":
            reply["phase"] = "ready"
            return reply
        settings = PostgresSettings.from_manifest(runtime.manifest())
        try:
            ready, total = self._tables_synced(runtime, state, settings)
        except psycopg.Error as error:
            reply.update(phase="copying", detail=f"the new cluster does not answer: {_said(error)}")
            return reply
        reply.update(phase="ready" if ready == total else "copying", tables_ready=ready, tables_total=total)
        return reply

    def check(self, runtime: "Runtime", target: int) -> dict:
        """What an upgrade to `target` would meet: blockers (it cannot be done), the methods
        that apply with the reasons the others do not, and warnings. Changes nothing."""
        paths = ClusterPaths.of(runtime.folder)
        current = paths.initialised_major()
        settings = PostgresSettings.from_manifest(runtime.manifest())
        blockers, warnings, unusable = [], [], {}
        reply = {"current_major": current, "target_major": target}

        def block(kind: str, message: str, subject: str | None = None) -> None:
            blockers.append({"kind": kind, "message": message, **({"subject": subject} if subject else {})})

        if current is None:
            block("no_cluster", "the runtime has no cluster yet")
            return {**reply, "blockers": blockers, "methods": [], "unusable": {}}
        installed = self.driver.installations()
        if target <= current:
            block("not_newer", f"PostgreSQL {target} is not newer than the {current} the project runs")
        if target not in installed:
            listed = ", ".join(str(m) for m in sorted(installed)) or "none"
            block("not_installed", f"PostgreSQL {target} is not installed on this host (installed: {listed})")
        if _next(runtime).state.exists():
            block("in_progress", "an upgrade of this project is already under way (abort it first)")
        if _previous(runtime).initialised_major() is not None:
            block(
                "kept_cluster",
                f"the PostgreSQL {_previous(runtime).initialised_major()} cluster of an earlier upgrade is still "
                "kept for rollback (discard it or roll back first)",
            )
        try:
            self._dump_tools(current, installed)
        except Invalid as error:
            block("no_client_tools", error.message)
        try:
            facts = self._inspect(settings)
        except psycopg.Error as error:
            block("not_running", f"the project's database does not answer ({_said(error)}); start it first")
            return {**reply, "blockers": blockers, "methods": [], "unusable": {}}
        if target in installed:
            available = _available_extensions(installed[target], target)
            for name in sorted(set(facts.extensions) - available):
                block(
                    "unsupported_extension",
                    f"PostgreSQL {target} here lacks extension {name}, which the project uses",
                    subject=name,
                )
        free = shutil.disk_usage(runtime.folder).free
        if facts.wal_level != "logical":
            unusable["logical"] = (
                f"the cluster runs with wal_level = {facts.wal_level}; a restart of the project turns on "
                "wal_level = logical"
            )
        elif facts.no_identity:
            many = len(facts.no_identity) > 1
            unusable["logical"] = (
                f"table{'s' if many else ''} {_names(facts.no_identity)} {'have' if many else 'has'} "
                "no primary key or replica identity (their UPDATEs and DELETEs would fail while published)"
            )
        elif facts.unlogged:
            unusable["logical"] = f"unlogged tables ({_names(facts.unlogged)}) are not replicated"
        elif facts.large_objects:
            unusable["logical"] = f"{facts.large_objects} large objects are not replicated"
        for method in METHODS:
            needed = int(facts.size * DISK_FACTOR[method]) + (64 << 20)
            if method not in unusable and free < needed:
                unusable[method] = f"needs {_mib(needed)} free on the runtime's disk, {_mib(free)} are"
        methods = [method for method in METHODS if method not in unusable]
        if not methods and not blockers:
            block("no_method", "no upgrade method applies: " + "; ".join(f"{m}: {why}" for m, why in unusable.items()))
        if "logical" in unusable and "dump" in methods:
            warnings.append(
                f"the dump path stops writes for the whole copy of {_mib(facts.size)}, "
                f"since logical replication cannot be used ({unusable['logical']})"
            )
        return {
            **reply,
            "blockers": blockers,
            "methods": methods if not blockers else [],
            "unusable": unusable,
            "warnings": warnings,
            "data_bytes": facts.size,
        }

    # -- changing (under the runtime's lock) ----------------------------------------------

    def prepare(self, runtime: "Runtime", target: int, method: str, deadline: Deadline) -> dict:
        """Build the new cluster beside the serving one; for `logical`, start replicating into
        it (the copy goes on after this returns: `state` says when it is ready). Idempotent:
        the same upgrade already prepared is left as it is; a half-made one is redone."""
        if method not in METHODS:
            raise Invalid(f"method must be one of {', '.join(METHODS)}")
        existing = State.load(_next(runtime).state / STATE_FILE)
        if existing is not None and existing.prepared and (existing.target, existing.method) == (target, method):
            return self.state(runtime)
        if existing is not None:
            self.abort(runtime, deadline)
        check = self.check(runtime, target)
        if check["blockers"]:
            raise UpgradeRefused("; ".join(blocker["message"] for blocker in check["blockers"]))
        if method not in check["methods"]:
            raise UpgradeRefused(f"the {method} method cannot be used: {check['unusable'][method]}")
        settings = PostgresSettings.from_manifest(runtime.manifest())
        source = check["current_major"]
        try:
            state = self._build(runtime, settings, source, target, method, deadline)
            self._create_upgrade_role(settings, state)
            if method == "logical":
                self._dump_into_next(runtime, state, settings, deadline, ["--schema-only"])
                self._replicate(runtime, state, settings)
            state.prepared = True
            self._save(runtime, state)
        except BaseException:
            self.abort(runtime, Deadline(max(deadline.remaining(), 30.0)))
            raise
        return self.state(runtime)

    def switch(self, runtime: "Runtime", deadline: Deadline, catch_up_s: float = 30.0) -> dict:
        """Stop writes, bring the new cluster level, and let it serve on the project's port;
        the old one is kept stopped in previous/. Returns the state with `downtime_s` (from
        writes stopping to the new cluster accepting connections)."""
        state = State.load(_next(runtime).state / STATE_FILE)
        if state is None:
            if _previous(runtime).initialised_major() is not None:
                return self.state(runtime)  # switched already: a retried call
            raise Invalid("no upgrade is prepared for this runtime")
        if state.failed:
            raise Invalid(f"this upgrade's switch failed ({state.failed}); abort it, then prepare again")
        if not state.prepared:
            raise Invalid("the upgrade is not prepared yet")
        settings = PostgresSettings.from_manifest(runtime.manifest())
        if state.method == "logical":
            ready, total = self._tables_synced(runtime, state, settings)
            if ready != total:
                raise Invalid(f"the new cluster is still copying ({ready} of {total} tables ready)")
            self._refresh_materialized_views(runtime, state, settings)
        paths, kept = ClusterPaths.of(runtime.folder), _previous(runtime)
        hba = paths.data / "pg_hba.conf"
        original_hba = hba.read_text()
        old_bindir = self.driver.bindir(state.source)
        # While the old cluster still serves: each shutdown below then has little to write.
        self._checkpoint(state, settings)
        stopped_at = time.monotonic()
        old_stopped = False
        try:
            self._stop_writes(settings, state, hba)
            if state.method == "logical":
                self._catch_up(state, settings, Deadline(min(catch_up_s, deadline.remaining())))
                self._copy_sequences(state, settings)
                self._unsubscribe(state, settings)
            else:
                self._dump_into_next(runtime, state, settings, deadline, [])
            self._drop_publications(settings, as_upgrade=state)
            # In force at the old cluster's next start (a rollback); the running one keeps
            # refusing clients until it stops. Its upgrade role goes at that start.
            hba.write_text(original_hba)
            self.driver.stop_cluster(old_bindir, paths, deadline)
            old_stopped = True
            self._serve_next(runtime, state, settings, deadline)
        except BaseException as error:
            self._put_back(runtime, state, settings, original_hba, old_stopped, deadline)
            state.failed = str(error) or type(error).__name__
            self._save(runtime, state)
            raise
        downtime = time.monotonic() - stopped_at
        shutil.rmtree(Path(state.socket_dir), ignore_errors=True)
        shutil.rmtree(_next(runtime).state, ignore_errors=True)
        return {**self.state(runtime), "downtime_s": round(downtime, 3), "previous_major": kept.initialised_major()}

    def abort(self, runtime: "Runtime", deadline: Deadline) -> dict:
        """Undo an upgrade that has not switched: the new cluster stopped and removed, the
        publication, slots and role dropped from the serving one. Idempotent."""
        nxt = _next(runtime)
        state = State.load(nxt.state / STATE_FILE)
        if state is not None:
            settings = PostgresSettings.from_manifest(runtime.manifest())
            if (nxt.data / "postmaster.pid").exists():
                self.driver.stop_cluster(self.driver.bindir(state.target), nxt, deadline)
            try:
                self._drop_publications(settings)
                self._drop_upgrade_role(settings)
            except psycopg.Error:
                pass  # the serving cluster is down: nothing of ours can be running there either
            shutil.rmtree(Path(state.socket_dir), ignore_errors=True)
        elif (nxt.data / "postmaster.pid").exists():
            self.driver.stop_cluster(self.driver.bindir(nxt.initialised_major()), nxt, deadline)
        shutil.rmtree(nxt.state, ignore_errors=True)
        return self.state(runtime)

    def rollback(self, runtime: "Runtime", deadline: Deadline) -> dict:
        """Serve the kept old cluster again on the project's port; the new one is removed."""
        paths, kept = ClusterPaths.of(runtime.folder), _previous(runtime)
        old_major = kept.initialised_major()
        if old_major is None:
            raise Invalid("there is no earlier cluster kept to roll back to")
        new_major = paths.initialised_major()
        if new_major is not None and (paths.data / "postmaster.pid").exists():
            self.driver.stop_cluster(self.driver.bindir(new_major), paths, deadline)
        discarded = paths.state / f"rolled-back-{new_major}"
        shutil.rmtree(discarded, ignore_errors=True)
        if paths.data.exists():
            paths.data.rename(discarded)
        kept.data.rename(paths.data)
        shutil.rmtree(kept.state, ignore_errors=True)
        shutil.rmtree(discarded, ignore_errors=True)
        settings = PostgresSettings.from_manifest(runtime.manifest())
        bindir = self.driver.bindir(old_major)
        self.driver.write_serving_conf(bindir, paths, settings)
        self.driver.start_cluster(bindir, paths, settings, deadline)
        self._drop_upgrade_role(settings)
        return {**self.state(runtime), "rolled_back_from": new_major}

    def discard(self, runtime: "Runtime", deadline: Deadline) -> dict:
        """Remove the old cluster kept by a switch; rollback is then no longer possible."""
        kept = _previous(runtime)
        if (kept.data / "postmaster.pid").exists():
            self.driver.stop_cluster(self.driver.bindir(kept.initialised_major()), kept, deadline)
        shutil.rmtree(kept.state, ignore_errors=True)
        return self.state(runtime)

    # -- steps ---------------------------------------------------------------------------

    def _build(
        self, runtime: "Runtime", settings: PostgresSettings, source: int, target: int, method: str, deadline
    ) -> State:
        """The new cluster, made with the old one's locale and running on its private socket."""
        nxt = _next(runtime)
        nxt.state.mkdir(mode=0o700, parents=True)
        socket_dir = Path(tempfile.mkdtemp(prefix="berth-upgrade-", dir="/tmp"))
        if self.driver.run_as:
            os.chown(nxt.state, self.driver.run_as.uid, self.driver.run_as.gid)
            os.chown(socket_dir, self.driver.run_as.uid, self.driver.run_as.gid)
        state = State(source, target, method, str(socket_dir), secrets.token_hex(24))
        self._save(runtime, state)
        bindir = self.driver.bindir(target)
        with self._old(settings) as conn:
            collate, encoding = conn.execute(
                "select datcollate, pg_encoding_to_char(encoding) from pg_database where datname = 'template1'"
            ).fetchone()
        self.driver.initdb(bindir, nxt, settings, deadline, locale=(collate, encoding))
        conf = server_conf(settings.port, (), preload=ships_library(bindir, PRELOAD), socket_dir=socket_dir)
        conf += f"wal_receiver_status_interval = {STATUS_INTERVAL_S}\n"
        self.driver.write_owned(nxt.data / "berth.conf", conf)
        self.driver.start_cluster(bindir, nxt, settings, deadline)
        return state

    def _create_upgrade_role(self, settings: PostgresSettings, state: State) -> None:
        """The role the upgrade reads the old cluster as: the only one let in once writes stop."""
        with self._old(settings) as conn:
            conn.execute(
                sql.SQL("create role {} with login superuser replication password {}").format(
                    sql.Identifier(UPGRADE_ROLE), sql.Literal(state.role_password)
                )
            )

    def _dump_into_next(
        self, runtime: "Runtime", state: State, settings: PostgresSettings, deadline, options: list[str]
    ) -> None:
        """Roles (with their passwords), databases and every object (with `--schema-only`,
        without their data) from the old cluster into the new one, read as the upgrade role."""
        tools = self._dump_tools(state.source)
        dump = _next(runtime).state / "dump.sql"
        source = {"PGHOST": self.driver.local_address(), "PGPORT": str(settings.port), "PGUSER": UPGRADE_ROLE}
        try:
            run_checked(
                [str(tools / "pg_dumpall"), *options, "--no-sync", "-f", str(dump)],
                deadline,
                env={**source, "PGPASSWORD": state.role_password},
            )
            _drop_bootstrap_role(dump, settings.user)
            target = {"PGHOST": state.socket_dir, "PGPORT": str(settings.port), "PGUSER": settings.user}
            run_checked(
                [str(tools / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-f", str(dump)],
                deadline,
                env={**target, "PGPASSWORD": settings.password},
            )
        finally:
            dump.unlink(missing_ok=True)
        with self._new(state, settings) as conn:
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(UPGRADE_ROLE)))

    def _replicate(self, runtime: "Runtime", state: State, settings: PostgresSettings) -> None:
        """A publication of every table in each database of the old cluster, subscribed by the
        new one through the upgrade role; each subscription copies its tables, then streams."""
        with self._old(settings) as conn:
            databases = _databases(conn)
        for name, oid in databases:
            with self._old(settings, dbname=name) as conn:
                conn.execute(sql.SQL("create publication {} for all tables").format(sql.Identifier(PUBLICATION)))
            source = psycopg.conninfo.make_conninfo(
                host=self.driver.local_address(),
                port=settings.port,
                user=UPGRADE_ROLE,
                password=state.role_password,
                dbname=name,
                application_name="berth-upgrade",
            )
            with self._new(state, settings, dbname=name) as conn:
                conn.execute(
                    sql.SQL("create subscription {} connection {} publication {} with (slot_name = {})").format(
                        sql.Identifier(PUBLICATION),
                        sql.Literal(source),
                        sql.Identifier(PUBLICATION),
                        sql.Literal(f"{PUBLICATION}_{oid}"),
                    )
                )

    def _tables_synced(self, runtime: "Runtime", state: State, settings: PostgresSettings) -> tuple[int, int]:
        ready = total = 0
        with self._new(state, settings) as conn:
            databases = _databases(conn)
        for name, _ in databases:
            with self._new(state, settings, dbname=name) as conn:
                done, count = conn.execute(
                    "select count(*) filter (where srsubstate = 'r'), count(*) from pg_subscription_rel"
                ).fetchone()
            ready, total = ready + done, total + count
        return ready, total

    def _refresh_materialized_views(self, runtime: "Runtime", state: State, settings: PostgresSettings) -> None:
        # The schema copy made them empty; replication carries tables only.
        with self._new(state, settings) as conn:
            databases = _databases(conn)
        for name, _ in databases:
            with self._new(state, settings, dbname=name) as conn:
                views = conn.execute(
                    "select format('%I.%I', schemaname, matviewname) from pg_matviews where not ispopulated"
                ).fetchall()
                for (view,) in views:
                    conn.execute(sql.SQL("refresh materialized view {}").format(sql.SQL(view)))

    def _checkpoint(self, state: State, settings: PostgresSettings) -> None:
        for connect in (self._old(settings), self._new(state, settings)):
            with connect as conn:
                conn.execute("checkpoint")

    def _stop_writes(self, settings: PostgresSettings, state: State, hba: Path) -> None:
        """Only the upgrade's role may connect from now on; every other session is ended."""
        hba.write_text(
            "# Written by the Berth agent for a major upgrade's switch-over: writes are stopped.\n"
            f"host all {UPGRADE_ROLE} 0.0.0.0/0 scram-sha-256\n"
            f"host all {UPGRADE_ROLE} ::/0 scram-sha-256\n"
            "host all all 0.0.0.0/0 reject\n"
            "host all all ::/0 reject\n"
            "local all all reject\n"
        )
        with self._old(settings, as_upgrade=state) as conn:
            conn.execute("select pg_reload_conf()")
            self._wait_refused(settings)
            conn.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where backend_type = 'client backend' and pid <> pg_backend_pid() and usename is distinct from %s",
                (UPGRADE_ROLE,),
            )

    def _wait_refused(self, settings: PostgresSettings) -> None:
        """The postmaster reads a reloaded pg_hba.conf on its next turn: wait until the project's
        own user is refused, so no session can start once the others are ended."""
        for _ in range(250):
            try:
                self._old(settings).close()
            except psycopg.OperationalError as error:
                if "pg_hba.conf rejects" in str(error):
                    return
                raise
            time.sleep(0.02)
        raise CommandFailed("the old cluster still let clients in after its pg_hba.conf was reloaded")

    def _catch_up(self, state: State, settings: PostgresSettings, deadline: Deadline) -> None:
        """Wait until every subscription has confirmed the old cluster's WAL as of now."""
        with self._old(settings, as_upgrade=state) as conn:
            (target,) = conn.execute("select pg_current_wal_lsn()").fetchone()
            while True:
                behind = conn.execute(
                    "select count(*) from pg_replication_slots where slot_name like %s "
                    "and (confirmed_flush_lsn is null or confirmed_flush_lsn < %s)",
                    (f"{PUBLICATION}\\_%", target),
                ).fetchone()[0]
                if behind == 0:
                    return
                if deadline.expired():
                    raise CommandFailed(
                        f"the new cluster did not catch up with the old one within {deadline.seconds:g}s"
                    )
                time.sleep(CATCH_UP_POLL_S)

    def _copy_sequences(self, state: State, settings: PostgresSettings) -> None:
        with self._old(settings, as_upgrade=state) as conn:
            databases = _databases(conn)
        for name, _ in databases:
            with self._old(settings, dbname=name, as_upgrade=state) as conn:
                values = conn.execute(
                    "select format('%I.%I', schemaname, sequencename), last_value from pg_sequences "
                    "where last_value is not null"
                ).fetchall()
            if values:
                with self._new(state, settings, dbname=name) as conn:
                    for sequence, value in values:
                        conn.execute("select setval(%s::regclass, %s, true)", (sequence, value))

    def _unsubscribe(self, state: State, settings: PostgresSettings) -> None:
        # Dropping a subscription drops its slot on the old cluster, which still answers.
        with self._new(state, settings) as conn:
            databases = _databases(conn)
        for name, _ in databases:
            with self._new(state, settings, dbname=name) as conn:
                conn.execute(sql.SQL("drop subscription if exists {}").format(sql.Identifier(PUBLICATION)))

    def _drop_publications(self, settings: PostgresSettings, as_upgrade: State | None = None) -> None:
        """The publications and any slot left of them, from the old cluster."""
        with self._old(settings, as_upgrade=as_upgrade) as conn:
            databases = _databases(conn)
            conn.execute(
                "select pg_terminate_backend(active_pid) from pg_replication_slots "
                "where slot_name like %s and active_pid is not null",
                (f"{PUBLICATION}\\_%",),
            )
            conn.execute(
                "select pg_drop_replication_slot(slot_name) from pg_replication_slots "
                "where slot_name like %s and not active",
                (f"{PUBLICATION}\\_%",),
            )
        for name, _ in databases:
            with self._old(settings, dbname=name, as_upgrade=as_upgrade) as conn:
                conn.execute(sql.SQL("drop publication if exists {}").format(sql.Identifier(PUBLICATION)))

    def _drop_upgrade_role(self, settings: PostgresSettings) -> None:
        with self._old(settings) as conn:
            conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where usename = %s", (UPGRADE_ROLE,))
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(UPGRADE_ROLE)))

    def _serve_next(self, runtime: "Runtime", state: State, settings: PostgresSettings, deadline) -> None:
        """The clusters change places: the old one's data to previous/, the new one's to data/,
        which then starts on the project's port with its TLS and addresses."""
        paths, nxt, kept = ClusterPaths.of(runtime.folder), _next(runtime), _previous(runtime)
        bindir = self.driver.bindir(state.target)
        self.driver.stop_cluster(bindir, nxt, deadline)
        kept.state.mkdir(mode=0o700, exist_ok=True)
        if self.driver.run_as:
            os.chown(kept.state, self.driver.run_as.uid, self.driver.run_as.gid)
        paths.data.rename(kept.data)
        nxt.data.rename(paths.data)
        self.driver.write_serving_conf(bindir, paths, settings)
        # The project's own settings (parameters, SSL enforcement, allowed ranges, bans) go on.
        carry_settings(self.driver, kept.data, paths)
        self.driver.start_cluster(bindir, paths, settings, deadline)

    def _put_back(
        self,
        runtime: "Runtime",
        state: State,
        settings: PostgresSettings,
        original_hba: str,
        old_stopped: bool,
        deadline: Deadline,
    ) -> None:
        """A switch failed: the old cluster serves again as it did (the new one stays in next/
        for `abort`, or is moved back there)."""
        paths, nxt, kept = ClusterPaths.of(runtime.folder), _next(runtime), _previous(runtime)
        retry = Deadline(max(deadline.remaining(), 30.0))
        if kept.initialised_major() == state.source:
            if paths.initialised_major() == state.target:
                if (paths.data / "postmaster.pid").exists():
                    self.driver.stop_cluster(self.driver.bindir(state.target), paths, retry)
                paths.data.rename(nxt.data)
            kept.data.rename(paths.data)
            shutil.rmtree(kept.state, ignore_errors=True)
        (paths.data / "pg_hba.conf").write_text(original_hba)
        old_bindir = self.driver.bindir(state.source)
        if old_stopped:
            self.driver.start_cluster(old_bindir, paths, settings, retry)
        else:
            run_checked([str(old_bindir / "pg_ctl"), "-D", str(paths.data), "reload"], retry, run_as=self.driver.run_as)

    # -- helpers -------------------------------------------------------------------------

    def _inspect(self, settings: PostgresSettings) -> "Facts":
        facts = Facts()
        with self._old(settings) as conn:
            facts.wal_level = conn.execute("select current_setting('wal_level')").fetchone()[0]
            facts.size = conn.execute("select sum(pg_database_size(oid))::bigint from pg_database").fetchone()[0]
            databases = _databases(conn)
        for name, _ in databases:
            with self._old(settings, dbname=name) as conn:
                facts.extensions |= {row[0] for row in conn.execute("select extname from pg_extension")}
                facts.no_identity += _qualified(name, conn.execute(_NO_IDENTITY).fetchall())
                facts.unlogged += _qualified(name, conn.execute(_UNLOGGED).fetchall())
                facts.large_objects += conn.execute("select count(*) from pg_largeobject_metadata").fetchone()[0]
        return facts

    def _dump_tools(self, source: int, installed: dict[int, Path] | None = None) -> Path:
        """The old major's own client tools when its installation has them, else the newest
        client tools (pg_dump reads older servers, never newer ones)."""
        own = (installed if installed is not None else self.driver.installations()).get(source)
        if own is not None and all((own / tool).exists() for tool in ("pg_dumpall", "psql")):
            return own
        tools = self.driver.client_tools()
        usable = [major for major in tools if major >= source]
        if not usable:
            raise Invalid(
                f"no pg_dumpall of PostgreSQL {source} or newer is installed here (client tools found: "
                f"{', '.join(str(m) for m in sorted(tools)) or 'none'}); scripts/postgres installs 18's"
            )
        return tools[max(usable)]

    def _old(self, settings: PostgresSettings, dbname: str = "postgres", as_upgrade: State | None = None):
        user, password = (UPGRADE_ROLE, as_upgrade.role_password) if as_upgrade else (settings.user, settings.password)
        return psycopg.connect(
            host=self.driver.local_address(),
            port=settings.port,
            user=user,
            password=password,
            dbname=dbname,
            connect_timeout=CONNECT_TIMEOUT_S,
            autocommit=True,
            application_name="berth-upgrade",
        )

    def _new(self, state: State, settings: PostgresSettings, dbname: str = "postgres"):
        return psycopg.connect(
            host=state.socket_dir,
            port=settings.port,
            user=settings.user,
            password=settings.password,
            dbname=dbname,
            connect_timeout=CONNECT_TIMEOUT_S,
            autocommit=True,
            application_name="berth-upgrade",
        )

    def _save(self, runtime: "Runtime", state: State) -> None:
        path = _next(runtime).state / STATE_FILE
        state.save(path)
        if self.driver.run_as:
            os.chown(path, self.driver.run_as.uid, self.driver.run_as.gid)


@dataclass
class Facts:
    """What the check reads from the serving cluster."""

    wal_level: str = ""
    size: int = 0
    extensions: set = None
    no_identity: list = None
    unlogged: list = None
    large_objects: int = 0

    def __post_init__(self):
        self.extensions, self.no_identity, self.unlogged = set(), [], []


# Ordinary and partitioned tables outside the system schemas that have neither a primary key
# nor a usable replica identity (FULL or an index).
_NO_IDENTITY = """
select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
  and n.nspname not like 'pg\\_%' and not c.relispartition
  and (c.relreplident = 'n' or (c.relreplident = 'd'
       and not exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisprimary)))
order by 1, 2
"""
_UNLOGGED = """
select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind = 'r' and c.relpersistence = 'u' order by 1, 2
"""


def _next(runtime: "Runtime") -> ClusterPaths:
    state = ClusterPaths.of(runtime.folder).state / NEXT
    return ClusterPaths(state, state / "data", state / "postgres.log")


def _previous(runtime: "Runtime") -> ClusterPaths:
    state = ClusterPaths.of(runtime.folder).state / PREVIOUS
    return ClusterPaths(state, state / "data", state / "postgres.log")


def _databases(conn: psycopg.Connection) -> list[tuple[str, int]]:
    return conn.execute(
        "select datname, oid::int from pg_database where datallowconn and not datistemplate order by datname"
    ).fetchall()


def _drop_bootstrap_role(dump: Path, user: str) -> None:
    """pg_dumpall creates every role; the new cluster's bootstrap superuser exists already
    (its ALTER ROLE, with the password, stays)."""
    text = dump.read_text()
    dump.write_text(text.replace(f"\nCREATE ROLE {user};\n", "\n", 1))


def _available_extensions(bindir: Path, major: int) -> set[str]:
    """The extensions an installation ships (its share/extension/*.control)."""
    root = bindir.resolve().parent
    for share in (root / "share" / "postgresql", root / "share", Path(f"/usr/share/postgresql/{major}")):
        folder = share / "extension"
        if (folder / "plpgsql.control").exists():
            return {control.stem for control in folder.glob("*.control")}
    return set()


def _qualified(database: str, rows: list[tuple[str, str]]) -> list[str]:
    prefix = "" if database == "postgres" else f"{database}:"
    return [f"{prefix}{schema}.{name}" for schema, name in rows]


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED])
    return shown + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")


def _mib(size: int) -> str:
    return f"{size / (1 << 20):,.0f} MiB"


def _said(error: psycopg.Error) -> str:
    diag = getattr(error, "diag", None)
    return (diag.message_primary if diag and diag.message_primary else str(error)).strip() or type(error).__name__
