"""Backups of docker-driver runtimes: the jobs, repository layout and API of agent.backups, with
PostgreSQL inside the runtime's database container. See "Backups (agent side)" in
docs/architecture.md.

The database container is the compose service's whose container has the label
`berth.postgres-major`, else the service named `db`. PGDATA (its environment's, default
/var/lib/postgresql/data) is the root of the database volume. Only a POSIX shell, cp, mv, rm,
chown, tar and PostgreSQL's own programs are used inside the image, as its `postgres` user
(root only to lay out folders in the volume and to copy in the host's copy of a base backup,
whose files are the agent's).

Under a runtime's `.berth-docker/` (the agent's):

    backup/                  repository.json, archive.json, job.json (as agent.backups)
    wal/                     bind-mounted at /berth-wal in the database container, owned by the
                             container's postgres user:
        push                 the archive command (POSIX sh): copies the segment into outbox/ and
                             waits for done/<segment> (stored) or failed/<segment> (why not)
        outbox/ done/ failed/
    compose.override.yml     that bind mount (the driver passes it after the compose file)
    restore/, verify/        a job's WAL spool and pg_hba, bind-mounted into its one-off container

In the database volume: `.berth-restore/` the cluster a restore builds (recovered by a one-off
container of the same image), `.berth-aside/` the serving data while the restored data starts.
A verify recovers into a scratch volume `berth-verify-<ref>`.

Invariants (as agent.backups'):
- A segment counts as archived only once the agent has stored it in the repository: the
  archive command waits for that acknowledgment, so pg_stat_archiver and pg_basebackup's wait
  for the last segment mean what they mean for the process driver.
- The serving data is moved aside only after the restored cluster has recovered and been
  promoted; the swap moves every old entry into `.berth-aside/` first, marks it complete, then
  moves the restored entries in. Putting back reads the mark: before it, the root holds only
  old entries; after it, only restored ones. So the volume always ends with the old data or
  the fully restored data, also when an agent restart settles it.
"""

import fcntl
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import msgspec

from agent import api, hostcopy, zstdio
from agent.archiving import ARCHIVE_FILE, REPOSITORY_FILE, archive_timeout, archiving_on, backup_dir, conf_quote
from agent.backups import (
    _LAST_COMMIT,
    _NEW_TIMELINE,
    _TARGET_NOT_REACHED,
    BASEBACKUP_ARGS,
    COPY_FAILED,
    FROM_COPY,
    RESTORE,
    VERIFY,
    Backups,
    Job,
    Recovered,
    RestoreFailed,
    _archive_failure,
    _base_key,
    _check_reached,
    _damaged,
    _problems,
    _put_back_error,
    _restored_detail,
    _Watchdog,
    _write_base,
    spec_of,
)
from agent.commands import Deadline, run, run_checked
from agent.drivers.docker import OVERRIDE_FILE, PROJECT_LABEL, DockerDriver
from agent.errors import ApiError, CommandFailed, Invalid
from agent.repository import (
    FolderStore,
    RepositoryUnavailable,
    Spec,
    Store,
    archive_segment,
    open_store,
    segment_system_identifier,
)
from agent.runtimes import Runtime, Runtimes
from agent.walstore import open_wal_store

log = logging.getLogger("agent.docker_backups")

STATE = ".berth-docker"
SYSTEM_ID_SQL = "select system_identifier from pg_control_system()"
MAJOR_LABEL = "berth.postgres-major"
SERVICE_LABEL = "com.docker.compose.service"
CONTAINER_WAL = "/berth-wal"
CONTAINER_WORK = "/berth-work"
CONTAINER_TAR = "/berth-base.tar"
CONTAINER_COPY = "/berth-base-copy"
SCRATCH_MOUNT = "/berth-scratch"
RESTORE_DIR = ".berth-restore"
ASIDE_DIR = ".berth-aside"
DEFAULT_PGDATA = "/var/lib/postgresql/data"
SHIP_POLL_S = 0.1
SHIPPERS = 4
PUSH_TRIES = 3000  # the archive command's waits for the agent (0.1 s each; 1 s where sleep takes integers only)
SERVE_WAIT_S = 120.0
CLEANUP_S = 120.0
INSPECT_LIMIT = 1 << 20  # `docker inspect` prints the whole container as JSON
BACKUP_APP = "berth-basebackup"  # application_name of the base backup's connections

# The archive command. Its stderr is PostgreSQL's, so `docker logs` carries the reason.
PUSH_SCRIPT = f"""#!/bin/sh
# Berth's archive command (archive_command = 'sh {CONTAINER_WAL}/push %p %f'): hands the segment
# to the agent and waits until the agent has stored it in the backup repository.
set -u
dir={CONTAINER_WAL}
seg=$2
rm -f "$dir/done/$seg" "$dir/failed/$seg"
if ! {{ cp "$1" "$dir/outbox/.$seg" && mv "$dir/outbox/.$seg" "$dir/outbox/$seg"; }}; then
  echo "berth-wal push $seg: cannot write $dir/outbox" >&2
  exit 1
fi
tries=0
while [ "$tries" -lt {PUSH_TRIES} ]; do
  if [ -e "$dir/done/$seg" ]; then
    rm -f "$dir/done/$seg"
    exit 0
  fi
  if [ -e "$dir/failed/$seg" ]; then
    echo "berth-wal push $seg: $(cat "$dir/failed/$seg")" >&2
    rm -f "$dir/failed/$seg"
    exit 1
  fi
  sleep 0.1 2>/dev/null || sleep 1
  tries=$((tries + 1))
done
echo "berth-wal push $seg: the Berth agent did not store it (is it running?)" >&2
exit 1
"""

# Run as root in a one-off container with the database's volumes, in PGDATA. The swap and its
# undo (see the module's invariants); `$1` is the restored cluster's folder.
SWAP_SCRIPT = f"""set -eu
cd "$PGDATA"
mkdir -p {ASIDE_DIR}
for f in *; do [ -e "$f" ] || continue; mv "$f" {ASIDE_DIR}/; done
touch {ASIDE_DIR}/.complete
for f in {RESTORE_DIR}/*; do [ -e "$f" ] || continue; mv "$f" .; done
rmdir {RESTORE_DIR}
"""
PUT_BACK_SCRIPT = f"""set -eu
cd "$PGDATA"
if [ -d {ASIDE_DIR} ]; then
  if [ -e {ASIDE_DIR}/.complete ]; then
    mkdir -p {RESTORE_DIR}.failed
    for f in *; do [ -e "$f" ] || continue; mv "$f" {RESTORE_DIR}.failed/; done
  fi
  for f in {ASIDE_DIR}/*; do [ -e "$f" ] || continue; mv "$f" .; done
  rm -rf {ASIDE_DIR} {RESTORE_DIR}.failed
  echo put-back
fi
rm -rf {RESTORE_DIR}
"""
DISCARD_SCRIPT = f'set -eu\ncd "$PGDATA"\nrm -rf {ASIDE_DIR}\n'
# A fresh folder for a cluster, the postgres user's, mode 700 (the volume's root too: a new
# bind mount may be root's).
PREPARE_SCRIPT = 'set -eu\nrm -rf "$1"\nmkdir -p "$1"\nchown postgres:postgres "$1" "$(dirname "$1")"\nchmod 700 "$1"\n'


@dataclass(frozen=True)
class Container:
    id: str
    service: str
    major: int | None
    running: bool
    image: str
    pgdata: str
    password: str | None  # POSTGRES_PASSWORD of its environment: the superuser's, set on restored data


class DockerBackups(Backups):
    def __init__(self, runtimes: Runtimes):
        super().__init__(runtimes)
        self._shipping: set[Path] = set()
        self._shipping_lock = threading.Lock()

    # -- archiving ------------------------------------------------------------------------

    def configure_archiving(self, ref: str, body: api.ArchivingRequest, deadline: Deadline) -> api.ArchiverStatus:
        runtime = self.runtimes.existing(ref)
        with self.runtimes.hold(ref, deadline, body.operation):
            container = self._container(runtime, deadline)
            if container is None or not container.running:
                raise Invalid(f"runtime {ref} is not running; archiving is set on its running server: start it first")
            folder = backup_dir(self._state(runtime))
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if body.repository is not None:
                spec = spec_of(body.repository)
                self._prepare_store(spec, ref)
                spec.save(folder / REPOSITORY_FILE, ref)
                # The shipper stores the segments in this cluster's WAL folder (wal_key); a
                # docker runtime's cluster keeps its identifier for life (no major upgrades,
                # and a restore keeps it), and a segment of another is refused (_ship).
                system_id = _psql(container.id, SYSTEM_ID_SQL, deadline).strip()
                archive = {"archive_timeout_s": body.archive_timeout_s, "system_identifier": system_id}
                (folder / ARCHIVE_FILE).write_text(json.dumps(archive))
                remount = self._prepare_outbox(runtime, container, deadline)
                command = f"sh {CONTAINER_WAL}/push %p %f"
                statements = (
                    "alter system set archive_mode = on;\n"
                    f"alter system set archive_command = {conf_quote(command)};\n"
                    f"alter system set archive_timeout = {int(body.archive_timeout_s or 60)};\n"
                )
            else:
                (folder / REPOSITORY_FILE).unlink(missing_ok=True)
                (folder / ARCHIVE_FILE).unlink(missing_ok=True)
                remount = False
                statements = "alter system reset archive_mode;\nalter system reset archive_command;\n"
                statements += "alter system reset archive_timeout;\n"
            mode = _psql(container.id, "show archive_mode", deadline).strip()
            _psql(container.id, statements, deadline)
            wanted = "on" if body.repository is not None else "off"
            restarted = remount or mode != wanted  # archive_mode and a new mount take a restart
            if remount:
                self.runtimes.driver.up(runtime, deadline)  # compose recreates the service with the mount
            elif restarted:
                run_checked(["docker", "restart", "-t", "30", container.id], deadline)
            else:
                _psql(container.id, "select pg_reload_conf()", deadline)
            if restarted:
                self._wait_serving(runtime, deadline)
        return msgspec.structs.replace(self._archiver(runtime), restarted=restarted)

    def _prepare_outbox(self, runtime: Runtime, container: Container, deadline: Deadline) -> bool:
        """The outbox folders and push script, owned by the container's postgres user, and the
        override mounting them; True when the override is new or changed (a recreate)."""
        uid, gid = (
            int(run_checked(["docker", "exec", "-u", "postgres", container.id, "id", flag], deadline).output_tail)
            for flag in ("-u", "-g")
        )
        wal = self._state(runtime) / "wal"
        for folder in (wal, wal / "outbox", wal / "done", wal / "failed"):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chown(folder, uid, gid)
        script = wal / "push"
        script.write_text(PUSH_SCRIPT)
        script.chmod(0o755)
        override = runtime.folder / OVERRIDE_FILE
        text = (
            "# Written by the Berth agent: the WAL outbox of the database service (agent.docker_backups).\n"
            f"services:\n  {container.service}:\n    volumes:\n"
            f"      - {json.dumps(f'{wal}:{CONTAINER_WAL}')}\n"
        )
        if override.is_file() and override.read_text() == text:
            return False
        override.write_text(text)
        return True

    def _archiver(self, runtime: Runtime) -> api.ArchiverStatus:
        state = self._state(runtime)
        if not archiving_on(state):
            return api.ArchiverStatus(enabled=False)
        spec, _ = Spec.load(backup_dir(state) / REPOSITORY_FILE)
        base = {"enabled": True, "url": spec.url, "archive_timeout_s": archive_timeout(state)}
        deadline = Deadline(10)
        try:
            container = self._container(runtime, deadline)
            if container is None or not container.running:
                return api.ArchiverStatus(**base)
            row = _psql(
                container.id,
                "select archived_count, coalesce(last_archived_wal, ''), "
                "coalesce(extract(epoch from last_archived_time)::float8::text, ''), failed_count, "
                "coalesce(last_failed_wal, ''), coalesce(extract(epoch from last_failed_time)::float8::text, '') "
                "from pg_stat_archiver",
                deadline,
            )
        except ApiError:
            return api.ArchiverStatus(**base)
        archived, last_wal, last_at, failed, failed_wal, failed_at = row.strip().split("|")
        last_at_f = float(last_at) if last_at else None
        failed_at_f = float(failed_at) if failed_at else None
        failing = failed_at_f is not None and (last_at_f is None or failed_at_f > last_at_f)
        reason = None
        if failing:
            logs = run(["docker", "logs", "--tail", "400", container.id], Deadline(10), output_limit=65536)
            reason = _archive_failure(logs.output_tail)
        return api.ArchiverStatus(
            **base,
            running=True,
            archived_count=int(archived),
            last_archived_wal=last_wal or None,
            last_archived_unix=last_at_f,
            failed_count=int(failed),
            last_failed_wal=failed_wal or None,
            last_failed_unix=failed_at_f,
            last_failure=reason,
        )

    # -- the WAL shipper ------------------------------------------------------------------

    def ship_until(self, stop: threading.Event) -> None:
        """Store every segment the docker runtimes' archive commands put in their outboxes."""
        with ThreadPoolExecutor(SHIPPERS, thread_name_prefix="berth-wal") as pool:
            while not stop.wait(SHIP_POLL_S):
                for outbox in self.runtimes.root.glob(f"*/{STATE}/wal/outbox"):
                    try:
                        names = [path for path in outbox.iterdir() if not path.name.startswith(".")]
                    except OSError:
                        continue  # the runtime went meanwhile
                    for path in names:
                        with self._shipping_lock:
                            if path in self._shipping:
                                continue
                            self._shipping.add(path)
                        pool.submit(self._ship, path)

    def _ship(self, path: Path) -> None:
        wal = path.parent.parent
        spec_file = backup_dir(wal.parent) / REPOSITORY_FILE
        try:
            try:
                if not spec_file.is_file():
                    raise RepositoryUnavailable("archiving is off for this runtime")
                spec, stanza = Spec.load(spec_file)
                system_id = json.loads((spec_file.parent / ARCHIVE_FILE).read_text())["system_identifier"]
                found = segment_system_identifier(path)
                if found not in (None, system_id):
                    raise RepositoryUnavailable(
                        f"{path.name} is of cluster {found}, and archiving was set for {system_id}: "
                        "turn archiving on again for this cluster"
                    )
                archive_segment(open_wal_store(spec, stanza), path, system_id, path.name)
                answer, text = wal / "done" / path.name, ""
            except (RepositoryUnavailable, OSError) as error:
                answer, text = wal / "failed" / path.name, str(error) or type(error).__name__
            partial = answer.with_name(f".{answer.name}")
            partial.write_text(text)
            path.unlink(missing_ok=True)
            os.replace(partial, answer)
        except OSError as error:
            log.warning("could not answer the archive command for %s: %s", path, error)
        except Exception:
            log.exception("shipping %s failed", path)
        finally:
            with self._shipping_lock:
                self._shipping.discard(path)

    # -- jobs -----------------------------------------------------------------------------

    def _state(self, runtime: Runtime) -> Path:
        return runtime.folder / STATE

    def _check_runtime(self, runtime: Runtime) -> None:
        del runtime  # the container is looked up by each job, which says when there is none

    def _check_restorable(self, runtime: Runtime, source: str, backup: api.BackupInfo) -> None:
        container = self._container(runtime, Deadline(10))
        if container is not None and container.major is not None and container.major != backup.major:
            raise Invalid(
                f"the backups of {source} are of PostgreSQL {backup.major}; "
                f"the database container of {runtime.ref} runs {container.major}"
            )

    def _run_as(self) -> None:
        return None  # the agent's own files; what containers read is made theirs where needed

    def _settle_work(self, runtime: Runtime, kind: str | None) -> str:
        detail = "the agent stopped during the job"
        deadline = Deadline(CLEANUP_S)
        for oneoff in (RESTORE, VERIFY):
            run(["docker", "rm", "-f", _oneoff_name(oneoff, runtime)], deadline)
        run(["docker", "volume", "rm", "-f", _scratch_volume(runtime)], deadline)
        container = self._container(runtime, deadline)
        if container is not None and "put-back" in self._shell(container, PUT_BACK_SCRIPT, deadline):
            self.runtimes.driver.up(runtime, deadline)
            detail += "; the data it was restoring over was put back and started"
        elif container is not None and kind == "restore":
            self.runtimes.driver.up(runtime, deadline)  # a restore stops the database as it begins
            detail += "; the data it was restoring over was started again"
        for scratch in (RESTORE, VERIFY):
            _remove_tree(self._state(runtime) / scratch)
        return detail

    # -- base backup ----------------------------------------------------------------------

    def _base_backup(self, runtime: Runtime, spec: Spec, store: Store, job: Job, deadline: Deadline) -> api.BackupInfo:
        container = self._require(runtime, deadline)
        major = container.major or int(_psql(container.id, "show server_version_num", deadline)) // 10000
        # Over the container's local socket, as its postgres user: no password, no TCP.
        argv = ["docker", "exec", "-u", "postgres", "-e", f"PGAPPNAME={BACKUP_APP}", container.id]
        argv += ["pg_basebackup", "-U", "postgres", *BASEBACKUP_ARGS]
        return self._take_base_backup(runtime, argv, {}, major, spec, store, job, deadline)

    def _system_identifier(self, runtime: Runtime) -> str:
        return _psql(self._require(runtime, Deadline(10)).id, SYSTEM_ID_SQL, Deadline(10)).strip()

    def _abandon_backup(self, runtime: Runtime) -> None:
        # Killing `docker exec` need not stop pg_basebackup in the container: end its
        # connections, and it exits.
        container = self._container(runtime, Deadline(10))
        if container is not None and container.running:
            sql = f"select pg_terminate_backend(pid) from pg_stat_activity where application_name = '{BACKUP_APP}'"
            try:
                _psql(container.id, sql, Deadline(10))
            except ApiError as error:
                log.warning("could not end the base backup of %s: %s", runtime.ref, error)

    # -- restore --------------------------------------------------------------------------

    def _restore(
        self,
        runtime: Runtime,
        spec: Spec,
        source: str,
        backup: api.BackupInfo,
        target: float | None,
        job: Job,
        deadline: Deadline,
    ) -> None:
        driver: DockerDriver = self.runtimes.driver
        container = self._container(runtime, deadline)
        existed = container is not None  # running or stopped: a restore ends with it started
        if container is None:  # a runtime that never ran (a clone, a lost host's project)
            driver.create(runtime, deadline)
            container = self._require(runtime, deadline)
        data = f"{container.pgdata}/{RESTORE_DIR}"
        mounts = ["--volumes-from", container.id]
        try:
            if existed:
                # Stopped as the restore begins, as agent.backups does (why: there): its last
                # segment is archived (the archive command waits for the shipper) before the
                # WAL is listed, and no commit is acknowledged that the swap would discard.
                run_checked(["docker", "stop", "-t", "60", container.id], deadline)
            copy = self._host_copy(spec, source, backup)
            restored = self._recover(
                runtime, container, RESTORE, mounts, data, spec, source, backup, target, job, deadline, copy=copy
            )
        except BaseException:
            # The serving data was not touched: the scratch cluster goes, the database starts again.
            self._put_back(runtime, container, restart=existed)
            raise
        finally:
            _remove_tree(self._state(runtime) / RESTORE)
        job.update(restored_to_unix=restored.last_commit, timeline=restored.timeline)
        # The restored cluster has recovered and answered; now, and only now, swap.
        job.update(phase="swapping")
        try:
            run_checked(["docker", "stop", "-t", "60", container.id], deadline)
            self._shell(container, SWAP_SCRIPT, deadline)
            driver.up(runtime, deadline)
            self._wait_serving(runtime, deadline)
        except (ApiError, OSError) as error:
            job.update(phase="putting back")
            self._put_back(runtime, container, restart=True)
            raise _put_back_error(error) from None
        # The replaced data goes now, before any base backup could copy it along.
        self._shell(container, DISCARD_SCRIPT, Deadline(max(CLEANUP_S, deadline.remaining())))
        job.update(detail=_restored_detail(restored, backup))

    def _put_back(self, runtime: Runtime, container: Container, restart: bool) -> None:
        """Undo a restore wherever it stopped: the old data back in place (and started)."""
        cleanup = Deadline(CLEANUP_S)
        run(["docker", "rm", "-f", _oneoff_name(RESTORE, runtime)], cleanup)
        try:
            if restart:
                run_checked(["docker", "stop", "-t", "60", container.id], cleanup)
            self._shell(container, PUT_BACK_SCRIPT, cleanup)
        finally:
            if restart:
                self.runtimes.driver.up(runtime, cleanup)

    def _verify(
        self, runtime: Runtime, spec: Spec, source: str, backup: api.BackupInfo, job: Job, deadline: Deadline
    ) -> None:
        container = self._require(runtime, deadline)
        volume = _scratch_volume(runtime)
        name = _oneoff_name(VERIFY, runtime)
        try:
            run_checked(["docker", "volume", "create", volume], deadline)
            mounts = ["-v", f"{volume}:{SCRATCH_MOUNT}"]
            data = f"{SCRATCH_MOUNT}/data"
            restored = self._recover(
                runtime, container, VERIFY, mounts, data, spec, source, backup, None, job, deadline, keep_running=True
            )
            job.update(phase="checking")
            names = _psql(name, "select datname from pg_database where datallowconn", deadline, socket="/tmp").split()
            for database in names:
                _psql(name, "select count(*) from pg_class", deadline, socket="/tmp", database=database)
            job.update(
                restored_to_unix=restored.last_commit,
                databases=len(names),
                detail=f"{len(names)} databases answered; {_restored_detail(restored, backup)}",
            )
        finally:
            cleanup = Deadline(CLEANUP_S)
            run(["docker", "rm", "-f", name], cleanup)
            run(["docker", "volume", "rm", "-f", volume], cleanup)
            _remove_tree(self._state(runtime) / VERIFY)

    def _recover(
        self,
        runtime: Runtime,
        container: Container,
        kind: str,
        mounts: list[str],
        data: str,
        spec: Spec,
        source: str,
        backup: api.BackupInfo,
        target: float | None,
        job: Job,
        deadline: Deadline,
        keep_running: bool = False,
        copy: Path | None = None,
    ) -> Recovered:
        """The backup restored into `data` (a path in a one-off container of the database's
        image with `mounts`) and recovered to `target` (None: the archive's end) and promoted,
        with the container's POSTGRES_PASSWORD for the postgres role. Stopped and removed after,
        unless keep_running (its name: _oneoff_name(kind)). `copy`: this host's copy of the
        backup (agent.hostcopy), copied in instead of the repository's tar (_copy_into)."""
        name = _oneoff_name(kind, runtime)
        run(["docker", "rm", "-f", name], deadline)
        work = self._state(runtime) / kind
        _remove_tree(work)
        spool = work / "wal"
        spool.mkdir(mode=0o755, parents=True)
        work.chmod(0o755)
        (work / "hba.conf").write_text("local all all trust\n")
        (work / "hba.conf").chmod(0o644)
        store = open_store(spec, source)
        whence = FROM_COPY if copy is not None else ""
        job.update(phase="fetching", detail=f"base backup {backup.id}{whence} of {source}")
        prepare = ["-c", PREPARE_SCRIPT, "sh", data]
        self._oneoff(container, mounts, ["-u", "0", "--entrypoint", "sh"], prepare, deadline)
        if copy is not None:
            try:
                self._copy_into(container, name, mounts, data, deadline, copy)
            except CommandFailed as error:
                if deadline.expired():
                    raise
                # Damaged or gone: forgotten, and the repository's tar extracted instead.
                hostcopy.forget(copy, error)
                whence = COPY_FAILED
                job.update(detail=f"base backup {backup.id}{whence} of {source}")
                self._oneoff(container, mounts, ["-u", "0", "--entrypoint", "sh"], prepare, deadline)
                copy = None
        if copy is None:
            self._extract_base(container, name, mounts, store, _base_key(store, backup), backup.bytes, data, deadline)
        job.update(phase="fetching WAL")
        # Every segment from the backup's start: the restore command is a cp from the spool
        # alone (the image may have no interpreter for agent/wal.py's fetch).
        newest = self._prefetch_wal(store, backup, None, spool, deadline)
        for path in spool.iterdir():
            path.chmod(0o644)
        job.update(phase="recovering")
        log_file = work / "postgres.log"
        to_end = target is None
        if self._run_recovery(container, name, mounts, work, data, target, log_file, deadline) is None:
            # No commit past the target in the archive: every archived commit is at or before
            # it, and the archive's end is the answer (as agent.backups).
            to_end = True
            self._run_recovery(container, name, mounts, work, data, None, log_file, deadline)
        try:
            if to_end:
                _check_reached(log_file, newest)
            if container.password is not None:
                # The role's password on stdin, never on a command line.
                _psql(name, f"alter role postgres password {conf_quote(container.password)}", deadline, socket="/tmp")
            said = log_file.read_text(errors="replace")
            commit, timeline = _LAST_COMMIT.findall(said), _NEW_TIMELINE.findall(said)
            result = Recovered(
                last_commit=datetime.fromisoformat(commit[-1]).timestamp() if commit else None,
                timeline=int(timeline[-1]) if timeline else None,
                socket_dir=Path("/tmp"),
                whence=whence,
            )
            if not keep_running:
                _psql(name, "checkpoint", deadline, socket="/tmp")
                self._stop_oneoff(name, log_file, deadline)
        except BaseException:
            run(["docker", "rm", "-f", name], Deadline(CLEANUP_S))
            raise
        return result

    def _run_recovery(
        self,
        container: Container,
        name: str,
        mounts: list[str],
        work: Path,
        data: str,
        target: float | None,
        log_file: Path,
        deadline: Deadline,
    ) -> bool | None:
        """A one-off container recovering `data` on its private socket (no network); True once
        promoted, None when it stopped because the archive ended before a commit past the target."""
        run(["docker", "rm", "-f", name], deadline)
        settings = {
            "listen_addresses": "",
            "unix_socket_directories": "/tmp",
            "hba_file": f"{CONTAINER_WORK}/hba.conf",
            # Archiving on with no command: the new timeline's files are kept and marked ready,
            # archived once the cluster serves the project (its postgresql.auto.conf names the
            # command); a restore that is undone archives nothing.
            "archive_mode": "on",
            "archive_command": "",
            "restore_command": f"cp {CONTAINER_WORK}/wal/%f %p",
            "recovery_target_timeline": "latest",
        }
        if target is not None:
            settings["recovery_target_time"] = datetime.fromtimestamp(target, UTC).isoformat(sep=" ")
            settings["recovery_target_action"] = "promote"
        args = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        run_checked(
            [
                *("docker", "run", "-d", "--name", name, "--network", "none", *mounts),
                *("-v", f"{work}:{CONTAINER_WORK}:ro", "-u", "postgres", "--entrypoint", "postgres"),
                *(container.image, "-D", data, *args),
            ],
            deadline,
        )
        while True:
            try:
                if _psql(name, "select pg_is_in_recovery()", Deadline(10), socket="/tmp").strip() == "f":
                    self._save_logs(name, log_file)
                    return True
            except ApiError:
                state = run(["docker", "inspect", "-f", "{{.State.Running}}", name], Deadline(10)).output_tail
                if state.strip() != "true":
                    said = self._save_logs(name, log_file)
                    run(["docker", "rm", "-f", name], Deadline(CLEANUP_S))
                    if target is not None and _TARGET_NOT_REACHED in said:
                        return None
                    raise RestoreFailed(
                        f"the restored cluster stopped during recovery: {_problems(said)}", output_tail=said[-4096:]
                    ) from None
            if deadline.expired():
                said = self._save_logs(name, log_file)
                run(["docker", "rm", "-f", name], Deadline(CLEANUP_S))
                raise deadline.stopped("recovery", started=True, output_tail=said[-4096:])
            time.sleep(0.2)

    def _save_logs(self, name: str, log_file: Path) -> str:
        """The one-off's log (PostgreSQL's stderr) appended to log_file; returns this run's."""
        said = run(["docker", "logs", name], Deadline(30), output_limit=1 << 22).output_tail
        with open(log_file, "a") as handle:
            handle.write(said)
        return said

    def _stop_oneoff(self, name: str, log_file: Path, deadline: Deadline) -> None:
        run_checked(["docker", "kill", "-s", "INT", name], deadline)  # a fast shutdown, with its checkpoint
        run_checked(["docker", "wait", name], deadline)
        said = self._save_logs(name, log_file)
        run_checked(["docker", "rm", name], deadline)
        if "database system is shut down" not in said:
            raise RestoreFailed(f"the restored cluster did not shut down cleanly: {_problems(said)}")

    def _extract_base(
        self,
        container: Container,
        name: str,
        mounts: list[str],
        store: Store,
        key: str,
        tar_bytes: int,
        data: str,
        deadline: Deadline,
    ) -> None:
        """The repository's tar of the base backup extracted into `data` (_extract_into): a
        folder's bind-mounted, an object's streamed to tar's stdin, decompressed by the agent
        (the image need have no zstd)."""
        if not isinstance(store, FolderStore):
            try:
                self._extract_into(
                    container,
                    name,
                    mounts,
                    data,
                    deadline,
                    write=lambda out: _write_base(store, key, tar_bytes, out, deadline),
                )
            except zstdio.Damaged as error:
                raise _damaged(key, error) from None
            except FileNotFoundError:
                raise RepositoryUnavailable(f"the repository has no {key}") from None
            return
        local = store.root / key
        if not local.is_file():
            raise RepositoryUnavailable(f"the repository has no {key}")
        self._extract_into(container, name, mounts, data, deadline, local=local)

    def _copy_into(
        self, container: Container, name: str, mounts: list[str], data: str, deadline: Deadline, copy: Path
    ) -> None:
        """The host's copy of the base backup (agent.hostcopy: its files, the agent's) copied
        into `data` in a one-off container `name`, bind-mounted read-only; as root, which alone
        reads them, then made the postgres user's. The copy stays: the database's data lies in
        a volume the agent does not move files into."""
        script = f'cp -a {CONTAINER_COPY}/. "$1" && touch "$1/recovery.signal" && chown -R postgres:postgres "$1"'
        argv = [
            *("docker", "run", "--rm", "--name", name, "--network", "none", *mounts, "-u", "0"),
            *("--mount", f"type=bind,source={copy},target={CONTAINER_COPY},readonly"),
            *("--entrypoint", "sh", container.image, "-c", script, "sh", data),
        ]
        done = run(argv, deadline)
        if done.returncode != 0:
            raise CommandFailed(
                f"the host's copy could not be copied: {done.output_tail[-500:]}", output_tail=done.output_tail
            )

    def _extract_into(
        self,
        container: Container,
        name: str,
        mounts: list[str],
        data: str,
        deadline: Deadline,
        local: Path | None = None,
        write: Callable[[BinaryIO], None] | None = None,
    ) -> None:
        """A tar extracted into `data` in a one-off container `name` (named, so a cleanup
        removes it even when killing `docker run` left it running): a `local` file bind-mounted
        read-only and read by tar itself (a container's stdin carried a tar at a quarter of
        that speed here), or what `write(out)` writes to tar's stdin."""
        argv = ["docker", "run", "--rm", "--name", name, "--network", "none", *mounts, "-u", "postgres"]
        if local is not None:
            # --mount, not -v: a source the engine cannot see is an error, never an empty folder made.
            argv += ["--mount", f"type=bind,source={local},target={CONTAINER_TAR},readonly"]
        else:
            argv += ["-i"]
        script = f'tar -x -f {CONTAINER_TAR if local else "-"} -C "$1" && touch "$1/recovery.signal"'
        argv += ["--entrypoint", "sh", container.image, "-c", script, "sh", data]
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL if local else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        watchdog = _Watchdog(process, deadline)
        try:
            try:
                if write is not None:
                    _widen_pipe(process.stdin)
                    write(process.stdin)
            except BrokenPipeError:
                pass  # tar stopped: its status and words say why
            finally:
                if process.stdin is not None:
                    try:
                        process.stdin.close()
                    except BrokenPipeError:
                        pass
                said = process.stdout.read().decode("utf-8", errors="replace")
                process.wait()
        finally:
            watchdog.stop()
        if watchdog.fired:
            raise deadline.stopped("extracting the base backup", started=True)
        if process.returncode != 0:
            raise CommandFailed(f"tar could not extract the base backup: {said[-500:]}", output_tail=said[-4096:])

    # -- containers -----------------------------------------------------------------------

    def _container(self, runtime: Runtime, deadline: Deadline) -> Container | None:
        """The runtime's database container (running or not), or None when it has none."""
        listing = run_checked(
            [
                *("docker", "ps", "--all", "--no-trunc", "--filter", f"label={PROJECT_LABEL}={runtime.ref}"),
                *("--format", f'{{{{.ID}}}} {{{{.Label "{SERVICE_LABEL}"}}}} {{{{.Label "{MAJOR_LABEL}"}}}}'),
            ],
            deadline,
        ).output_tail
        rows = [line.split(" ") for line in listing.splitlines() if line.strip()]
        chosen = next((row for row in rows if len(row) > 2 and row[2]), None)
        chosen = chosen or next((row for row in rows if len(row) > 1 and row[1] == "db"), None)
        if chosen is None:
            return None
        (inspected,) = json.loads(
            run_checked(["docker", "inspect", chosen[0]], deadline, output_limit=INSPECT_LIMIT).output_tail
        )
        env = dict(item.split("=", 1) for item in inspected["Config"].get("Env") or [] if "=" in item)
        major = chosen[2] if len(chosen) > 2 else ""
        return Container(
            id=chosen[0],
            service=chosen[1],
            major=int(major) if major.isdigit() else None,
            running=bool(inspected["State"]["Running"]),
            image=inspected["Image"],
            pgdata=env.get("PGDATA") or DEFAULT_PGDATA,
            password=env.get("POSTGRES_PASSWORD"),
        )

    def _require(self, runtime: Runtime, deadline: Deadline) -> Container:
        container = self._container(runtime, deadline)
        if container is None:
            raise Invalid(
                f"runtime {runtime.ref} has no database container (a service labelled {MAJOR_LABEL} or named db)"
            )
        return container

    def _oneoff(
        self, container: Container, mounts: list[str], options: list[str], args: list[str], deadline: Deadline
    ) -> str:
        argv = ["docker", "run", "--rm", "--network", "none", *mounts, *options, container.image, *args]
        return run_checked(argv, deadline).output_tail

    def _shell(self, container: Container, script: str, deadline: Deadline) -> str:
        """`script` as root in a one-off container with the database's volumes, PGDATA set."""
        options = ["-u", "0", "-e", f"PGDATA={container.pgdata}", "--entrypoint", "sh"]
        return self._oneoff(container, ["--volumes-from", container.id], options, ["-c", script], deadline)

    def _wait_serving(self, runtime: Runtime, deadline: Deadline) -> None:
        """The database container answers a query (within SERVE_WAIT_S and the deadline)."""
        waiting = Deadline(min(SERVE_WAIT_S, max(1.0, deadline.remaining())))
        container = self._require(runtime, waiting)
        while True:
            try:
                _psql(container.id, "select 1", Deadline(10))
                return
            except ApiError as error:
                if waiting.expired() or deadline.expired():
                    raise CommandFailed(f"the database of {runtime.ref} does not answer: {error.message}") from None
            time.sleep(0.5)


def _psql(
    container: str, statements: str, deadline: Deadline, socket: str | None = None, database: str = "postgres"
) -> str:
    """psql in the container as its postgres user over its local socket; the statements go on
    stdin (a password is never on a command line). Returns the unaligned output."""
    argv = ["docker", "exec", "-i", "-u", "postgres", container, "psql", "-X", "-A", "-t", "-q"]
    argv += ["-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", database, *(["-h", socket] if socket else [])]
    if deadline.expired():
        raise deadline.stopped("psql", started=False)
    try:
        result = subprocess.run(
            argv, input=statements.encode(), capture_output=True, timeout=max(1.0, deadline.remaining())
        )
    except subprocess.TimeoutExpired:
        raise deadline.stopped(f"psql in {container}", started=True) from None
    if result.returncode != 0:
        said = (result.stdout + result.stderr).decode("utf-8", errors="replace")
        raise CommandFailed(f"psql in {container} exited with status {result.returncode}", output_tail=said[-4096:])
    return result.stdout.decode("utf-8", errors="replace")


def _oneoff_name(kind: str, runtime: Runtime) -> str:
    return f"berth-{kind}-{runtime.ref}"


def _scratch_volume(runtime: Runtime) -> str:
    return f"berth-verify-{runtime.ref}"


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _widen_pipe(out) -> None:
    """`out`'s pipe given zstdio.CHUNK bytes, not 64 KB: the agent decompresses the next MB while
    tar empties the last, where they took turns (a 307 MiB tar from SeaweedFS into `tar -x`:
    1.44 s against 1.77 s, medians of 6)."""
    try:
        fcntl.fcntl(out.fileno(), fcntl.F_SETPIPE_SZ, zstdio.CHUNK)
    except OSError:
        pass  # over the user's pipe quota: the default size only costs that overlap
