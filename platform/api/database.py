"""POST /v1/projects/{ref}/database/query and GET /v1/projects/{ref}/config/database/pooler.

Queries run on the project's own database through its host's agent (runtimes listen where
only their host reaches them), within BERTH_API_QUERY_DEADLINE and the row and byte caps.
The audit trail records that a query ran and how it ended, never the SQL or its rows."""

from django.conf import settings
from django.db import transaction
from ninja import Router, Status

from agent.api import QueryRequest
from agent.client import AgentError, AgentTimeout
from api.access import project_for
from api.audit import token_used
from api.errors import ApiError, forbidden
from api.projects import database_host
from api.schemas import Message, PoolerConfigOut, QueryIn
from audit.models import Action
from hosts import agents
from orgs.models import Role
from projects.models import Project
from templating.manifest import manifest_of

router = Router(tags=["database"])
DIRECT_PORT = 5432  # the CLI connects to the pooler host on 5432 whatever the string says


def query_target(project: Project) -> dict:
    """Where the agent finds the project's database: its leased db port and the superuser."""
    block = getattr(project, "port_block", None)
    slots = manifest_of(project.template_version).ports
    if project.host is None or block is None or "db" not in slots:
        raise ApiError(400, f"Project {project.ref} has no database running yet")
    target = {
        "port": block.first_port + slots["db"],
        "user": "postgres",
        "password": project.secrets["postgres_password"],
        "dbname": "postgres",
    }
    if project.host.probe_host_override:
        target["host"] = project.host.probe_host_override
    return target


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


@router.get(
    "/{ref}/config/database/pooler",
    response={200: list[PoolerConfigOut], 404: Message},
    summary="Connection details as the Supabase CLI's link reads them",
)
def pooler_config(request, ref: str):
    project = project_for(request, ref)
    user = f"postgres.{project.ref}"
    host = database_host(project.ref)
    url = f"postgresql://{user}:[YOUR-PASSWORD]@{host}:{DIRECT_PORT}/postgres"
    return [
        {
            "identifier": project.ref,
            "database_type": "PRIMARY",
            "db_user": user,
            "db_host": host,
            "db_port": DIRECT_PORT,
            "db_name": "postgres",
            "connection_string": url,
            "connectionString": url,
            "pool_mode": "session",
            "default_pool_size": None,
            "max_client_conn": None,
            "is_using_scram_auth": True,
        }
    ]
