"""Request and response shapes, named and typed as the Supabase Management API documents them.

The OpenAPI document at /v1/openapi.json is generated from these."""

from datetime import datetime
from typing import Literal

from ninja import Schema
from pydantic import ConfigDict, Field


class Message(Schema):
    message: str


class OrganizationOut(Schema):
    id: str = Field(description="The organization's slug (Supabase uses the slug as its id)")
    slug: str
    name: str


class OrganizationCreate(Schema):
    name: str = Field(min_length=1, max_length=100)


class DatabaseOut(Schema):
    host: str
    version: str
    postgres_engine: str
    release_channel: str


class ProjectOut(Schema):
    id: str = Field(description="The project's ref")
    ref: str
    organization_id: str = Field(description="The organization's slug")
    organization_slug: str
    name: str
    region: str
    created_at: datetime
    status: str
    database: DatabaseOut


class ProjectCreate(Schema):
    name: str = Field(min_length=1, max_length=100)
    organization_slug: str | None = None
    organization_id: str | None = Field(None, description="Deprecated alias of organization_slug")
    db_pass: str
    region: str | None = None
    desired_instance_size: str | None = None
    postgres_engine: str | None = Field(None, description="Postgres major version, e.g. '15'")
    release_channel: str | None = None
    plan: str | None = None
    kps_enabled: bool | None = None
    template_url: str | None = None


class ProjectCreated(Schema):
    id: str
    ref: str
    organization_id: str
    organization_slug: str
    name: str
    region: str
    created_at: datetime
    status: str


class ProjectDeleted(Schema):
    id: int = Field(description="The project's internal number (the CLI expects a number here)")
    ref: str
    name: str
    slug: str = Field(description="The project's ref, as the platform answers")


class ApiKeyOut(Schema):
    name: str
    api_key: str
    id: str
    type: Literal["legacy", "publishable", "secret"]
    hash: str
    prefix: str
    description: str | None
    secret_jwt_template: dict | None = None
    inserted_at: datetime | None = None
    updated_at: datetime | None = None


class ServiceHealth(Schema):
    name: str
    healthy: bool
    status: Literal["COMING_UP", "ACTIVE_HEALTHY", "UNHEALTHY"]
    error: str | None = None


class QueryIn(Schema):
    query: str = Field(min_length=1)
    read_only: bool = False
    parameters: list | None = None


class Enabled(Schema):
    enabled: bool


class IcebergCatalog(Schema):
    enabled: bool
    maxNamespaces: int  # noqa: N815 (the API's field names)
    maxTables: int  # noqa: N815
    maxCatalogs: int  # noqa: N815


class VectorBuckets(Schema):
    enabled: bool
    maxBuckets: int  # noqa: N815
    maxIndexes: int  # noqa: N815


class StorageFeatures(Schema):
    imageTransformation: Enabled  # noqa: N815
    s3Protocol: Enabled  # noqa: N815
    purgeCache: Enabled  # noqa: N815
    icebergCatalog: IcebergCatalog  # noqa: N815
    vectorBuckets: VectorBuckets  # noqa: N815


class StorageCapabilities(Schema):
    list_v2: bool
    iceberg_catalog: bool


class StorageExternal(Schema):
    upstreamTarget: Literal["main", "canary"]  # noqa: N815


class StorageConfigOut(Schema):
    """Every field the Supabase CLI's schema requires; Berth's templates fill only some."""

    fileSizeLimit: int  # noqa: N815
    features: StorageFeatures
    capabilities: StorageCapabilities
    external: StorageExternal
    migrationVersion: str  # noqa: N815
    databasePoolMode: str  # noqa: N815


class PoolerConfigPatch(Schema):
    default_pool_size: int | None = Field(default=None, ge=1, le=10_000)
    max_client_conn: int | None = Field(default=None, ge=1, le=100_000, description="Berth's addition")
    pool_mode: Literal["transaction"] | None = Field(default=None, description="Deprecated; only transaction")


class PoolerConfigPatched(Schema):
    default_pool_size: int
    max_client_conn: int
    pool_mode: Literal["transaction"]


class LoginRoleIn(Schema):
    read_only: bool


class LoginRoleOut(Schema):
    role: str
    password: str
    ttl_seconds: int


class PoolerConfigOut(Schema):
    identifier: str
    database_type: Literal["PRIMARY"]
    db_user: str
    db_host: str
    db_port: int
    db_name: str
    connection_string: str
    connectionString: str = Field(description="Deprecated alias of connection_string; the CLI requires it")  # noqa: N815
    pool_mode: Literal["transaction", "session"]
    default_pool_size: int | None
    max_client_conn: int | None
    is_using_scram_auth: bool


class UpgradeTarget(Schema):
    postgres_version: str
    release_channel: str
    app_version: str
    method: str = Field(description="Berth: how the upgrade copies the data: logical (seconds of downtime) or dump")


class UpgradeProblem(Schema):
    type: str
    message: str
    target_version: str | None = None
    extension_name: str | None = None


class UpgradeEligibilityOut(Schema):
    eligible: bool
    current_app_version: str
    current_app_version_release_channel: str
    latest_app_version: str
    target_upgrade_versions: list[UpgradeTarget]
    duration_estimate_hours: float
    legacy_auth_custom_roles: list[str]
    objects_to_be_dropped: list[str]
    unsupported_extensions: list[str]
    user_defined_objects_in_internal_schemas: list[str]
    validation_errors: list[UpgradeProblem]
    warnings: list[UpgradeProblem]


class UpgradeIn(Schema):
    target_version: str | int = Field(description="The Postgres major to upgrade to, e.g. '17'")
    release_channel: str | None = None


class UpgradeStarted(Schema):
    tracking_id: str


class DatabaseUpgradeStatus(Schema):
    initiated_at: str
    latest_status_at: str
    target_version: int | None
    status: int = Field(description="0 upgrading, 1 upgraded, 2 failed")
    progress: str
    error: str | None = None


class UpgradeStatusOut(Schema):
    databaseUpgradeStatus: DatabaseUpgradeStatus | None  # noqa: N815 (the platform's field name)


class BackupOut(Schema):
    id: int
    inserted_at: str
    is_physical_backup: bool
    status: str = Field(description="COMPLETED, PENDING, FAILED or REMOVED")


class PhysicalBackupData(Schema):
    earliest_physical_backup_date_unix: int | None = None
    latest_physical_backup_date_unix: int | None = None


class BackupsOut(Schema):
    """The platform's V1BackupsResponse."""

    region: str
    walg_enabled: bool
    pitr_enabled: bool
    backups: list[BackupOut]
    physical_backup_data: PhysicalBackupData


class RestorePitrIn(Schema):
    recovery_time_target_unix: int | str = Field(description="Seconds since 1970-01-01 UTC")


Quantity = str | int  # "64MB", or a number in the parameter's own unit (the CLI sends numbers as such)


class PostgresConfig(Schema):
    """The platform's PostgresConfigResponse: the parameters the team set (others are left out)."""

    checkpoint_timeout: Quantity | None = None
    effective_cache_size: Quantity | None = None
    hot_standby_feedback: bool | None = None
    logical_decoding_work_mem: Quantity | None = None
    maintenance_work_mem: Quantity | None = None
    max_connections: int | None = None
    max_locks_per_transaction: int | None = None
    max_parallel_maintenance_workers: int | None = None
    max_parallel_workers: int | None = None
    max_parallel_workers_per_gather: int | None = None
    max_replication_slots: int | None = None
    max_slot_wal_keep_size: Quantity | None = None
    max_standby_archive_delay: Quantity | None = None
    max_standby_streaming_delay: Quantity | None = None
    max_wal_senders: int | None = None
    max_wal_size: Quantity | None = None
    max_worker_processes: int | None = None
    session_replication_role: Literal["origin", "replica", "local"] | None = None
    shared_buffers: Quantity | None = None
    statement_timeout: Quantity | None = None
    track_activity_query_size: Quantity | None = None
    track_commit_timestamp: bool | None = None
    wal_keep_size: Quantity | None = None
    wal_sender_timeout: Quantity | None = None
    work_mem: Quantity | None = None


class PostgresConfigUpdate(PostgresConfig):
    """The platform's UpdatePostgresConfigBody: the whole set of parameters the team sets (the
    CLI merges with what GET gave unless told to replace), and whether to restart for those
    that need it (default true, as on the platform; false leaves them pending restart)."""

    model_config = ConfigDict(extra="forbid")

    restart_database: bool | None = None


class DatabaseFlag(Schema):
    database: bool


class SslEnforcementIn(Schema):
    requestedConfig: DatabaseFlag  # noqa: N815 (the API's field names)


class SslEnforcementOut(Schema):
    currentConfig: DatabaseFlag  # noqa: N815
    appliedSuccessfully: bool  # noqa: N815


class AllowedCidrs(Schema):
    dbAllowedCidrs: list[str] | None = None  # noqa: N815
    dbAllowedCidrsV6: list[str] | None = None  # noqa: N815


class NetworkRestrictionsOut(Schema):
    entitlement: Literal["allowed"]
    config: AllowedCidrs
    old_config: AllowedCidrs | None = Field(None, description="The ranges before a change not yet applied")
    status: Literal["applied", "stale"]
    applied_at: datetime | None = None
    updated_at: datetime | None = None


class PasswordIn(Schema):
    password: str


class NetworkBansOut(Schema):
    banned_ipv4_addresses: list[str]


class NetworkUnbanIn(Schema):
    ipv4_addresses: list[str]
    requester_ip: bool = Field(False, description="Unban the address this request comes from too")
    identifier: str | None = None


class LintOut(Schema):
    """One finding of an advisor, in the platform's lint shape."""

    name: str
    title: str
    level: Literal["ERROR", "WARN", "INFO"]
    facing: Literal["EXTERNAL", "INTERNAL"]
    categories: list[Literal["PERFORMANCE", "SECURITY"]]
    description: str
    detail: str
    remediation: str
    metadata: dict = Field(description="schema, name, type, and per lint: fkey_name, fkey_columns, indexes")
    cache_key: str


class AdvisorsOut(Schema):
    lints: list[LintOut]


class TypesOut(Schema):
    types: str = Field(description="A TypeScript module: the Database type supabase-js reads, and helpers")
