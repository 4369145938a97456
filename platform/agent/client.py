"""The control plane's typed client for the agent API.

Invariant: every call ends by its overall deadline, whatever the agent does: one that
never answers, one that trickles a byte a second through headers or body, a reply too
large to hold. The exchange runs as one asyncio task under `asyncio.timeout`, so the
deadline cancels it wherever it waits; per-read timeouts alone would restart with every
byte. The event loop is private to the call and closed without waiting for its resolver
thread, so a stuck DNS lookup cannot hold the caller either. Call it from synchronous
code (Django views, django-q tasks), not from inside a running event loop.

Requests and replies are the types of agent.api, encoded and decoded with msgspec: a
reply that does not match its type is an AgentProtocolError naming what is wrong.

Commands carry a deadline the agent enforces (`deadline_s`), and the call allows that
plus a margin for the reply, so a command that times out on the agent is reported as the
agent's timeout, with the command's output tail, rather than as a lost call.
"""

import asyncio
import functools
import re
import ssl
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import httpx
import msgspec

from agent import api
from agent.api import AgentInfo, CancelReply, CommandReply, FileSpec, PortCheck, Probe, ProbeResult, RuntimeStatus
from agent.portcheck import check_ports

DEFAULT_DEADLINE_S = 30.0
REPLY_MARGIN_S = 2.0
MAX_REPLY_BYTES = 4 << 20

ReplyT = TypeVar("ReplyT", bound=api.Reply)


class AgentError(Exception):
    code = "error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, output_tail: str = ""):
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status = status
        self.output_tail = output_tail


class AgentUnreachable(AgentError):
    code = "unreachable"


class AgentTimeout(AgentError):
    """The agent killed a command past its deadline, or the call's own deadline passed."""

    code = "timeout"


class AgentBusy(AgentError):
    code = "busy"


class AgentCancelled(AgentError):
    """The command's operation was cancelled: the agent killed it, or refused to start it."""

    code = "cancelled"


class AgentUnauthorized(AgentError):
    code = "unauthorized"


class AgentProtocolError(AgentError):
    """The reply was malformed or larger than the cap."""

    code = "protocol"


def check_ports_here(ports: Sequence[int]) -> PortCheck:
    """The agent's port check run in this process, for a host that is this machine."""
    return check_ports(list(ports))


_RUNTIME_PATH = re.compile(r"/v1/runtimes/[^/]+")
_ERRORS_BY_STATUS = {401: AgentUnauthorized, 409: AgentBusy, 504: AgentTimeout}


class AgentClient:
    """One agent's API. `deadline` bounds every call, whatever a method's own deadline_s asks.

    With `operation` (the control plane's operation id), lifecycle commands name the operation
    they belong to, so cancelling it on the agent stops them.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        deadline: float = DEFAULT_DEADLINE_S,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        *,
        operation: str | None = None,
        observe: Callable[[str, float, str | None], None] | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        # Told of every call: its route (the ref replaced by {ref}), seconds taken, and the
        # error's class name or None.
        self.observe = observe
        self.deadline = deadline
        self.operation = operation
        self.max_reply_bytes = max_reply_bytes
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def info(self) -> AgentInfo:
        return self._call("GET", "/v1/info", AgentInfo)

    def put_files(
        self,
        ref: str,
        files: Sequence[FileSpec],
        user_paths: Sequence[str] = (),
        remove: Sequence[str] = (),
        private_paths: Sequence[str] = (),
        backup: Sequence[str] = (),
        backup_suffix: str | None = None,
    ) -> dict[str, str]:
        """Write a runtime's files; returns each listed file's sha256 as it now is on the host.

        `private_paths` names every secret-bearing file of the runtime, written now or not:
        the agent keeps those 0600. Files in `backup` that exist are first copied to
        `<path>.<backup_suffix>` beside them.
        """
        request = api.PutFilesRequest(
            list(files), list(user_paths), list(remove), list(private_paths), list(backup), backup_suffix
        )
        return self._call("PUT", f"/v1/runtimes/{ref}/files", api.FilesReply, request=request).digests

    def contents(self, ref: str, paths: Sequence[str]) -> dict[str, bytes | None]:
        """The present content of a runtime's files (None: absent)."""
        request = api.ContentsRequest(list(paths))
        return self._call("POST", f"/v1/runtimes/{ref}/contents", api.ContentsReply, request=request).files

    def digests(self, ref: str, paths: Sequence[str]) -> dict[str, str | None]:
        request = api.DigestsRequest(list(paths))
        return self._call("POST", f"/v1/runtimes/{ref}/digests", api.DigestsReply, request=request).digests

    def up(self, ref: str, deadline_s: float | None = None) -> CommandReply:
        return self._command(ref, "up", deadline_s)

    def down(self, ref: str, deadline_s: float | None = None) -> CommandReply:
        return self._command(ref, "down", deadline_s)

    def restart(self, ref: str, deadline_s: float | None = None) -> CommandReply:
        return self._command(ref, "restart", deadline_s)

    def status(self, ref: str) -> RuntimeStatus:
        return self._call("GET", f"/v1/runtimes/{ref}/status", RuntimeStatus)

    def delete(self, ref: str, purge_data: bool = False, deadline_s: float | None = None) -> str:
        command_s = self._command_deadline(deadline_s)
        query = api.DeleteQuery(purge_data, command_s, self.operation)
        path = f"/v1/runtimes/{ref}"
        reply_s = command_s + REPLY_MARGIN_S
        return self._call("DELETE", path, api.DeleteReply, params=query.as_params(), deadline_s=reply_s).state

    def cancel(self, ref: str, operation: str, wait_s: float = 5.0) -> CancelReply:
        """Kill the command `operation` runs on the runtime, if any, and refuse its later ones;
        waits up to wait_s (within this client's deadline) for the command to end."""
        wait_s = max(0.0, min(wait_s, self.deadline - REPLY_MARGIN_S))
        request, reply_s = api.CancelRequest(operation, wait_s), wait_s + REPLY_MARGIN_S
        return self._call("POST", f"/v1/runtimes/{ref}/cancel", CancelReply, request=request, deadline_s=reply_s)

    def check_ports(self, ports: Sequence[int]) -> PortCheck:
        return self._call("POST", "/v1/ports/check", PortCheck, request=api.PortsRequest(list(ports)))

    def health(self, probes: Sequence[Probe], deadline_s: float | None = None) -> list[ProbeResult]:
        """Run probes on the agent's host."""
        probe_s = deadline_s or min(api.HEALTH_DEADLINE_S, self._command_deadline(None))
        request, reply_s = api.HealthRequest(list(probes), probe_s), probe_s + REPLY_MARGIN_S
        return self._call("POST", "/v1/health", api.HealthReply, request=request, deadline_s=reply_s).results

    def metrics(
        self, targets: Sequence[api.MetricsTarget], deadline_s: float | None = None
    ) -> list[api.RuntimeMetrics]:
        """Database statistics of the runtimes named, read by the agent (one result each, in order)."""
        read_s = deadline_s or min(api.METRICS_DEADLINE_S, self._command_deadline(None))
        request, reply_s = api.MetricsRequest(list(targets), read_s), read_s + REPLY_MARGIN_S
        return self._call("POST", "/v1/metrics", api.MetricsReply, request=request, deadline_s=reply_s).results

    def query(self, ref: str, request: api.QueryRequest, deadline_s: float | None = None) -> list[dict]:
        """Run SQL on the runtime's database; the rows of its last statement that returned any.
        Postgres refusing it raises AgentError with code `query_failed`."""
        query_s = self._command_deadline(deadline_s)
        request = msgspec.structs.replace(request, deadline_s=query_s)
        path, reply_s = f"/v1/runtimes/{ref}/query", query_s + REPLY_MARGIN_S
        return self._call("POST", path, api.QueryReply, request=request, deadline_s=reply_s).rows

    def apply_settings(
        self, ref: str, request: api.SettingsRequest, deadline_s: float | None = None
    ) -> api.SettingsReply:
        """Apply the runtime's whole database settings to its running server (a reload, or a
        restart when asked and needed). PostgreSQL refusing them raises AgentError with code
        `settings_rejected`; the old settings then still run."""
        command_s = self._command_deadline(deadline_s)
        request = msgspec.structs.replace(request, deadline_s=command_s)
        path, reply_s = f"/v1/runtimes/{ref}/settings", command_s + REPLY_MARGIN_S
        return self._call("PUT", path, api.SettingsReply, request=request, deadline_s=reply_s)

    def bans(self, ref: str, unban: Sequence[str] = ()) -> list[str]:
        """The runtime's banned addresses, after reading its log and lifting the bans of `unban`."""
        request = api.BansRequest(unban=list(unban))
        return self._call("POST", f"/v1/runtimes/{ref}/bans", api.BansReply, request=request).banned

    def routes(self, request: api.RoutesRequest) -> api.RouterStatus:
        """Replace this host's route table (agent.endpoint); the router's status after it."""
        return self._call("PUT", "/v1/routes", api.RouterStatus, request=request)

    def upgrade_check(self, ref: str, target_major: int) -> api.UpgradeCheck:
        request = api.UpgradeCheckRequest(target_major)
        return self._call("POST", f"/v1/runtimes/{ref}/upgrade/check", api.UpgradeCheck, request=request)

    def upgrade_state(self, ref: str) -> api.UpgradeState:
        return self._call("GET", f"/v1/runtimes/{ref}/upgrade", api.UpgradeState)

    def upgrade_prepare(
        self, ref: str, target_major: int, method: str, deadline_s: float | None = None
    ) -> api.UpgradeState:
        """Build the new cluster beside the serving one; for `logical` the copy goes on after
        the reply (upgrade_state says when it is ready)."""
        command_s = self._command_deadline(deadline_s)
        request = api.UpgradePrepareRequest(target_major, method, command_s, self.operation)
        path, reply_s = f"/v1/runtimes/{ref}/upgrade/prepare", command_s + REPLY_MARGIN_S
        return self._call("POST", path, api.UpgradeState, request=request, deadline_s=reply_s)

    def upgrade_step(self, ref: str, step: str, deadline_s: float | None = None) -> api.UpgradeState:
        """switch, abort, rollback or discard (agent.drivers.upgrade)."""
        command_s = self._command_deadline(deadline_s)
        path, request = f"/v1/runtimes/{ref}/upgrade/{step}", api.CommandRequest(command_s, self.operation)
        return self._call("POST", path, api.UpgradeState, request=request, deadline_s=command_s + REPLY_MARGIN_S)

    def backup_archiving(
        self, ref: str, repository: api.Repository | None, archive_timeout_s: int = 60, deadline_s: float | None = None
    ) -> api.ArchiverStatus:
        """Turn WAL archiving on (a repository) or off (None); may restart the server."""
        command_s = self._command_deadline(deadline_s)
        request = api.ArchivingRequest(repository, archive_timeout_s, command_s, self.operation)
        path, reply_s = f"/v1/runtimes/{ref}/backups/archiving", command_s + REPLY_MARGIN_S
        return self._call("PUT", path, api.ArchiverStatus, request=request, deadline_s=reply_s)

    def backup_archiver(self, ref: str) -> api.ArchiverStatus:
        """Archiving's configuration and PostgreSQL's own counters and last failure."""
        return self._call("GET", f"/v1/runtimes/{ref}/backups/archiving", api.ArchiverStatus)

    def backup_start(self, ref: str, repository: api.Repository, job_s: float | None = None) -> api.BackupJob:
        """Start a base backup; it runs on the agent for up to job_s (poll backup_job)."""
        request = api.BaseBackupRequest(repository, job_s, self.operation)
        return self._call("POST", f"/v1/runtimes/{ref}/backups/base", api.BackupJob, request=request)

    def restore_start(
        self,
        ref: str,
        repository: api.Repository,
        source_ref: str | None = None,
        target_unix: float | None = None,
        job_s: float | None = None,
    ) -> api.BackupJob:
        """Start a restore into `ref` from `source_ref`'s stanza (None: its own) to target_unix
        (None: the latest archived point); poll backup_job."""
        request = api.RestoreRequest(repository, source_ref, target_unix, job_s, self.operation)
        return self._call("POST", f"/v1/runtimes/{ref}/backups/restore", api.BackupJob, request=request)

    def verify_start(
        self, ref: str, repository: api.Repository, source_ref: str | None = None, job_s: float | None = None
    ) -> api.BackupJob:
        """Start a verify (restore into a scratch cluster, check, drop); poll backup_job."""
        request = api.VerifyRequest(repository, source_ref, job_s, self.operation)
        return self._call("POST", f"/v1/runtimes/{ref}/backups/verify", api.BackupJob, request=request)

    def backup_job(self, ref: str) -> api.BackupJob:
        """The runtime's latest backup, restore or verify job (kind none: there was none)."""
        return self._call("GET", f"/v1/runtimes/{ref}/backups/job", api.BackupJob)

    def backup_catalog(
        self, repository: api.Repository, stanza: str, deadline_s: float | None = None
    ) -> api.BackupCatalog:
        """The stanza's base backups and restorable window, as the repository holds them."""
        read_s = self._command_deadline(deadline_s)
        request = api.CatalogRequest(repository, stanza, read_s)
        path, reply_s = "/v1/backups/catalog", read_s + REPLY_MARGIN_S
        return self._call("POST", path, api.BackupCatalog, request=request, deadline_s=reply_s)

    def backup_prune(
        self,
        repository: api.Repository,
        stanza: str,
        keep_since_unix: float,
        min_backups: int = 1,
        deadline_s: float | None = None,
    ) -> api.PruneReply:
        command_s = self._command_deadline(deadline_s)
        request = api.PruneRequest(repository, stanza, keep_since_unix, min_backups, command_s)
        path, reply_s = "/v1/backups/prune", command_s + REPLY_MARGIN_S
        return self._call("POST", path, api.PruneReply, request=request, deadline_s=reply_s)

    def _command(self, ref: str, action: str, deadline_s: float | None) -> CommandReply:
        command_s = self._command_deadline(deadline_s)
        path, request = f"/v1/runtimes/{ref}/{action}", api.CommandRequest(command_s, self.operation)
        return self._call("POST", path, CommandReply, request=request, deadline_s=command_s + REPLY_MARGIN_S)

    def _command_deadline(self, requested_s: float | None) -> float:
        """The agent's deadline for a command: as asked, else what our own deadline leaves for it."""
        if requested_s is not None:
            return requested_s
        return max(self.deadline - REPLY_MARGIN_S, self.deadline / 2)

    def _call(
        self,
        method: str,
        path: str,
        reply_type: type[ReplyT],
        *,
        request: api.Request | None = None,
        params: dict[str, str] | None = None,
        deadline_s: float | None = None,
    ) -> ReplyT:
        limit = self.deadline if deadline_s is None else min(deadline_s, self.deadline)
        body = None if request is None else msgspec.json.encode(request)
        started, error = time.monotonic(), None
        loop = asyncio.new_event_loop()
        try:
            status, data = loop.run_until_complete(self._call_within(method, path, body, params, limit))
            return _decode(f"{method} {self.base_url}{path}", status, data, reply_type)
        except AgentError as exc:
            error = type(exc).__name__
            raise
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()  # unlike asyncio.run, does not wait for the resolver thread
            if self.observe is not None:
                self.observe(
                    f"{method} {_RUNTIME_PATH.sub('/v1/runtimes/{ref}', path)}", time.monotonic() - started, error
                )

    async def _call_within(self, method: str, path: str, body, params, deadline_s: float) -> tuple[int, bytes]:
        where = f"{method} {self.base_url}{path}"
        try:
            async with asyncio.timeout(deadline_s):
                return await self._exchange(method, path, body, params, deadline_s)
        except AgentProtocolError as exc:
            raise AgentProtocolError(f"{where}: {exc.message}") from None
        except (TimeoutError, httpx.TimeoutException):
            raise AgentTimeout(f"{where}: no complete answer within {deadline_s:g}s") from None
        except httpx.RemoteProtocolError as exc:
            raise AgentProtocolError(f"{where}: malformed reply: {exc}") from None
        except httpx.TransportError as exc:
            raise AgentUnreachable(f"{where}: {exc or type(exc).__name__}") from None

    async def _exchange(self, method: str, path: str, body, params, deadline_s: float) -> tuple[int, bytes]:
        # trust_env=False: agent calls never go through a proxy from the environment.
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=deadline_s, trust_env=False, verify=_tls()
        ) as client:
            async with client.stream(method, path, content=body, params=params) as response:
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.max_reply_bytes:
                    raise AgentProtocolError(f"reply of {declared} bytes exceeds the {self.max_reply_bytes} byte cap")
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > self.max_reply_bytes:
                        raise AgentProtocolError(f"reply exceeds the {self.max_reply_bytes} byte cap")
                return response.status_code, bytes(data)


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every call, the one httpx would build: building it reads the CA
    bundle, which took 16 of the 23 ms of a loopback call when done per call."""
    return httpx.create_ssl_context()


def _decode(where: str, status: int, data: bytes, reply_type: type[ReplyT]) -> ReplyT:
    """The reply as its type; an error reply as the AgentError for its status."""
    if status == 200:
        try:
            return msgspec.json.decode(data, type=reply_type)
        except msgspec.DecodeError as exc:  # ValidationError included: valid JSON of the wrong shape
            raise AgentProtocolError(f"{where}: malformed reply: {exc}", status=status) from None
    try:
        error = msgspec.json.decode(data, type=api.ErrorReply).error
    except msgspec.DecodeError:
        # Not the agent's own error body: waitress's (413: body over the limit), or a proxy's.
        text = data[:200].decode("utf-8", errors="replace").strip()
        raise AgentProtocolError(f"{where}: answered {status}: {text or 'no body'}", status=status) from None
    kind = AgentCancelled if error.code == "cancelled" else _ERRORS_BY_STATUS.get(status, AgentError)
    raise kind(f"{where}: {error.message}", code=error.code, status=status, output_tail=error.output_tail or "")
