"""Backups of process-driver runtimes: WAL archiving, base backups, point-in-time restore (in
place, or into a runtime that has no cluster: a clone, or a lost host's project), verify and
prune. See "Backups" in docs/architecture.md. agent.docker_backups subclasses `Backups` for the
docker driver: the jobs, catalog, prune and shared steps stay here, the driver's own are its
overrides (`_state`, `_base_backup`, `_restore`, `_verify`, `_settle_work`, ...).

Under a runtime's `.berth-pg/`:

    backup/            archiving's settings (agent.archiving) and job.json, the latest job
    restore/data       a restore's cluster while it is built; restore/aside the serving data
                       while the restored cluster starts on the project's port
    verify/data        a verify's scratch cluster
    base-copy/         this host's copy of the newest base backup (agent.hostcopy)

Invariants:
- A base backup, restore or verify is a job: the start call checks, takes the runtime's lock
  and answers; the job runs in a thread holding the lock until it ends (so nothing else
  changes the runtime meanwhile), within its deadline, and cancelling its operation kills it.
- A restore never touches the serving data until the restored cluster has recovered, been
  promoted and answered on its private socket. Only then is the serving cluster stopped and
  its data moved aside; if the restored one does not start and answer on the project's port,
  it is stopped and the old data put back and started. After an agent restart, a restore
  found mid-swap is undone the same way (`settle`), so the data folder always holds the old
  data or the fully restored data.
- The repository's credentials reach only the mode-600 files of agent.archiving and the
  archive and restore commands reading them; no message, log line or reply carries them.
"""

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import psycopg
from psycopg import sql

from agent import api, hostcopy, tarcopy, tarstream, zstdio
from agent.archiving import (
    ARCHIVE_FILE,
    REPOSITORY_FILE,
    NoWalPython,
    archive_timeout,
    archiving_on,
    backup_dir,
    conf_quote,
    wal_command,
    wal_runner,
)
from agent.commands import Deadline, RunAs, child_env, run_checked
from agent.drivers.process import ClusterPaths, PostgresSettings, ProcessDriver, server_conf, started, stopped
from agent.errors import ApiError, CommandFailed, Invalid, RepositoryError, Unsupported
from agent.repository import (
    PUSHED,
    FolderStore,
    RepositoryUnavailable,
    Spec,
    Store,
    WalFile,
    download,
    open_store,
    wal_files,
    wal_key,
)
from agent.runtimes import Runtime, Runtimes, check_ref

log = logging.getLogger("agent.backups")

JOB_FILE = "job.json"
RESTORE, VERIFY = "restore", "verify"
REMOTE_LIST = "remote.txt"  # in the WAL spool: segments archived but not fetched ahead
DISCARDED = "discarded-"  # data a restore replaced, being removed
CONNECT_TIMEOUT_S = 5
# What a restore's detail says of where its base backup came from (agent.hostcopy).
FROM_COPY = " (this host's copy)"
COPY_FAILED = " (this host's copy failed: the repository's)"
POLL_S = 0.05  # a local socket or process: cheap to ask often
WAL_FETCHERS = 8  # parallel WAL downloads before recovery starts
STATUS_DEADLINE_S = 10.0
SOCKET_PARENT = "/tmp"  # a socket path may have 107 bytes: the runtime folder may be deeper
_LABEL_START = re.compile(
    rb"START WAL LOCATION: [0-9A-F]+/[0-9A-F]+ \(file ([0-9A-F]{24})\).*?START TIMELINE: (\d+)", re.S
)
_LAST_COMMIT = re.compile(r"last completed transaction was at log time (\S+ \S+)")
_NEW_TIMELINE = re.compile(r"selected new timeline ID: (\d+)")
_TARGET_NOT_REACHED = "recovery ended before configured recovery target was reached"
_RESTORED = re.compile(r'restored log file "([0-9A-F]{24})" from archive')
# pg_basebackup's arguments after the connection's: a tar of the cluster to stdout, no WAL (the
# archive has it: the server waits until the backup's last segment is archived).
BASEBACKUP_ARGS = ("-D", "-", "-F", "t", "-X", "none", "-c", "fast", "-v", "--no-manifest")
_ARCHIVE_FAILURE = re.compile(r"(berth-wal .*|.*archive command failed.*|.*archiving write-ahead log file.*failed.*)")


class RestoreFailed(CommandFailed):
    """A restore could not be completed; whatever served before serves again."""

    code = "restore_failed"


def spec_of(repository: api.Repository) -> Spec:
    return Spec(
        repository.url,
        repository.endpoint,
        repository.region,
        repository.access_key_id,
        repository.secret_access_key,
    )


class Job:
    """job.json: the runtime's latest job, as the BackupJob reply's fields."""

    def __init__(self, path: Path, fields: dict):
        self.path, self.fields = path, fields

    @classmethod
    def load(cls, path: Path) -> "Job | None":
        try:
            return cls(path, json.loads(path.read_text()))
        except FileNotFoundError:
            return None

    def update(self, **fields) -> None:
        self.fields.update(fields)
        partial = self.path.with_name(f".{self.path.name}.partial")
        partial.write_text(json.dumps(self.fields))
        os.replace(partial, self.path)

    def fail(self, code: str, message: str, output_tail: str | None = None) -> None:
        error = {"code": code, "message": message, **({"output_tail": output_tail} if output_tail else {})}
        self.update(state="failed", error=error, finished_unix=time.time())

    def reply(self) -> api.BackupJob:
        return msgspec.convert(self.fields, api.BackupJob)


class Backups:
    def __init__(self, runtimes: Runtimes):
        self.runtimes = runtimes
        self._live: set[str] = set()  # refs whose job runs in this process
        self._live_lock = threading.Lock()

    # -- archiving ------------------------------------------------------------------------

    def configure_archiving(self, ref: str, body: api.ArchivingRequest, deadline: Deadline) -> api.ArchiverStatus:
        driver = self._driver()
        runtime = self.runtimes.existing(ref)
        PostgresSettings.from_manifest(runtime.manifest())  # a runtime.toml it cannot run is refused first
        paths = ClusterPaths.of(runtime.folder)
        with self.runtimes.hold(ref, deadline, body.operation):
            driver.ensure_state_dir(paths)
            folder = backup_dir(paths.state)
            folder.mkdir(mode=0o700, exist_ok=True)
            self._own(folder)
            was_on = archiving_on(paths.state)
            if body.repository is not None:
                spec = spec_of(body.repository)
                self._prepare_store(spec, ref)
                try:
                    wal_runner(driver.run_as)
                except NoWalPython as exc:
                    raise Invalid(f"cannot archive WAL on this host: {exc}") from None
                spec.save(folder / REPOSITORY_FILE, ref, *self._ids())
                shutil.rmtree(folder / PUSHED, ignore_errors=True)  # markers of the repository before
                self._write_owned(folder / ARCHIVE_FILE, json.dumps({"archive_timeout_s": body.archive_timeout_s}))
            else:
                (folder / REPOSITORY_FILE).unlink(missing_ok=True)
                (folder / ARCHIVE_FILE).unlink(missing_ok=True)
            restarted = False
            if paths.initialised_major() is not None and driver.status(runtime, deadline)[0] == "running":
                if was_on != archiving_on(paths.state):
                    driver.down(runtime, deadline)  # archive_mode takes a restart
                    driver.up(runtime, deadline)
                    restarted = True
                else:
                    driver.reload(runtime, deadline)
        status = self._archiver(runtime)
        return msgspec.structs.replace(status, restarted=restarted)

    def archiver_status(self, ref: str) -> api.ArchiverStatus:
        runtime = self.runtimes.existing(ref)
        self._check_runtime(runtime)
        return self._archiver(runtime)

    def _archiver(self, runtime: Runtime) -> api.ArchiverStatus:
        settings = PostgresSettings.from_manifest(runtime.manifest())
        paths = ClusterPaths.of(runtime.folder)
        if not archiving_on(paths.state):
            return api.ArchiverStatus(enabled=False)
        spec, _ = Spec.load(backup_dir(paths.state) / REPOSITORY_FILE)
        base = {"enabled": True, "url": spec.url, "archive_timeout_s": archive_timeout(paths.state)}
        try:
            with self._connect(settings) as conn:
                row = conn.execute(
                    "select archived_count, last_archived_wal, extract(epoch from last_archived_time)::float8, "
                    "failed_count, last_failed_wal, extract(epoch from last_failed_time)::float8 "
                    "from pg_stat_archiver"
                ).fetchone()
        except psycopg.Error:
            return api.ArchiverStatus(**base)
        archived, last_wal, last_at, failed, failed_wal, failed_at = row
        failing = failed_at is not None and (last_at is None or failed_at > last_at)
        return api.ArchiverStatus(
            **base,
            running=True,
            archived_count=archived,
            last_archived_wal=last_wal,
            last_archived_unix=last_at,
            failed_count=failed,
            last_failed_wal=failed_wal,
            last_failed_unix=failed_at,
            last_failure=_archive_failure(_log_tail(paths.log)) if failing else None,
        )

    # -- jobs -----------------------------------------------------------------------------

    def job(self, ref: str) -> api.BackupJob:
        runtime = self.runtimes.get(ref)
        job = Job.load(self._job_path(runtime))
        if job is None:
            return api.BackupJob(kind="none", state="none")
        if job.fields.get("state") == "running" and not self._runs(ref):
            try:
                with self.runtimes.hold(ref, Deadline(STATUS_DEADLINE_S)):
                    self._settle(runtime)
            except ApiError as error:  # another command holds it, or settling failed: the next call settles
                if error.code != "busy":
                    log.warning("settling the job of %s failed: %s %s", ref, error.message, error.output_tail or "")
            job = Job.load(self._job_path(runtime))
        return job.reply()

    def start_base_backup(self, ref: str, body: api.BaseBackupRequest) -> api.BackupJob:
        runtime = self.runtimes.existing(ref)
        self._check_runtime(runtime)
        if not archiving_on(self._state(runtime)):
            raise Invalid(
                f"runtime {ref} does not archive its WAL: turn archiving on first "
                "(a base backup alone restores nothing)"
            )
        spec = spec_of(body.repository)
        store = self._prepare_store(spec, ref)

        def work(job: Job, deadline: Deadline) -> None:
            if self.runtimes.driver.status(runtime, deadline)[0] != "running":
                raise Invalid(f"runtime {ref} is not running; a base backup is taken from the running server")
            info = self._base_backup(runtime, spec, store, job, deadline)
            job.update(backup=msgspec.to_builtins(info))

        return self._start(runtime, "base_backup", body.operation, body.deadline_s, work)

    def start_restore(self, ref: str, body: api.RestoreRequest) -> api.BackupJob:
        runtime = self.runtimes.existing(ref)
        self._check_runtime(runtime)
        source = check_ref(body.source_ref or ref)
        store = open_store(spec_of(body.repository), source)
        catalog = self._catalog(store, source)
        backup = _choose_backup(catalog, body.target_unix)
        self._check_restorable(runtime, source, backup)

        def work(job: Job, deadline: Deadline) -> None:
            self._restore(runtime, spec_of(body.repository), source, backup, body.target_unix, job, deadline)

        return self._start(runtime, "restore", body.operation, body.deadline_s, work)

    def _check_restorable(self, runtime: Runtime, source: str, backup: api.BackupInfo) -> None:
        ref = runtime.ref
        settings = PostgresSettings.from_manifest(runtime.manifest())
        if backup.major != settings.major:
            raise Invalid(
                f"the backups of {source} are of PostgreSQL {backup.major}; "
                f"runtime.toml of {ref} asks for {settings.major}"
            )
        paths = ClusterPaths.of(runtime.folder)
        if any((paths.state / name).exists() for name in ("next", "previous")):
            raise Invalid(f"runtime {ref} has a major upgrade under way or kept; finish it first")

    def start_verify(self, ref: str, body: api.VerifyRequest) -> api.BackupJob:
        runtime = self.runtimes.existing(ref)
        self._check_runtime(runtime)
        source = check_ref(body.source_ref or ref)
        store = open_store(spec_of(body.repository), source)
        backup = _choose_backup(self._catalog(store, source), None)

        def work(job: Job, deadline: Deadline) -> None:
            self._verify(runtime, spec_of(body.repository), source, backup, job, deadline)

        return self._start(runtime, "verify", body.operation, body.deadline_s, work)

    def _start(
        self,
        runtime: Runtime,
        kind: str,
        operation: str | None,
        job_s: float | None,
        work: Callable[[Job, Deadline], None],
    ) -> api.BackupJob:
        deadline = self.runtimes.deadline(job_s, longest_s=api.BACKUP_JOB_MAX_S)
        hold = self.runtimes.hold(runtime.ref, deadline, operation)
        hold.__enter__()  # busy or cancelled: raised here, to the caller
        try:
            self._settle(runtime)
            self._remove_discarded(runtime)
            folder = backup_dir(self._state(runtime))
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fields = {"kind": kind, "state": "running", "started_unix": time.time(), "phase": "starting"}
            job = Job(folder / JOB_FILE, {**fields, **({"operation": operation} if operation else {})})
            job.update()
            with self._live_lock:
                self._live.add(runtime.ref)
        except BaseException:
            hold.__exit__(None, None, None)
            raise
        threading.Thread(
            target=self._run, args=(runtime.ref, job, work, deadline, hold), name=f"{kind}-{runtime.ref}", daemon=True
        ).start()
        return job.reply()

    def _run(self, ref: str, job: Job, work, deadline: Deadline, hold) -> None:
        try:
            work(job, deadline)
            job.update(state="succeeded", phase="done", finished_unix=time.time())
        except ApiError as error:
            job.fail(error.code, error.message, error.output_tail)
        except RepositoryUnavailable as error:
            job.fail("repository", str(error))
        except Exception as error:
            log.exception("%s job of %s failed", job.fields.get("kind"), ref)
            job.fail("internal", f"{type(error).__name__}: {error}")
        finally:
            with self._live_lock:
                self._live.discard(ref)
            hold.__exit__(None, None, None)

    def _runs(self, ref: str) -> bool:
        with self._live_lock:
            return ref in self._live

    def _settle(self, runtime: Runtime) -> None:
        """A job left running by an agent that stopped: undo a half-done restore, say it was interrupted."""
        job = Job.load(self._job_path(runtime))
        if job is None or job.fields.get("state") != "running" or self._runs(runtime.ref):
            return
        job.fail("interrupted", self._settle_work(runtime, job.fields.get("kind")))

    def _settle_work(self, runtime: Runtime, kind: str | None) -> str:
        """Undo what a job left (a swap under way, scratch clusters); says what was done. A
        restore stopped the serving cluster when it began: its data serves again."""
        paths = ClusterPaths.of(runtime.folder)
        work = paths.state / RESTORE
        aside = work / "aside"
        detail = "the agent stopped during the job"
        if aside.is_dir():
            self._put_back(runtime, aside, had_data=True)
            detail += "; the data it was restoring over was put back and started"
        elif kind == "restore" and paths.initialised_major() is not None:
            self._driver().up(runtime, Deadline(120))
            detail += "; the data it was restoring over was started again"
        for scratch in (work, paths.state / VERIFY):
            self._stop_any(scratch / "data", Deadline(60))
            shutil.rmtree(scratch, ignore_errors=True)
        return detail

    def _remove_discarded(self, runtime: Runtime) -> None:
        for leftover in self._state(runtime).glob(f"{DISCARDED}*"):
            _remove_in_background(leftover)

    def _job_path(self, runtime: Runtime) -> Path:
        return backup_dir(self._state(runtime)) / JOB_FILE

    def _state(self, runtime: Runtime) -> Path:
        """The runtime's folder for backup settings, jobs and scratch data."""
        return ClusterPaths.of(runtime.folder).state

    def _copies(self, runtime: Runtime) -> Path:
        return hostcopy.folder_of(self._state(runtime))

    def _host_copy(self, spec: Spec, source: str, backup: api.BackupInfo) -> Path | None:
        """This host's copy of `backup` (agent.hostcopy), if the runtime `source` lives here
        and kept that one; a restore elsewhere reads the repository."""
        try:
            runtime = self.runtimes.get(source)
        except ApiError:
            return None
        return hostcopy.find(self._copies(runtime), spec, source, backup.id, backup.bytes, backup.system_identifier)

    def _check_runtime(self, runtime: Runtime) -> None:
        self._driver()

    # -- base backup ----------------------------------------------------------------------

    def _base_backup(self, runtime: Runtime, spec: Spec, store: Store, job: Job, deadline: Deadline) -> api.BackupInfo:
        settings = PostgresSettings.from_manifest(runtime.manifest())
        paths = ClusterPaths.of(runtime.folder)
        self._allow_replication(runtime, paths, deadline)
        tool = self._client_tool("pg_basebackup", settings.major)
        argv = [str(tool), *("-h", self._address(), "-p", str(settings.port), "-U", settings.user), *BASEBACKUP_ARGS]
        password = {"PGPASSWORD": settings.password}
        return self._take_base_backup(runtime, argv, password, settings.major, spec, store, job, deadline)

    def _take_base_backup(
        self,
        runtime: Runtime,
        argv: list[str],
        env: dict,
        major: int,
        spec: Spec,
        store: Store,
        job: Job,
        deadline: Deadline,
    ) -> api.BackupInfo:
        """A base backup into `store` (_stream_base_backup), its files also kept on this host
        (agent.hostcopy), once the backup is stored whole: beside an S3 repository, and beside
        a folder one too (an NFS mount, say), whose tar a restore would write out again."""
        started = time.time()
        backup_id = datetime.fromtimestamp(started, UTC).strftime("%Y%m%dT%H%M%SZ")
        with hostcopy.Writer(self._copies(runtime), backup_id, self._run_as(), deadline) as copying:
            info = self._stream_base_backup(
                runtime, argv, env, major, store, job, deadline, started, backup_id, copying
            )
            kept = copying.keep(spec, runtime.ref, info.bytes, info.system_identifier)
        job.update(detail=f"{job.fields['detail']}; {kept}")  # after the stream's own
        return info

    def _stream_base_backup(
        self,
        runtime: Runtime,
        argv: list[str],
        env: dict,
        major: int,
        store: Store,
        job: Job,
        deadline: Deadline,
        started: float,
        backup_id: str,
        copying: hostcopy.Writer,
    ) -> api.BackupInfo:
        """pg_basebackup's tar (argv writes it to stdout) streamed into base/<id>/base.tar (into
        S3: compressed, base.tar.zst, see _compresses), read through `copying`, then its
        backup.json."""
        compress = _compresses(store)
        key = f"base/{backup_id}/base.tar" + (zstdio.SUFFIX if compress else "")
        job.update(phase="copying", detail=f"base backup {backup_id}")
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
                env={**child_env(), **env},
                start_new_session=True,
            )
            failing: list[bool] = []

            def archiving_stuck() -> str | None:
                """Why the backup can never end: its data is sent and it waits for its last WAL
                segment to be archived, while archiving has failed at two checks in a row."""
                if b"waiting for required WAL segments" not in os.pread(errors.fileno(), 1 << 20, 0):
                    return None
                status = self._archiver(runtime)
                failed_at, archived_at = status.last_failed_unix or 0.0, status.last_archived_unix or 0.0
                failing.append(failed_at > started and failed_at > archived_at)
                if failing[-2:] != [True, True]:
                    return None
                return status.last_failure or f"{status.last_failed_wal} could not be archived"

            watchdog = _Watchdog(process, deadline, check=archiving_stuck)
            stream = _LabelReader(process.stdout)
            source = copying.tee(stream)
            try:
                stored = store.put(key, zstdio.Compressing(source) if compress else source)
                process.wait()
            finally:
                watchdog.stop()
                if process.poll() is None:
                    os.killpg(process.pid, 9)
                    process.wait()
            errors.seek(0)
            said = errors.read().decode("utf-8", errors="replace")
        if watchdog.fired or watchdog.stopped_because or process.returncode != 0:
            self._abandon_backup(runtime)
            store.delete([key])
            if watchdog.stopped_because:
                raise CommandFailed(
                    f"WAL archiving fails, so the base backup could never end: {watchdog.stopped_because}",
                    output_tail=said[-4096:],
                )
            if "waiting for required WAL segments" in said:
                failure = self._archiver(runtime).last_failure
                said += f"\narchiving: {failure or 'slow, not failing'}"
            if watchdog.fired:
                raise deadline.stopped("pg_basebackup", started=True, output_tail=said[-4096:])
            raise CommandFailed(f"pg_basebackup exited with status {process.returncode}", output_tail=said[-4096:])
        start = _LABEL_START.search(stream.head)
        if not start:
            raise CommandFailed("the base backup has no backup_label", output_tail=said[-4096:])
        # pg_basebackup returned once the server had archived the backup's last segment (it
        # waits for that with -X none), so the last archived segment is at or past the backup's end.
        stop_wal = self._archiver(runtime).last_archived_wal
        system_id = self._system_identifier(runtime)
        info = api.BackupInfo(
            id=backup_id,
            started_unix=started,
            finished_unix=time.time(),
            bytes=stream.count,
            major=major,
            timeline=int(start.group(2)),
            start_wal=start.group(1).decode(),
            stop_wal=stop_wal or start.group(1).decode(),
            system_identifier=system_id,
            stored=key.rsplit("/", 1)[1],
        )
        store.put(f"base/{backup_id}/backup.json", _Bytes(msgspec.json.encode(info)))
        job.update(detail=f"base backup {backup_id}: {stream.count} bytes of tar, {stored} stored")
        return info

    def _system_identifier(self, runtime: Runtime) -> str:
        """The serving cluster's system identifier (its WAL's folder: agent.repository.wal_key)."""
        with self._connect(PostgresSettings.from_manifest(runtime.manifest())) as conn:
            return conn.execute("select system_identifier::text from pg_control_system()").fetchone()[0]

    def _abandon_backup(self, runtime: Runtime) -> None:
        """After pg_basebackup was killed or failed: nothing of it may go on running (a local
        process dies with its group)."""

    def _allow_replication(self, runtime: Runtime, paths: ClusterPaths, deadline: Deadline) -> None:
        """pg_basebackup connects for replication: clusters made before the driver's pg_hba.conf
        allowed it from loopback get the lines now (and a reload)."""
        hba = paths.data / "pg_hba.conf"
        text = hba.read_text()
        if "host replication all 127.0.0.1/32" in text:
            return
        hba.write_text(
            text + "host replication all 127.0.0.1/32 scram-sha-256\nhost replication all ::1/128 scram-sha-256\n"
        )
        self._driver().reload(runtime, deadline)

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
        driver = self._driver()
        settings = PostgresSettings.from_manifest(runtime.manifest())
        paths = ClusterPaths.of(runtime.folder)
        driver.ensure_state_dir(paths)
        work = paths.state / RESTORE
        login = (settings.user, settings.password)
        aside = work / "aside"
        had_data = paths.data.exists()
        # The serving cluster stops as the restore begins, on a thread of its own while the
        # base backup is extracted; the WAL is listed once it has stopped. A commit made while
        # the restore ran would be discarded by the swap: refused instead of acknowledged and
        # lost. And a fast stop archives the last segment first, so a restore to the latest
        # point keeps every commit acknowledged before it. Its data stays as it is until the
        # swap: a restore that fails starts it again (_put_back), as does an agent restart
        # (_settle_work).
        with ThreadPoolExecutor(1) as stopper:
            stopping = stopper.submit(driver.down, runtime, deadline) if had_data else None
            try:
                copy = self._host_copy(spec, source, backup)
                restored = self._recover(
                    work, spec, source, backup, target, settings.port, login, job, deadline, stopping, copy=copy
                )
            except BaseException:
                # The serving data was not touched: the scratch cluster goes, the old one starts.
                self._stop_any(work / "data", Deadline(60))
                shutil.rmtree(work, ignore_errors=True)
                if stopping is not None:
                    wait([stopping])
                    self._put_back(runtime, aside, had_data)
                raise
        job.update(restored_to_unix=restored.last_commit, timeline=restored.timeline)
        # The restored cluster has answered on its private socket; now, and only now, swap.
        job.update(phase="swapping")
        try:
            if had_data:
                paths.data.rename(aside)
            _durable(restored.syncing, deadline)
            (work / "data").rename(paths.data)
            driver.up(runtime, deadline)
            with self._connect(settings) as conn:
                conn.execute("select 1")
        except (ApiError, psycopg.Error, OSError) as error:
            job.update(phase="putting back")
            _let_go(restored.syncing)  # stopping the serving cluster failed before it was awaited
            self._put_back(runtime, aside, had_data)
            _discard(work, paths.state)  # the restored data, which did not serve
            raise _put_back_error(error) from None
        _discard(work, paths.state)  # the old data, aside
        job.update(detail=_restored_detail(restored, backup))

    def _put_back(self, runtime: Runtime, aside: Path, had_data: bool) -> None:
        """Undo a swap wherever it stopped: the old data back in place and serving."""
        paths = ClusterPaths.of(runtime.folder)
        if aside.is_dir():
            self._stop_any(paths.data, Deadline(60))
            shutil.rmtree(paths.data, ignore_errors=True)
            aside.rename(paths.data)
        elif not had_data:
            self._stop_any(paths.data, Deadline(60))
            shutil.rmtree(paths.data, ignore_errors=True)
        if had_data:
            self._driver().up(runtime, Deadline(120))

    def _verify(
        self, runtime: Runtime, spec: Spec, source: str, backup: api.BackupInfo, job: Job, deadline: Deadline
    ) -> None:
        paths = ClusterPaths.of(runtime.folder)
        work = paths.state / VERIFY
        port = 5432  # on its private socket alone
        try:
            restored = self._recover(work, spec, source, backup, None, port, None, job, deadline, keep_running=True)
            job.update(phase="checking")
            databases = 0
            with self._connect_socket(restored.socket_dir, port) as conn:
                names = [name for (name,) in conn.execute("select datname from pg_database where datallowconn")]
            for name in names:
                with self._connect_socket(restored.socket_dir, port, name) as conn:
                    conn.execute("select count(*) from pg_class").fetchone()
                    databases += 1
            job.update(
                restored_to_unix=restored.last_commit,
                databases=databases,
                detail=f"{databases} databases answered; {_restored_detail(restored, backup)}",
            )
        finally:
            self._stop_any(work / "data", Deadline(60))
            shutil.rmtree(work, ignore_errors=True)

    def _recover(
        self,
        work: Path,
        spec: Spec,
        source: str,
        backup: api.BackupInfo,
        target: float | None,
        port: int,
        login: tuple[str, str] | None,
        job: Job,
        deadline: Deadline,
        list_wal_after: Future | None = None,
        keep_running: bool = False,
        copy: Path | None = None,
    ) -> "Recovered":
        """The backup restored into work/data and recovered to `target` (None: the end of the
        archive) and promoted; `login` (user, password): runtime.toml's superuser, whose password
        it is given. `list_wal_after`: the WAL is listed once it is done (a restore in place:
        the serving cluster's last segment archived), and its error raised. Stopped after,
        unless keep_running. `copy`: this host's copy of the backup (agent.hostcopy), taken or
        copied instead of the repository's tar (_extract_copy)."""
        driver = self._driver()
        bindir = driver.bindir(backup.major)
        self._stop_any(work / "data", Deadline(60))
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o700)
        self._own(work)
        data, spool = work / "data", work / "wal"
        for folder in (data, spool):
            folder.mkdir(mode=0o700)
            self._own(folder)
        store = open_store(spec, source)
        whence = FROM_COPY if copy is not None else ""
        job.update(phase="fetching", detail=f"base backup {backup.id}{whence} and WAL of {source}")
        # The WAL is fetched while the base backup is extracted: the two wait on different
        # things (many small GETs; one stream into tar), and recovery needs both.
        stop_fetching = threading.Event()
        with ThreadPoolExecutor(1) as wal_fetcher:
            fetched = wal_fetcher.submit(
                self._prefetch_wal, store, backup, target, spool, deadline, stop_fetching, list_wal_after
            )
            try:
                from_copy = copy is not None and self._extract_copy(copy, data, deadline)
                if copy is not None and not from_copy:
                    whence = COPY_FAILED
                    job.update(detail=f"base backup {backup.id}{whence} and WAL of {source}")
                if not from_copy:
                    self._extract(store, _base_key(store, backup), backup.bytes, data, deadline)
            except BaseException:
                stop_fetching.set()
                raise
            # Recovery runs with fsync off (no file-by-file sync of the data folder at its
            # start, none at its checkpoints); the extracted files go to disk meanwhile, and
            # the folder is synced whole once recovery has stopped, before it can serve
            # (Recovered.syncing, _durable).
            flushing = None if keep_running else subprocess.Popen(["sync", "-f", str(data)], start_new_session=True)
            try:
                newest = fetched.result()
            except BaseException:
                _let_go(flushing)
                raise
        spec_file = work / REPOSITORY_FILE
        spec.save(spec_file, source, *self._ids())
        socket_dir = Path(tempfile.mkdtemp(prefix="berth-rs-", dir=SOCKET_PARENT))
        self._own(socket_dir)
        try:
            restore_command = (
                f"test -f {spool}/%f && cp {spool}/%f %p || "
                f"{{ grep -qxF %f {spool}/{REMOTE_LIST} && "
                + wal_command("fetch", spec_file, backup.system_identifier, driver.run_as)
                + " %f %p; }"
            )
            (data / "recovery.signal").touch()
            self._own(data / "recovery.signal")
            log_file = work / "postgres.log"
            job.update(phase="recovering")
            self._write_recovery_conf(data, port, socket_dir, restore_command, target)
            self._local_trust(data)
            to_end = target is None
            if self._run_recovery(bindir, data, log_file, socket_dir, port, target, deadline) is None:
                # No commit past the target in the archive: if recovery reaches the archive's
                # end, every archived commit is at or before the target and that end is the answer.
                to_end = True
                self._write_recovery_conf(data, port, socket_dir, restore_command, None)
                self._run_recovery(bindir, data, log_file, socket_dir, port, None, deadline)
            if to_end:
                _check_reached(log_file, newest)
            with self._connect_socket(socket_dir, port) as conn:
                if login is not None:
                    conn.execute(
                        sql.SQL("alter role {} password {}").format(sql.Identifier(login[0]), sql.Literal(login[1]))
                    )
            said = log_file.read_text(errors="replace")
            commit = _LAST_COMMIT.findall(said)
            timeline = _NEW_TIMELINE.findall(said)
            result = Recovered(
                last_commit=datetime.fromisoformat(commit[-1]).timestamp() if commit else None,
                timeline=int(timeline[-1]) if timeline else None,
                socket_dir=socket_dir,
                whence=whence,
            )
            if not keep_running:
                self._stop(bindir, data, deadline)
                self._finish_conf(data)
                # One syncfs covers the extracted files and what recovery wrote with fsync off.
                result.syncing = subprocess.Popen(["sync", "-f", str(data)], start_new_session=True)
            return result
        finally:
            _let_go(flushing)  # the final sync covers what it flushes
            if not keep_running:
                shutil.rmtree(socket_dir, ignore_errors=True)
            spec_file.unlink(missing_ok=True)

    def _run_recovery(
        self,
        bindir: Path,
        data: Path,
        log_file: Path,
        socket_dir: Path,
        port: int,
        target: float | None,
        deadline: Deadline,
    ) -> bool | None:
        """Start the cluster and wait for its recovery to end and promote; None when it stopped
        because the archive ended before a commit past the target."""
        offset = log_file.stat().st_size if log_file.exists() else 0
        seconds = str(max(1, int(deadline.remaining())))
        start = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log_file), "-w", "-t", seconds, "start"]
        try:
            run_checked(start, deadline, cwd=data.parent, run_as=self._driver().run_as, settled=started(data))
        except CommandFailed as failure:
            said = _log_since(log_file, offset)
            if target is not None and _TARGET_NOT_REACHED in said:
                return None
            raise RestoreFailed(
                f"the restored cluster did not start: {_problems(said) or failure.message}", output_tail=said[-4096:]
            ) from None
        while True:
            try:
                with self._connect_socket(socket_dir, port) as conn:
                    if not conn.execute("select pg_is_in_recovery()").fetchone()[0]:
                        return True
            except psycopg.OperationalError:
                said = _log_since(log_file, offset)
                if not (data / "postmaster.pid").exists():
                    if target is not None and _TARGET_NOT_REACHED in said:
                        return None
                    raise RestoreFailed(
                        f"the restored cluster stopped during recovery: {_problems(said)}", output_tail=said[-4096:]
                    ) from None
            if deadline.expired():
                self._stop(bindir, data, Deadline(60))
                raise deadline.stopped("recovery", started=True, output_tail=_log_since(log_file, offset)[-4096:])
            time.sleep(POLL_S)

    def _write_recovery_conf(
        self, data: Path, port: int, socket_dir: Path, restore_command: str, target: float | None
    ) -> None:
        conf = server_conf(port, (), socket_dir=socket_dir) + (
            # Archiving on with no command: the new timeline's history file and segments are
            # kept, marked ready, and archived only once the cluster serves the project (its
            # berth.conf then names the command). A restore that is undone archives nothing,
            # and PostgreSQL's recycled segments, named for the future, are never marked.
            "archive_mode = on\narchive_command = ''\n"
            "fsync = off\n"
            f"restore_command = {conf_quote(restore_command)}\n"
            "recovery_target_timeline = 'latest'\n"
        )
        if target is not None:
            stamp = datetime.fromtimestamp(target, UTC).isoformat(sep=" ")
            conf += f"recovery_target_time = '{stamp}'\nrecovery_target_action = 'promote'\n"
        self._driver().write_owned(data / "berth.conf", conf)

    def _local_trust(self, data: Path) -> None:
        """While it recovers, the cluster listens only on its private socket (a folder of the
        server's user, mode 700): the agent connects there without the source's password."""
        hba = data / "pg_hba.conf"
        kept = data / "pg_hba.conf.berth-kept"
        if not kept.exists():
            hba.rename(kept)
        self._driver().write_owned(hba, "local all all trust\n", mode=0o600)

    def _finish_conf(self, data: Path) -> None:
        """Back to the project's pg_hba.conf; the driver rewrites berth.conf when it starts it."""
        (data / "pg_hba.conf.berth-kept").replace(data / "pg_hba.conf")
        self._driver().write_owned(data / "berth.conf", "")

    def _extract_copy(self, copy: Path, data: Path, deadline: Deadline) -> bool:
        """The host's copy of the base backup into `data` (work/data, in the restored runtime's
        state folder): taken, moved into place, when it lies in that same state folder (a
        restore in place); copied when it is another runtime's (a clone on this host: its
        source keeps it). One that fails is forgotten and `data` emptied again: False, and the
        restore reads the repository instead; its deadline's end is raised."""
        try:
            if copy.parent.parent == data.parent.parent:
                hostcopy.take(copy, data)
            else:
                run_checked(["cp", "-a", "--", f"{copy}/.", str(data)], deadline)
            return True
        except (CommandFailed, OSError) as error:
            if deadline.expired():
                raise
            hostcopy.forget(copy, error)
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(mode=0o700)
        self._own(data)
        return False

    def _extract(self, store: Store, key: str, tar_bytes: int, data: Path, deadline: Deadline) -> None:
        """The base backup extracted into `data`, owned by the server's user: a folder's tar by
        the kernel's copy (agent.tarcopy), an object's by the agent as it arrives (agent.tarstream:
        fetched, decompressed and written on different threads, _write_base)."""
        run_as = self._driver().run_as
        if isinstance(store, FolderStore):
            local = store.root / key
            if not local.is_file():
                raise RepositoryUnavailable(f"the repository has no {key}")
            tarcopy.extract(local, data, run_as, deadline)
            return
        try:
            tarstream.extract(lambda out: _write_base(store, key, tar_bytes, out, deadline), data, run_as, deadline)
        except FileNotFoundError:
            raise RepositoryUnavailable(f"the repository has no {key}") from None
        except zstdio.Damaged as error:
            raise _damaged(key, error) from None

    def _prefetch_wal(
        self,
        store: Store,
        backup: api.BackupInfo,
        target: float | None,
        spool: Path,
        deadline: Deadline,
        stop: threading.Event | None = None,
        list_wal_after: Future | None = None,
    ) -> str:
        """Every archived segment from the backup's start (up to a little past the target), in
        parallel, so recovery copies them locally instead of fetching one process at a time;
        anything missed the restore command fetches itself. Returns the newest archived segment
        of the latest timeline. `stop` set: the restore failed elsewhere, fetch no more.
        `list_wal_after`: listed once it is done (its error raised)."""
        if list_wal_after is not None:
            list_wal_after.result()
        slack = 600.0
        wanted: dict[str, WalFile] = {}
        later, newest = [], backup.start_wal
        folder = wal_key(backup.system_identifier, "")
        # One download per name: a segment archived again after Berth compressed WAL is stored
        # both ways, and two downloads of it would share the spool's partial file.
        for file in sorted(wal_files(store.scan(folder)), key=lambda file: file.compressed):
            name = file.name
            if name.endswith(".history"):
                wanted[name] = file
            elif file.is_segment and name[8:] >= backup.start_wal[8:] and name[:8] >= backup.start_wal[:8]:
                # Recovery follows the latest timeline; an older one's later segments are a
                # future a restore abandoned.
                newest = max(newest, name, key=lambda segment: (segment[:8], segment[8:]))
                if target is None or file.item.modified_unix <= target + slack:
                    wanted[name] = file
                else:
                    later.append(name)
        # What the archive holds beyond the spool: the restore command fetches only these, so
        # recovery's probes for files that do not exist (the next timeline's history) cost a
        # `grep`, not an interpreter's start.
        (spool / REMOTE_LIST).write_text("".join(f"{name}\n" for name in later))
        run_as = self._run_as()

        def fetch(file: WalFile) -> None:
            if deadline.expired() or (stop is not None and stop.is_set()):
                return
            path = spool / file.name
            download(store, file.item.key, path)
            if run_as:
                os.chown(path, run_as.uid, run_as.gid)

        with ThreadPoolExecutor(WAL_FETCHERS) as pool:
            list(pool.map(fetch, wanted.values()))
        if deadline.expired():
            raise deadline.stopped("fetching WAL", started=True)
        return newest

    def _stop(self, bindir: Path, data: Path, deadline: Deadline) -> None:
        seconds = str(max(1, int(deadline.remaining())))
        stop = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", seconds, "stop"]
        run_checked(stop, deadline, cwd=data.parent, run_as=self._driver().run_as, settled=stopped(data))

    def _stop_any(self, data: Path, deadline: Deadline) -> None:
        """Stop a cluster in `data` if one runs there (a scratch or half-restored one)."""
        if not (data / "postmaster.pid").exists():
            return
        major = ClusterPaths(data.parent, data, data.parent / "postgres.log").initialised_major()
        if major is None:
            return
        try:
            self._stop(self._driver().bindir(major), data, deadline)
        except ApiError as error:
            log.warning("could not stop the cluster in %s: %s", data, error)

    # -- catalog and prune ----------------------------------------------------------------

    def catalog(self, body: api.CatalogRequest, deadline: Deadline) -> api.BackupCatalog:
        del deadline  # each repository request has its own timeout (agent.repository)
        return self._catalog(open_store(spec_of(body.repository), body.stanza), body.stanza)

    def _catalog(self, store: Store, stanza: str) -> api.BackupCatalog:
        try:
            items = store.scan("")
            backups = []
            for item in items:
                if item.key.startswith("base/") and item.key.endswith("/backup.json"):
                    with store.open(item.key) as source:
                        backups.append(msgspec.json.decode(source.read(), type=api.BackupInfo))
        except RepositoryUnavailable as error:
            raise RepositoryError(str(error)) from None
        backups.sort(key=lambda backup: backup.finished_unix)
        segments = [file for file in wal_files(items) if file.is_segment]
        # The window is the current cluster's, the one of the newest backup: an older
        # generation's backups (before a major upgrade) restore no cluster of this major.
        current = backups[-1].system_identifier if backups else None
        mine = [file for file in segments if file.system_id == current]
        last = max(mine, key=lambda file: file.order, default=None)
        latest = max((file.item.modified_unix for file in mine), default=None)
        earliest = next((backup.finished_unix for backup in backups if backup.system_identifier == current), None)
        return api.BackupCatalog(
            stanza=stanza,
            backups=backups,
            earliest_unix=earliest,
            latest_unix=max(latest, backups[-1].finished_unix) if backups and latest else None,
            last_wal=last.name if last else None,
            # A segment re-archived after the switch to compressed keys is stored both ways.
            wal_segments=len({(file.system_id, file.name) for file in segments}),
        )

    def prune(self, body: api.PruneRequest, deadline: Deadline) -> api.PruneReply:
        store = open_store(spec_of(body.repository), body.stanza)
        catalog = self._catalog(store, body.stanza)
        backups = catalog.backups
        keep_from = max(0, len(backups) - body.min_backups)
        removed = [b for index, b in enumerate(backups) if index < keep_from and b.finished_unix < body.keep_since_unix]
        kept = [b for b in backups if b not in removed]
        try:
            items = store.scan("")
            doomed = [item.key for item in items if any(item.key.startswith(f"base/{b.id}/") for b in removed)]
            old = []
            for system_id, files in _by_cluster(wal_files(items)).items():
                own = [backup for backup in kept if backup.system_identifier == system_id]
                if own:
                    # Segments older than the generation's oldest kept backup; history files stay.
                    oldest = min(own, key=lambda b: b.finished_unix).start_wal
                    old += [file.item.key for file in files if file.is_segment and file.name[8:] < oldest[8:]]
                elif body.min_backups == 0 or _superseded(system_id, kept, files):
                    # A removed project's stanza past its retention, or a cluster a major upgrade
                    # replaced whose backups have all expired: nothing restores from its WAL.
                    old += [file.item.key for file in files]
            wal = len(old)
            doomed += old
            if deadline.expired():
                raise deadline.stopped("pruning", started=False)
            # backup.json first: a backup whose tar went first would look complete and fail to restore.
            doomed.sort(key=lambda key: not key.endswith("backup.json"))
            store.delete(doomed)
        except RepositoryUnavailable as error:
            raise RepositoryError(str(error)) from None
        return api.PruneReply(
            removed_backups=[b.id for b in removed], removed_wal=wal, kept_backups=[b.id for b in kept]
        )

    # -- helpers --------------------------------------------------------------------------

    def _driver(self) -> ProcessDriver:
        driver = self.runtimes.driver
        if not isinstance(driver, ProcessDriver):
            raise Unsupported(f"backups are implemented for the process driver; this agent runs {driver.name!r}")
        return driver

    def _prepare_store(self, spec: Spec, stanza: str) -> Store:
        """The stanza's store, reachable (its WAL folder the server's user's, for a folder)."""
        try:
            store = open_store(spec, stanza)
            if isinstance(store, FolderStore):
                if not store.root.parent.is_dir():
                    raise RepositoryUnavailable(f"the repository folder {store.root.parent} does not exist")
                for folder in (store.root, store.root / "wal", store.root / "base"):
                    folder.mkdir(mode=0o755, exist_ok=True)
                self._own(store.root / "wal")
            store.scan("wal/")
        except RepositoryUnavailable as error:
            raise RepositoryError(str(error)) from None
        except OSError as error:
            raise RepositoryError(f"cannot use the repository folder: {error.strerror}") from None
        return store

    def _run_as(self) -> RunAs | None:
        """Who owns the files the server reads (None: the agent's user)."""
        return self._driver().run_as

    def _ids(self) -> tuple[int | None, int | None]:
        run_as = self._run_as()
        return (run_as.uid, run_as.gid) if run_as else (None, None)

    def _own(self, path: Path) -> None:
        uid, gid = self._ids()
        if uid is not None:
            os.chown(path, uid, gid)

    def _write_owned(self, path: Path, text: str) -> None:
        self._driver().write_owned(path, text, mode=0o600)

    def _client_tool(self, name: str, major: int) -> Path:
        tools = {m: path for m, path in self._driver().client_tools().items() if (path / name).exists() and m >= major}
        if not tools:
            raise Invalid(f"no {name} of PostgreSQL {major} or newer is installed here; scripts/postgres installs 18's")
        return tools[max(tools)] / name

    def _address(self) -> str:
        driver = self._driver()
        address = driver.listen_addresses[0] if driver.listen_addresses else "127.0.0.1"
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)

    def _connect(self, settings: PostgresSettings) -> psycopg.Connection:
        return psycopg.connect(
            host=self._address(),
            port=settings.port,
            user=settings.user,
            password=settings.password,
            dbname="postgres",
            connect_timeout=CONNECT_TIMEOUT_S,
            autocommit=True,
            application_name="berth-backup",
        )

    def _connect_socket(self, socket_dir: Path, port: int, dbname: str = "postgres") -> psycopg.Connection:
        # Trust on the private socket: no password. As `postgres`, the superuser every cluster
        # Berth makes has (runtime.toml's user, which defaults to it).
        return psycopg.connect(
            host=str(socket_dir),
            port=port,
            user="postgres",
            dbname=dbname,
            connect_timeout=CONNECT_TIMEOUT_S,
            autocommit=True,
            application_name="berth-restore",
        )


class Recovered:
    def __init__(
        self,
        last_commit: float | None,
        timeline: int | None,
        socket_dir: Path,
        syncing: subprocess.Popen | None = None,
        whence: str = "",
    ):
        self.last_commit, self.timeline, self.socket_dir = last_commit, timeline, socket_dir
        self.whence = whence  # of the base backup: FROM_COPY, COPY_FAILED or "" (agent.hostcopy)
        # The syncfs of the stopped, restored data, running: awaited (`_durable`) before the
        # data is put in place, so it overlaps with stopping the serving cluster.
        self.syncing = syncing


class _Watchdog:
    """Kills a process's group when the deadline passes or is cancelled (`fired`), or when
    `check`, asked every CHECK_S, says why the process can never succeed (`stopped_because`)."""

    CHECK_S = 5.0

    def __init__(self, process: subprocess.Popen, deadline: Deadline, check: Callable[[], str | None] | None = None):
        self.process, self.deadline, self.check = process, deadline, check
        self.fired, self.stopped_because = False, None
        self._done = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        next_check = time.monotonic() + self.CHECK_S
        while not self._done.wait(POLL_S):
            if self.process.poll() is not None:
                return
            if self.deadline.expired():
                self.fired = True
                self._kill()
                return
            if self.check is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + self.CHECK_S
                try:
                    reason = self.check()
                except Exception:  # the deadline must still hold: a check that breaks is only logged
                    log.exception("the check of pid %s failed", self.process.pid)
                    reason = None
                if reason:
                    self.stopped_because = reason
                    self._kill()
                    return

    def _kill(self) -> None:
        try:
            os.killpg(self.process.pid, 9)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        self._done.set()


class _LabelReader:
    """The base backup's stream, keeping its first bytes: the server sends backup_label first,
    and it names the first WAL segment and the timeline the backup needs. Counts the tar's bytes."""

    HEAD_BYTES = 64 * 1024

    def __init__(self, source):
        self.source, self.head, self.count = source, b"", 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.source.read(size)
        self.count += len(chunk)
        if len(self.head) < self.HEAD_BYTES:
            self.head += chunk[: self.HEAD_BYTES - len(self.head)]
        return chunk


class _Bytes:
    def __init__(self, data: bytes):
        self.data, self.offset = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size is None or size < 0 else self.offset + size
        chunk, self.offset = self.data[self.offset : end], min(end, len(self.data))
        return chunk


def _compresses(store: Store) -> bool:
    """Whether base backups into `store` are zstd-compressed: into S3, yes (fewer bytes
    through the object store, which bounded restores by its CPU and the agent's); into a
    folder, no (its restore copies the tar's files in the kernel, which needs them plain)."""
    return not isinstance(store, FolderStore)


def _base_key(store: Store, backup: api.BackupInfo) -> str:
    """The key of the backup's tar: base.tar.zst (compressed, _compresses) or base.tar (a
    folder's, and S3 backups taken before Berth compressed them). Its backup.json names it
    (BackupInfo.stored); one written before that did is told by listing its folder. Only those
    two names are taken from it: a backup.json is no path into the repository."""
    folder = f"base/{backup.id}/"
    keys = (f"{folder}base.tar{zstdio.SUFFIX}", f"{folder}base.tar")
    if backup.stored is not None and folder + backup.stored in keys:
        return folder + backup.stored
    stored = {item.key for item in store.scan(folder)}
    for key in keys:
        if key in stored:
            return key
    raise RepositoryUnavailable(f"the repository has no {folder}base.tar")


def _write_base(store: Store, key: str, tar_bytes: int, out, deadline: Deadline) -> None:
    """The object `key` written to `out` as the tar it holds (decompressed when it ends in
    zstdio.SUFFIX; it must then give `tar_bytes`, its BackupInfo.bytes), read by ranged GETs
    until the deadline (a compressed one is read to its end after the extraction failed)."""
    with store.open_parallel(key) as source:
        blocks = _until(source.ranges(), deadline)
        if key.endswith(zstdio.SUFFIX):
            zstdio.decompress(blocks, out, tar_bytes)
        else:
            for block in blocks:
                out.write(block)


def _until(blocks, deadline: Deadline):
    for block in blocks:
        if deadline.expired():
            raise deadline.stopped("extracting the base backup", started=True)
        yield block


def _damaged(key: str, error: zstdio.Damaged) -> RestoreFailed:
    return RestoreFailed(f"the base backup {key} in the repository is damaged: {error}")


def _by_cluster(files: list[WalFile]) -> dict[str, list[WalFile]]:
    found: dict[str, list[WalFile]] = {}
    for file in files:
        found.setdefault(file.system_id, []).append(file)
    return found


def _superseded(system_id: str, kept: list, files: list[WalFile]) -> bool:
    """A cluster with no kept backup is superseded when a newer cluster has one that began
    after its last archived WAL (a brand-new cluster's WAL before its first backup stays).
    `files`: the cluster's."""
    newest = max((file.item.modified_unix for file in files if file.is_segment), default=0.0)
    return any(backup.system_identifier != system_id and backup.started_unix > newest for backup in kept)


def _choose_backup(catalog: api.BackupCatalog, target: float | None) -> api.BackupInfo:
    if not catalog.backups or catalog.earliest_unix is None or catalog.latest_unix is None:
        raise Invalid(f"{catalog.stanza} has no base backup in the repository: nothing to restore")
    window = f"{_when(catalog.earliest_unix)} to {_when(catalog.latest_unix)}"
    window += f" (unix {catalog.earliest_unix:.0f} to {catalog.latest_unix:.0f})"
    if target is None:
        return catalog.backups[-1]
    # The window ends at the newest segment's stored time, which can lag PostgreSQL's own last
    # archived time (pg_stat_archiver), the one the control plane's window follows between
    # catalog reads: S3 keeps whole seconds, and archive_command returns after the store
    # stamped the object. A past target after the stored end restores every archived commit
    # at or before it (_recover), so only a target before the first backup or in the future is
    # refused here; the control plane refuses one after its own window's end.
    if target < catalog.earliest_unix or target > max(catalog.latest_unix, time.time()):
        raise Invalid(f"{_when(target)} is outside the restorable window of {catalog.stanza}: {window}")
    current = catalog.backups[-1].system_identifier
    return [b for b in catalog.backups if b.finished_unix <= target and b.system_identifier == current][-1]


def _durable(syncing: subprocess.Popen, deadline: Deadline) -> None:
    """The restored data on disk: its `sync -f` (syncfs) ended well within the deadline."""
    try:
        syncing.wait(timeout=max(1.0, deadline.remaining()))
    except subprocess.TimeoutExpired:
        _let_go(syncing)
        raise deadline.stopped("syncing the restored data", started=True) from None
    if syncing.returncode != 0:
        raise CommandFailed(f"sync -f of the restored data exited with status {syncing.returncode}")


def _discard(work: Path, state: Path) -> None:
    """A restore's scratch folder removed in the background: removing gigabytes takes seconds
    the project need not wait for. Renamed first, so the next restore makes its own; one an
    agent restart left behind is removed by the next job (Backups._remove_discarded). Never
    raises: it runs once the restore's outcome is settled (the restored data serves, or the old
    data is back), which a folder left over must not change; the next restore removes it."""
    discarded = state / f"{DISCARDED}{time.time_ns()}"
    try:
        work.rename(discarded)
    except OSError as error:
        log.warning("could not set %s aside for removal, left for the next restore: %s", work, error)
        return
    _remove_in_background(discarded)


def _remove_in_background(folder: Path) -> None:
    threading.Thread(target=shutil.rmtree, args=(folder, True), daemon=True).start()


def _put_back_error(error: Exception) -> ApiError:
    """What a restore whose swap was undone answers: why, and that the old data serves again."""
    message = error.message if isinstance(error, ApiError) else str(error)
    if isinstance(error, ApiError) and error.code in ("cancelled", "timeout"):
        return type(error)(f"{message}; the old data serves again", output_tail=error.output_tail)
    tail = error.output_tail if isinstance(error, ApiError) else None  # the failing command's words
    return RestoreFailed(
        f"the restored cluster did not serve, and the old data serves again: {message}", output_tail=tail
    )


def _let_go(syncing: subprocess.Popen | None) -> None:
    """Done with a `sync -f` that may still run: inside syncfs it cannot die before the kernel
    is done (a kill and wait cost 0.3 s of a 1 GB restore), so nothing waits for it; a
    thread reaps it."""
    if syncing is not None and syncing.poll() is None:
        threading.Thread(target=syncing.wait, daemon=True).start()


def _when(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds")


def _restored_detail(restored: Recovered, backup: api.BackupInfo) -> str:
    to = _when(restored.last_commit) if restored.last_commit else "the backup (no later commit)"
    return f"restored from base backup {backup.id}{restored.whence} to the commit of {to}"


def _check_reached(log_file: Path, newest: str) -> None:
    """Recovery to the archive's end must have replayed its newest segment: stopping before
    it means a segment in between is missing, and the restore would silently lose commits."""
    replayed = _RESTORED.findall(log_file.read_text(errors="replace"))
    last = max(replayed, key=lambda segment: segment[8:], default=None)
    if last is None or last[8:] < newest[8:]:
        raise RestoreFailed(
            f"recovery stopped at {last or 'the base backup'} but the repository has WAL up to {newest}: "
            "a segment in between is missing or unreadable, so the restore would lose commits"
        )


def _log_since(log_file: Path, offset: int) -> str:
    try:
        with open(log_file, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _problems(said: str) -> str:
    lines = [line.split(":  ", 1)[-1] for line in said.splitlines() if re.search(r"\b(FATAL|PANIC|ERROR):", line)]
    return "; ".join(dict.fromkeys(lines))[:1000]


def _log_tail(log_file: Path) -> str:
    try:
        with open(log_file, "rb") as handle:
            handle.seek(max(0, log_file.stat().st_size - 65536))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _archive_failure(text: str) -> str | None:
    """The last words of a failed archive attempt in the server's log (its tail)."""
    lines = [match.group(1).strip() for match in _ARCHIVE_FAILURE.finditer(text)]
    return "; ".join(dict.fromkeys(lines[-3:])) or None
