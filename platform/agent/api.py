"""The agent's HTTP API, declared once: every request and reply body as a msgspec Struct.

The agent decodes and validates requests with these types (`agent.server`) and the
control plane's client encodes them (`agent.client`), so the two sides cannot drift. The
client decodes replies with them too: a malformed agent reply is an AgentProtocolError
at the call, never a KeyError deep in the control plane.

Invariants:
- Requests forbid unknown fields: a misspelt or newer option is refused (422), never
  silently ignored. Replies accept unknown fields, so an agent may add to a reply without
  breaking an older control plane.
- Fields at their default are left off the wire; the wire names are the API table's in
  docs/architecture.md (a file's content travels base64 as `content_b64`).
- Only msgspec and the standard library: the agent (no Django) and the control plane
  both import this module.
"""

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

MAX_PROBES = 64  # probes per health call; the control plane batches to stay under it
MAX_PORTS = 4096  # ports per port check
MIN_PORT, MAX_PORT = 1024, 65535  # ports a runtime may lease, and so the ones a check accepts
HEALTH_DEADLINE_S = 10.0
METRICS_DEADLINE_S = 20.0
MAX_METRICS_TARGETS = 256  # runtimes per metrics call; the control plane batches to stay under it
MAX_QUERY_ROWS = 100_000  # rows a query may return
MAX_QUERY_BYTES = 3 << 20  # below the client's 4 MiB reply cap, with room for the envelope

Seconds = Annotated[float, Meta(gt=0)]
RuntimePort = Annotated[int, Meta(ge=MIN_PORT, le=MAX_PORT)]
Text = Annotated[str, Meta(min_length=1)]
# The control plane's operation id a command belongs to (see agent.locks).
OperationId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A request body; see the module docstring."""


class Reply(msgspec.Struct, frozen=True, omit_defaults=True):
    """A reply body; see the module docstring."""


# Requests


class FileSpec(Request):
    """One file of a files request; the agent checks the path (agent.files)."""

    path: str
    content: bytes = msgspec.field(name="content_b64")
    policy: Literal["managed", "seed"] = "managed"  # seed: written only when absent


BackupSuffix = Annotated[str, Meta(pattern=r"^backup-[0-9]{8}T[0-9]{6}Z$")]


class PutFilesRequest(Request):
    files: list[FileSpec] = []
    user_paths: list[str] = []  # globs of the user's files, never written or removed
    remove: list[str] = []
    private_paths: list[str] = []  # the runtime's secret-bearing files, written now or not: kept 0600
    # Paths among `files` whose present content is first copied to `<path>.<backup_suffix>`
    # beside it, in the same locked request (a conflict resolved by taking the template's file).
    backup: list[str] = []
    backup_suffix: BackupSuffix | None = None


class ContentsRequest(Request):
    paths: list[str] = []


class DigestsRequest(Request):
    paths: list[str] = []


class CommandRequest(Request):
    """up, down and restart: a deadline that may shorten the agent's default, never lengthen it,
    and the operation the command belongs to, so cancelling that operation stops it."""

    deadline_s: Seconds | None = None
    operation: OperationId | None = None


class DeleteQuery(Request):
    """DELETE's query string (it has no body)."""

    purge_data: bool = False
    deadline_s: Seconds | None = None
    operation: OperationId | None = None

    def as_params(self) -> dict[str, str]:
        params = {"purge_data": "1" if self.purge_data else "0"}
        if self.deadline_s is not None:
            params["deadline_s"] = repr(self.deadline_s)
        if self.operation is not None:
            params["operation"] = self.operation
        return params


class CancelRequest(Request):
    """Kill the command `operation` runs on the runtime and refuse its later ones; wait up
    to wait_s (the agent caps it) for the command to end."""

    operation: OperationId
    wait_s: Annotated[float, Meta(ge=0)] = 0.0


class PortsRequest(Request):
    ports: Annotated[list[RuntimePort], Meta(max_length=MAX_PORTS)]


class Probe(Request):
    name: Text
    kind: Literal["tcp", "http", "postgres"]
    port: Annotated[int, Meta(ge=1, le=65535)]
    host: Text | None = None  # None: the agent's probe host
    path: Annotated[str, Meta(pattern="^/")] = "/"  # http
    expect_status: Annotated[int, Meta(ge=100, le=599)] = 200  # http
    user: str = "postgres"  # postgres
    password: str = ""  # postgres
    dbname: str = "postgres"  # postgres
    expect_major: int | None = None  # postgres


class HealthRequest(Request):
    probes: Annotated[list[Probe], Meta(min_length=1, max_length=MAX_PROBES)]
    deadline_s: Seconds = HEALTH_DEADLINE_S


class MetricsTarget(Request):
    """One runtime's database to read statistics from (as a postgres probe connects)."""

    ref: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9]{5,39}$")]
    port: Annotated[int, Meta(ge=1, le=65535)]
    password: str
    user: str = "postgres"
    dbname: str = "postgres"
    host: Text | None = None  # None: the agent's probe host


class MetricsRequest(Request):
    """Database statistics of many runtimes in one call (agent.metrics): the credentials
    travel with it, nothing is stored on the agent."""

    targets: Annotated[list[MetricsTarget], Meta(min_length=1, max_length=MAX_METRICS_TARGETS)]
    deadline_s: Seconds = METRICS_DEADLINE_S


class QueryRequest(Request):
    """SQL on a runtime's own database (agent.query). The credentials travel with each call;
    the agent stores nothing and logs neither the SQL nor the rows."""

    sql: Annotated[str, Meta(pattern=r"\S")]  # not blank
    port: Annotated[int, Meta(ge=1, le=65535)]
    password: str
    read_only: bool = False
    user: str = "postgres"
    dbname: str = "postgres"
    host: Text | None = None  # None: the agent's probe host
    max_rows: Annotated[int, Meta(ge=1, le=MAX_QUERY_ROWS)] = 10_000
    max_bytes: Annotated[int, Meta(ge=1, le=MAX_QUERY_BYTES)] = 2 << 20
    deadline_s: Seconds | None = None  # the statement's; may shorten the agent's default, never lengthen it


# A postgresql.conf parameter the agent writes for the control plane, and its value: the
# control plane validates names and values (api.postgres_config); the agent refuses anything
# that could break out of a quoted configuration value.
ParameterName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
ParameterValue = Annotated[str, Meta(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
Cidr = Annotated[str, Meta(pattern=r"^[0-9A-Fa-f:.]{2,45}/[0-9]{1,3}$")]


class RouteSpec(Request):
    """One project's database as this host's router serves it (agent.router)."""

    ref: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9]{5,39}$")]
    port: RuntimePort  # the runtime's own database port on this host
    host: Text | None = None  # None: the agent's probe host
    paused: bool = False  # stopped on purpose: clients are told so, never routed
    max_client_conn: Annotated[int, Meta(ge=1, le=100_000)] = 200  # client connections at once, both addresses
    pool_size: Annotated[int, Meta(ge=1, le=10_000)] = 15  # the pooler's server connections
    # The superuser's password: only to prepare the pooler's auth role in the project's
    # database (agent.pooler); never written to disk or logged.
    password: str = ""
    # Network restrictions: the client ranges the router lets through to this project (its
    # clients reach the runtime from this host, which pg_hba.conf never restricts); None: all.
    allowed_cidrs: list[Cidr] | None = None


class RoutesRequest(Request):
    """The whole route table of this host; it replaces the one before."""

    domain: Annotated[str, Meta(pattern=r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")]
    routes: list[RouteSpec] = []


class UpgradeCheckRequest(Request):
    target_major: Annotated[int, Meta(ge=10, le=99)]


class UpgradePrepareRequest(Request):
    """Build the new major's cluster beside the serving one (agent.drivers.upgrade)."""

    target_major: Annotated[int, Meta(ge=10, le=99)]
    method: Literal["logical", "dump"]
    deadline_s: Seconds | None = None
    operation: OperationId | None = None


# Backups (agent.backups): WAL archiving, base backups, restore, verify, prune.

Ref = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9]{5,39}$")]
# A base backup, restore or verify runs as a job the start call only starts: up to this long.
BACKUP_JOB_MAX_S = 6 * 3600.0


class Repository(Request):
    """Where backups live, with the credentials to reach it. The control plane sends it with
    each call; the agent keeps it only in mode-600 files of the server's user (for the
    archive command), never logs it, never returns the secret.

    `url`: `s3://bucket[/prefix]` (S3-compatible; `endpoint` for anything but AWS) or
    `file:///absolute/path` (a folder, e.g. an NFS mount every host shares). A project's
    backups and WAL live under `<url>/<stanza>/` where the stanza is the project's ref."""

    url: Annotated[str, Meta(pattern=r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9._/-]*)?|file:///\S+)$")]
    endpoint: Annotated[str, Meta(pattern=r"^https?://\S+$")] | None = None
    region: str | None = None
    access_key_id: str = ""
    secret_access_key: str = ""

    def __repr__(self) -> str:  # a repr lands in logs and tracebacks: never the secret
        return f"Repository(url={self.url!r}, endpoint={self.endpoint!r})"


class ArchivingRequest(Request):
    """Turn WAL archiving of a runtime on (a repository) or off (None). Turning it on or off
    restarts a running server (archive_mode needs it); changing the repository or the timeout
    only reloads it."""

    repository: Repository | None
    archive_timeout_s: Annotated[int, Meta(ge=1, le=3600)] = 60
    deadline_s: Seconds | None = None
    operation: OperationId | None = None


class BaseBackupRequest(Request):
    """Start a base backup of the running runtime into the repository (a job; poll backups/job)."""

    repository: Repository
    deadline_s: Annotated[float, Meta(gt=0, le=BACKUP_JOB_MAX_S)] | None = None
    operation: OperationId | None = None


class RestoreRequest(Request):
    """Start a restore into this runtime (a job; poll backups/job).

    From the stanza `source_ref` (None: this runtime's own) to `target_unix` (None: the latest
    archived point). A runtime with a cluster is restored in place: the restored cluster is
    built beside the serving one, which serves until the swap and comes back if anything
    fails. A runtime with runtime.toml but no cluster (a clone, or a lost host's project
    recreated here) gets the restored cluster, its superuser password set to runtime.toml's."""

    repository: Repository
    source_ref: Ref | None = None
    target_unix: Annotated[float, Meta(gt=0)] | None = None
    deadline_s: Annotated[float, Meta(gt=0, le=BACKUP_JOB_MAX_S)] | None = None
    operation: OperationId | None = None


class VerifyRequest(Request):
    """Start a verify (a job): restore the stanza's latest point into a scratch cluster on this
    host, check every database answers, drop the scratch cluster. The runtime is untouched."""

    repository: Repository
    source_ref: Ref | None = None  # None: this runtime's own stanza
    deadline_s: Annotated[float, Meta(gt=0, le=BACKUP_JOB_MAX_S)] | None = None
    operation: OperationId | None = None


class CatalogRequest(Request):
    """The base backups and restorable window of one stanza (a project's ref)."""

    repository: Repository
    stanza: Ref
    deadline_s: Seconds | None = None


class PruneRequest(Request):
    """Remove base backups finished before keep_since_unix (the newest `min_backups` always
    stay) and the WAL no remaining backup needs. `min_backups` 0 is for a removed project's
    stanza: once no backup is left, its WAL goes too and the stanza is empty."""

    repository: Repository
    stanza: Ref
    keep_since_unix: Annotated[float, Meta(gt=0)]
    min_backups: Annotated[int, Meta(ge=0)] = 1
    deadline_s: Seconds | None = None


class SettingsRequest(Request):
    """A runtime's whole database settings (agent.drivers.settings): what its own config file
    and its pg_hba.conf say, replacing what they said before. Applied to the running server
    by a reload, or by a restart when `restart` and a parameter needs one."""

    parameters: dict[ParameterName, ParameterValue] = {}
    restart: bool = False
    ssl_enforced: bool = False
    # Client addresses allowed to connect (IPv4 and IPv6 ranges together); this host's own
    # connections (the agent, the router, PgBouncer) always are.
    allowed_cidrs: list[Cidr] = msgspec.field(default_factory=lambda: ["0.0.0.0/0", "::/0"])
    deadline_s: Seconds | None = None


IpAddress = Annotated[str, Meta(pattern=r"^[0-9A-Fa-f:.]{2,45}$")]


class BansRequest(Request):
    """Network bans: lift the bans of `unban` (their failures count from zero again)."""

    unban: list[IpAddress] = []


# Replies


class ListenerStatus(Reply):
    address: str  # host:port, as configured
    listening: bool
    error: str | None = None  # why it does not listen (retried every few seconds)


class RouterStatus(Reply):
    """The router and pooler of this host, as `/v1/info` and `PUT /v1/routes` report them."""

    db: ListenerStatus
    pooler: ListenerStatus
    pgbouncer: ListenerStatus  # the PgBouncer the pooler address hands connections to
    routes: int = 0
    pooled: int = 0  # routes PgBouncer serves (their auth role is prepared)
    connections: int = 0
    domain: str | None = None


class AgentInfo(Reply):
    agent_version: str
    api_version: int
    driver: str
    probe_host: str
    probe_host_source: str
    postgres_versions: list[int]
    compose: str | None
    # The kernel's ephemeral port range [low, high]; None when the agent cannot read it (or predates it).
    ephemeral_ports: list[int] | None = None
    router: RouterStatus | None = None  # None from an agent that predates the router
    # The host's physical memory: what a project's Postgres memory settings are checked against.
    memory_bytes: int | None = None

    def as_capabilities(self) -> dict:
        """What a runtime host records of its agent, as JSON values (the router's status nested)."""
        return {**msgspec.structs.asdict(self), "router": msgspec.to_builtins(self.router)}


class FilesReply(Reply):
    digests: dict[str, str]  # sha256 of each listed file as it now is on the host


class DigestsReply(Reply):
    digests: dict[str, str | None]  # None: no such file


class ContentsReply(Reply):
    files: dict[str, bytes | None] = msgspec.field(name="files_b64")  # None: no such file


class CommandReply(Reply):
    state: Literal["running", "stopped"]
    output_tail: str


class CancelReply(Reply):
    cancelled: bool  # a command of that operation was running and was killed
    running: bool  # one still held the runtime when the agent answered


class RuntimeStatus(Reply):
    state: Literal["running", "stopped", "absent"]
    detail: str


class DeleteReply(Reply):
    state: Literal["absent"]


class PortCheck(Reply):
    free: list[int]
    taken: list[int]


class ProbeResult(Reply):
    name: str
    status: Literal["pass", "fail", "misconfigured"]  # misconfigured: never a reason to tear down
    detail: str
    server_major: int | None = None

    def as_dict(self) -> dict:
        return msgspec.structs.asdict(self)


class HealthReply(Reply):
    results: list[ProbeResult]


class RuntimeMetrics(Reply):
    """One runtime's statistics, or why they could not be read (`error`, the rest unset).
    Totals are the cluster's since its statistics were last reset."""

    ref: str
    error: str | None = None
    connections: dict[str, int] = {}  # client backends by state (active, idle, idle in transaction, ...)
    database_bytes: int | None = None  # every database of the cluster
    xact_total: int | None = None  # commits and rollbacks
    rows_read_total: int | None = None  # tuples fetched
    rows_written_total: int | None = None  # tuples inserted, updated and deleted
    blocks_hit_total: int | None = None
    blocks_read_total: int | None = None
    longest_transaction_s: float | None = None  # the oldest open transaction of another backend
    replication_lag_bytes: int | None = None  # the furthest replica behind (None: no replica)
    wal_archived_total: int | None = None
    wal_archive_failed_total: int | None = None
    last_archived_age_s: float | None = None  # None: nothing archived yet


class MetricsReply(Reply):
    results: list[RuntimeMetrics]


class SettingsReply(Reply):
    """What the server runs after an apply: each requested parameter's value as `SHOW` gives
    it, those that wait for a restart, and whether this apply restarted the server."""

    values: dict[str, str]
    pending_restart: list[str] = []
    restarted: bool = False


class BansReply(Reply):
    """The addresses banned for repeated failed passwords (agent.drivers.settings.BAN_THRESHOLD)."""

    banned: list[str]


class QueryReply(Reply):
    rows: list[dict[str, Any]]  # of the last statement that returned rows, as JSON values


class UpgradeBlocker(Reply):
    """Why an upgrade cannot be done: `kind` for programs (unsupported_extension, not_installed,
    not_newer, not_running, in_progress, kept_cluster, no_client_tools, no_method, no_cluster),
    `message` for people, `subject` the thing it is about (an extension's name)."""

    kind: str
    message: str
    subject: str | None = None


class UpgradeCheck(Reply):
    """What an upgrade of a runtime to target_major would meet; changes nothing."""

    current_major: int | None
    target_major: int
    blockers: list[UpgradeBlocker]  # any: it cannot be done, and these say why
    methods: list[str]  # the methods that apply (logical first: seconds of downtime)
    unusable: dict[str, str] = {}  # method -> why it does not apply
    warnings: list[str] = []
    data_bytes: int | None = None


class UpgradeState(Reply):
    """Where an upgrade of a runtime stands."""

    # failed: a switch failed and the old major serves again; abort clears it
    phase: Literal["none", "preparing", "copying", "ready", "switched", "failed"]
    current_major: int | None = None  # the major that serves
    target_major: int | None = None
    method: str | None = None
    previous_major: int | None = None  # the old cluster kept, stopped, for a rollback
    tables_ready: int | None = None  # logical: tables copied and streaming, of tables_total
    tables_total: int | None = None
    detail: str | None = None
    downtime_s: float | None = None  # switch: from writes stopping to the new cluster serving
    rolled_back_from: int | None = None


class BackupInfo(Reply):
    """One base backup in a repository."""

    id: str  # e.g. 20261206T073000Z
    started_unix: float
    finished_unix: float
    # The tar's size (pg_basebackup's output, what a restore extracts), not the stored object's,
    # which an S3 repository holds zstd-compressed (agent.backups._compresses).
    bytes: int
    major: int
    timeline: int
    start_wal: str  # the first WAL segment a restore of it needs
    stop_wal: str
    # Its cluster's: where its WAL is (agent.repository.wal_key). A major upgrade makes a new
    # cluster, whose backups and WAL are another generation of the same stanza.
    system_identifier: str
    status: Literal["completed"] = "completed"  # only finished backups are listed
    # The tar's object in base/<id>/ (base.tar.zst compressed, or base.tar), so a restore need
    # not list the folder again; None in a backup.json written before it was recorded.
    stored: str | None = None


class BackupCatalog(Reply):
    stanza: str
    backups: list[BackupInfo]  # oldest first
    # The restorable window: from the oldest backup's end to the last archived WAL (None: empty).
    earliest_unix: float | None = None
    latest_unix: float | None = None
    last_wal: str | None = None
    wal_segments: int = 0


class PruneReply(Reply):
    removed_backups: list[str]
    removed_wal: int
    kept_backups: list[str]


class ArchiverStatus(Reply):
    """WAL archiving of a runtime: its configuration, and PostgreSQL's pg_stat_archiver when it runs."""

    enabled: bool
    url: str | None = None  # the repository (never its credentials)
    archive_timeout_s: int | None = None
    running: bool = False  # the server answered; the counters below are its own
    archived_count: int | None = None
    last_archived_wal: str | None = None
    last_archived_unix: float | None = None
    failed_count: int | None = None
    last_failed_wal: str | None = None
    last_failed_unix: float | None = None
    # Why the last archive attempt failed, in PostgreSQL's log's words (archive command's output
    # and the server's "archive command failed" line); None when the last attempt succeeded.
    last_failure: str | None = None
    restarted: bool = False  # this call restarted the server (archiving turned on or off)


class BackupJob(Reply):
    """The latest base backup, restore or verify job of a runtime."""

    kind: Literal["none", "base_backup", "restore", "verify"]
    state: Literal["none", "running", "succeeded", "failed"]
    operation: str | None = None
    phase: str | None = None  # what it is doing now (fetching, recovering, swapping, ...)
    started_unix: float | None = None
    finished_unix: float | None = None
    detail: str | None = None
    error: "ErrorDetail | None" = None  # failed: why (code cancelled, timeout, repository, restore_failed, ...)
    backup: BackupInfo | None = None  # base_backup: the backup made
    restored_to_unix: float | None = None  # restore/verify: the last commit time replayed (None: no commit)
    timeline: int | None = None  # restore: the restored cluster's new timeline
    databases: int | None = None  # verify: databases checked


class ErrorDetail(Reply):
    code: str
    message: str
    output_tail: str | None = None  # a command's last output, when one ran


class ErrorReply(Reply):
    """Every non-200 reply: 401 (no detail), 404, 409 busy or cancelled, 422 invalid, 504 timeout, 500."""

    error: ErrorDetail
