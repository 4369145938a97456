"""/v1/projects/{ref}: database/query, config/database/pooler (GET, PATCH), cli/login-role (POST,
DELETE), database/password (PATCH).

Queries run on the project's own database through its host's agent (runtimes listen where
only their host reaches them), within BERTH_API_QUERY_DEADLINE and the row and byte caps.
The audit trail records that a query ran and how it ended, never the SQL or its rows.
The pooler's address is the project's host's router (agent.router); login roles are
operations.login_roles'."""

from django.conf import settings
from django.db import transaction
from ninja import Router, Status

from agent.api import QueryRequest
from agent.client import AgentError, AgentTimeout
from api.access import caller, project_for
from api.audit import token_used
from api.errors import ApiError, forbidden
from api.schemas import (
    LoginRoleIn,
    LoginRoleOut,
    Message,
    PasswordIn,
    PoolerConfigOut,
    PoolerConfigPatch,
    PoolerConfigPatched,
    QueryIn,
)
from audit.models import Action
from hosts import agents
from hosts.models import default_pooler_host
from operations import routes
from operations.dbpassword import PasswordRefused, change_database_password
from operations.login_roles import LoginRoleFailed, create_login_role, delete_login_roles
from orgs.models import Role
from projects.models import Project

router = Router(tags=["database"])
POOLER_PORT = 6543  # transaction mode; the CLI's link turns it into 5432 (session mode) for itself


def query_target(project: Project) -> dict:
    """Where the agent finds the project's database: its leased db port and the superuser."""
    try:
        host, port = routes.db_endpoint(project)
    except routes.NoDatabase as error:
        raise ApiError(400, str(error)) from None
    target = {"port": port, "user": "postgres", "password": project.secrets["postgres_password"], "dbname": "postgres"}
    if host:
        target["host"] = host
    return target


def read_only_query(project: Project, sql: str, what: str) -> list[dict]:
    """Berth's own read-only SQL (advisors, type generation) on the project's database, through
    its agent within BERTH_API_QUERY_DEADLINE; `what` names the caller in refusals."""
    spec = QueryRequest(
        sql=sql,
        read_only=True,
        max_rows=settings.BERTH_API_QUERY_MAX_ROWS,
        max_bytes=settings.BERTH_API_QUERY_MAX_BYTES,
        **query_target(project),
    )
    deadline = settings.BERTH_API_QUERY_DEADLINE
    client = agents.client_for(project.host, deadline=deadline + 5)
    try:
        return client.query(project.ref, spec, deadline_s=deadline)
    except AgentTimeout:
        raise ApiError(504, f"{what} did not finish within {deadline:g}s") from None
    except AgentError as error:
        if error.code == "query_failed":
            said = error.message.split(": ", 1)[-1]
            raise ApiError(400, f"{what} could not read the database: {said}") from None
        raise ApiError(502, f"The project's host did not run {what.lower()}: {error.message}") from None


@router.post(
    "/{ref}/database/query",
    response={201: list[dict], 400: Message, 403: Message, 404: Message, 504: Message},
    summary="Run SQL on the project's database",
)
def run_query(request, ref: str, body: QueryIn):
    project = project_for(request, ref)
    if project.caller_role == Role.READ_ONLY and not body.read_only:
        raise forbidden("Your role is read_only: send read_only: true")
    if body.parameters:
        raise ApiError(400, "Query parameters are not supported; inline the values")
    spec = QueryRequest(
        sql=body.query,
        read_only=body.read_only,
        max_rows=settings.BERTH_API_QUERY_MAX_ROWS,
        max_bytes=settings.BERTH_API_QUERY_MAX_BYTES,
        **query_target(project),
    )
    deadline = settings.BERTH_API_QUERY_DEADLINE
    client = agents.client_for(project.host, deadline=deadline + 5)
    try:
        rows = client.query(project.ref, spec, deadline_s=deadline)
    except AgentTimeout:
        _audit(request, project, body, "timeout")
        raise ApiError(504, f"The query did not finish within {deadline:g}s") from None
    except AgentError as error:
        _audit(request, project, body, error.code)
        if error.code == "query_failed":
            raise ApiError(400, error.message.split(": ", 1)[-1]) from None
        raise ApiError(502, f"The project's host did not run the query: {error.message}") from None
    _audit(request, project, body, "ok", rows=len(rows))
    return Status(201, rows)


def _audit(request, project, body: QueryIn, outcome: str, **detail) -> None:
    with transaction.atomic():
        token_used(request, Action.PROJECT_QUERY, project=project, read_only=body.read_only, outcome=outcome, **detail)


def pooler_host(project: Project) -> str:
    return project.host.pooler_address() if project.host else default_pooler_host()


@router.get(
    "/{ref}/config/database/pooler",
    response={200: list[PoolerConfigOut], 404: Message},
    summary="The pooler's address and settings (the project's host's router, PgBouncer in transaction mode)",
)
def pooler_config(request, ref: str):
    project = project_for(request, ref)
    user, host = f"postgres.{project.ref}", pooler_host(project)
    url = f"postgresql://{user}:[YOUR-PASSWORD]@{host}:{POOLER_PORT}/postgres"
    return [
        {
            "identifier": project.ref,
            "database_type": "PRIMARY",
            "db_user": user,
            "db_host": host,
            "db_port": POOLER_PORT,
            "db_name": "postgres",
            "connection_string": url,
            "connectionString": url,
            "pool_mode": "transaction",
            "default_pool_size": project.pool_size,
            "max_client_conn": project.max_client_conn,
            "is_using_scram_auth": True,
        }
    ]


@router.patch(
    "/{ref}/config/database/pooler",
    response={200: PoolerConfigPatched, 400: Message, 403: Message, 404: Message},
    summary="Change the pooler's pool size and client connection limit",
)
def update_pooler_config(request, ref: str, body: PoolerConfigPatch):
    project = project_for(request, ref, write=True)
    changes = {
        name: value
        for name, value in (("pool_size", body.default_pool_size), ("max_client_conn", body.max_client_conn))
        if value is not None
    }
    with transaction.atomic():
        Project.objects.filter(pk=project.pk).update(**changes)
        token_used(request, Action.PROJECT_POOLER_CONFIG, project=project, **changes)
    project.refresh_from_db(fields=["pool_size", "max_client_conn"])
    if changes:
        transaction.on_commit(lambda: routes.push_after(project))
    return {
        "default_pool_size": project.pool_size,
        "max_client_conn": project.max_client_conn,
        "pool_mode": "transaction",
    }


@router.post(
    "/{ref}/cli/login-role",
    response={201: LoginRoleOut, 400: Message, 403: Message, 404: Message, 502: Message},
    summary="A temporary login role for the CLI (dropped when its TTL ends)",
)
def create_cli_login_role(request, ref: str, body: LoginRoleIn):
    project = project_for(request, ref)
    if project.caller_role == Role.READ_ONLY and not body.read_only:
        raise forbidden("Your role is read_only: send read_only: true")
    try:
        login, password = create_login_role(project, read_only=body.read_only, actor=caller(request))
    except LoginRoleFailed as error:
        raise ApiError(502, f"The project's database did not create the role: {error}") from None
    with transaction.atomic():
        token_used(request, Action.PROJECT_LOGIN_ROLE, project=project, role=login.role)
    return Status(201, {"role": login.role, "password": password, "ttl_seconds": settings.BERTH_LOGIN_ROLE_TTL})


@router.delete(
    "/{ref}/cli/login-role",
    response={200: Message, 403: Message, 404: Message, 502: Message},
    summary="Drop the project's CLI login roles now",
)
def delete_cli_login_roles(request, ref: str):
    project = project_for(request, ref, write=True)
    try:
        delete_login_roles(project, actor=caller(request))
    except LoginRoleFailed as error:
        raise ApiError(502, f"The project's database did not drop the roles: {error}") from None
    with transaction.atomic():
        token_used(request, Action.PROJECT_LOGIN_ROLE_DELETE, project=project)
    return {"message": "ok"}


@router.patch(
    "/{ref}/database/password",
    response={200: Message, 400: Message, 403: Message, 404: Message, 502: Message},
    summary="Change the database password of the postgres role",
)
def update_database_password(request, ref: str, body: PasswordIn):
    """The new password works when this answers and the old one no longer does; the stored
    secret and the runtime files that carry it follow (operations.dbpassword)."""
    project = project_for(request, ref, write=True)
    try:
        kept = change_database_password(project, body.password, actor=caller(request))
    except PasswordRefused as refusal:
        raise ApiError(refusal.status, refusal.message) from None
    with transaction.atomic():
        token_used(request, Action.PROJECT_DATABASE_PASSWORD, project=project)
    if kept:
        return {"message": f"Password updated; files edited on the host were left as they are: {', '.join(kept)}"}
    return {"message": "Password updated"}
