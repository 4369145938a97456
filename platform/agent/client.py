"""The control plane's typed client for the agent API.

Invariant: every call ends by its overall deadline, whatever the agent does: one that
never answers, one that trickles a byte a second through headers or body, a reply too
large to hold. The exchange runs as one asyncio task under `asyncio.timeout`, so the
deadline cancels it wherever it waits; per-read timeouts alone would restart with every
byte. The event loop is private to the call and closed without waiting for its resolver
thread, so a stuck DNS lookup cannot hold the caller either. Call it from synchronous
code (Django views, django-q tasks), not from inside a running event loop.

Commands carry a deadline the agent enforces (`deadline_s`), and the call allows that
plus a margin for the reply, so a command that times out on the agent is reported as the
agent's timeout, with the command's output tail, rather than as a lost call.
"""

import asyncio
import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, fields

import httpx

DEFAULT_DEADLINE_S = 30.0
REPLY_MARGIN_S = 2.0
HEALTH_DEADLINE_S = 10.0
MAX_REPLY_BYTES = 4 << 20


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


class AgentUnauthorized(AgentError):
    code = "unauthorized"


class AgentProtocolError(AgentError):
    """The reply was malformed or larger than the cap."""

    code = "protocol"


@dataclass(frozen=True)
class AgentInfo:
    agent_version: str
    api_version: int
    driver: str
    probe_host: str
    probe_host_source: str
    postgres_versions: list[int]
    compose: str | None

    def as_capabilities(self) -> dict:
        """What a runtime host records of its agent."""
        return asdict(self)


@dataclass(frozen=True)
class CommandReply:
    state: str
    output_tail: str


@dataclass(frozen=True)
class RuntimeStatus:
    state: str  # running | stopped | absent
    detail: str


@dataclass(frozen=True)
class PortCheck:
    free: list[int]
    taken: list[int]


@dataclass(frozen=True)
class ProbeResult:
    name: str
    status: str  # pass | fail | misconfigured
    detail: str
    server_major: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FileSpec:
    path: str
    content: bytes
    policy: str = "managed"  # managed | seed

    def to_json(self) -> dict:
        return {"path": self.path, "content_b64": base64.b64encode(self.content).decode(), "policy": self.policy}


@dataclass(frozen=True)
class Probe:
    name: str
    kind: str  # tcp | http | postgres
    port: int
    host: str | None = None  # default: the agent's probe host
    path: str | None = None
    expect_status: int | None = None
    user: str | None = None
    password: str | None = None
    dbname: str | None = None
    expect_major: int | None = None

    def to_json(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


_ERRORS_BY_STATUS = {401: AgentUnauthorized, 409: AgentBusy, 504: AgentTimeout}


class AgentClient:
    """One agent's API. `deadline` bounds every call, whatever a method's own deadline_s asks."""

    def __init__(
        self, base_url: str, token: str, deadline: float = DEFAULT_DEADLINE_S, max_reply_bytes: int = MAX_REPLY_BYTES
    ):
        self.base_url = base_url.rstrip("/")
        self.deadline = deadline
        self.max_reply_bytes = max_reply_bytes
        self._headers = {"Authorization": f"Bearer {token}"}

    def info(self) -> AgentInfo:
        return AgentInfo(**_fields(AgentInfo, self._call("GET", "/v1/info")))

    def put_files(
        self,
        ref: str,
        files: Sequence[FileSpec | Mapping],
        user_paths: Sequence[str] = (),
        remove: Sequence[str] = (),
    ) -> dict[str, str]:
        """Write a runtime's files; returns each listed file's sha256 as it now is on the host.

        A file is a FileSpec or already in the wire shape {path, content_b64, policy}.
        """
        body = {"files": [_wire(spec) for spec in files], "user_paths": list(user_paths), "remove": list(remove)}
        return _value(self._call("PUT", f"/v1/runtimes/{ref}/files", body=body), "digests", dict)

    def digests(self, ref: str, paths: Sequence[str]) -> dict[str, str | None]:
        reply = self._call("POST", f"/v1/runtimes/{ref}/digests", body={"paths": list(paths)})
        return _value(reply, "digests", dict)

    def up(self, ref: str, deadline_s: float | None = None) -> CommandReply:
        return self._command(ref, "up", deadline_s)

    def down(self, ref: str, deadline_s: float | None = None) -> CommandReply:
        return self._command(ref, "down", deadline_s)

    def restart(self, ref: str, deadline_s: float | None = None) -> CommandReply:
        return self._command(ref, "restart", deadline_s)

    def status(self, ref: str) -> RuntimeStatus:
        return RuntimeStatus(**_fields(RuntimeStatus, self._call("GET", f"/v1/runtimes/{ref}/status")))

    def delete(self, ref: str, purge_data: bool = False, deadline_s: float | None = None) -> str:
        command_s = self._command_deadline(deadline_s)
        params = {"purge_data": int(purge_data), "deadline_s": command_s}
        reply = self._call("DELETE", f"/v1/runtimes/{ref}", params=params, deadline_s=command_s + REPLY_MARGIN_S)
        return _value(reply, "state", str)

    def check_ports(self, ports: Sequence[int]) -> PortCheck:
        return PortCheck(**_fields(PortCheck, self._call("POST", "/v1/ports/check", body={"ports": list(ports)})))

    def health(self, probes: Sequence[Probe | Mapping], deadline_s: float | None = None) -> list[ProbeResult]:
        """Run probes on the agent's host; a Probe or the wire shape {name, kind, port, ...}."""
        probe_s = deadline_s or min(HEALTH_DEADLINE_S, self._command_deadline(None))
        body = {"probes": [_wire(probe) for probe in probes], "deadline_s": probe_s}
        reply = self._call("POST", "/v1/health", body=body, deadline_s=probe_s + REPLY_MARGIN_S)
        return [ProbeResult(**_fields(ProbeResult, item)) for item in _list(reply, "results")]

    def query(self, ref: str, spec: Mapping, deadline_s: float | None = None) -> list[dict]:
        """Run SQL on the runtime's database: spec is {sql, port, password, read_only?, user?, dbname?,
        host?, max_rows?, max_bytes?}. Postgres refusing it raises AgentError with code `query_failed`."""
        query_s = self._command_deadline(deadline_s)
        body = {**spec, "deadline_s": query_s}
        reply = self._call("POST", f"/v1/runtimes/{ref}/query", body=body, deadline_s=query_s + REPLY_MARGIN_S)
        return _list(reply, "rows")

    def _command(self, ref: str, action: str, deadline_s: float | None) -> CommandReply:
        command_s = self._command_deadline(deadline_s)
        path = f"/v1/runtimes/{ref}/{action}"
        reply = self._call("POST", path, body={"deadline_s": command_s}, deadline_s=command_s + REPLY_MARGIN_S)
        return CommandReply(**_fields(CommandReply, reply))

    def _command_deadline(self, requested_s: float | None) -> float:
        """The agent's deadline for a command: as asked, else what our own deadline leaves for it."""
        if requested_s is not None:
            return requested_s
        return max(self.deadline - REPLY_MARGIN_S, self.deadline / 2)

    def _call(
        self, method: str, path: str, *, body: dict | None = None, params: dict | None = None, deadline_s=None
    ) -> dict:
        limit = self.deadline if deadline_s is None else min(deadline_s, self.deadline)
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(self._call_within(method, path, body, params, limit))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()  # unlike asyncio.run, does not wait for the resolver thread

    async def _call_within(self, method: str, path: str, body, params, deadline_s: float) -> dict:
        where = f"{method} {self.base_url}{path}"
        try:
            async with asyncio.timeout(deadline_s):
                status, data = await self._exchange(method, path, body, params, deadline_s)
        except AgentProtocolError as exc:
            raise AgentProtocolError(f"{where}: {exc.message}") from None
        except (TimeoutError, httpx.TimeoutException):
            raise AgentTimeout(f"{where}: no complete answer within {deadline_s:g}s") from None
        except httpx.RemoteProtocolError as exc:
            raise AgentProtocolError(f"{where}: malformed reply: {exc}") from None
        except httpx.TransportError as exc:
            raise AgentUnreachable(f"{where}: {exc or type(exc).__name__}") from None
        return _decode(where, status, data)

    async def _exchange(self, method: str, path: str, body, params, deadline_s: float) -> tuple[int, bytes]:
        # trust_env=False: agent calls never go through a proxy from the environment.
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=deadline_s, trust_env=False
        ) as client:
            async with client.stream(method, path, json=body, params=params) as response:
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.max_reply_bytes:
                    raise AgentProtocolError(f"reply of {declared} bytes exceeds the {self.max_reply_bytes} byte cap")
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > self.max_reply_bytes:
                        raise AgentProtocolError(f"reply exceeds the {self.max_reply_bytes} byte cap")
                return response.status_code, bytes(data)


def _decode(where: str, status: int, data: bytes) -> dict:
    try:
        reply = json.loads(data)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise AgentProtocolError(f"{where}: answered {status} with a body that is not a JSON object", status=status)
    if status == 200:
        return reply
    error = reply.get("error") if isinstance(reply.get("error"), dict) else {}
    kind = _ERRORS_BY_STATUS.get(status, AgentError)
    raise kind(
        f"{where}: {error.get('message') or f'answered {status}'}",
        code=error.get("code"),
        status=status,
        output_tail=error.get("output_tail") or "",
    )


def _fields(kind: type, reply: dict) -> dict:
    """The reply's values for a dataclass; a missing field is the agent breaking the contract."""
    required = [field.name for field in fields(kind) if field.default is MISSING]
    if missing := [name for name in required if name not in reply]:
        raise AgentProtocolError(f"reply lacks {', '.join(missing)}")
    return {field.name: reply[field.name] for field in fields(kind) if field.name in reply}


def _wire(item: FileSpec | Probe | Mapping) -> dict:
    return item.to_json() if isinstance(item, FileSpec | Probe) else dict(item)


def _value(reply: dict, key: str, kind: type):
    value = reply.get(key)
    if not isinstance(value, kind):
        raise AgentProtocolError(f"reply's {key} is missing or not a {kind.__name__}")
    return value


def _list(reply: dict, key: str) -> list:
    value = reply.get(key)
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise AgentProtocolError(f"reply's {key} is not a list of objects")
    return value
