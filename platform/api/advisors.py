"""/v1/projects/{ref}/advisors/security and /advisors/performance: the project's lints.

The lints (api.lints) run as one read-only statement on the project's own database through its
host's agent, like `database/query`, within BERTH_API_QUERY_DEADLINE; nothing is stored, so each
call reads the database as it is now. Reads are not audited (no `token.use` row), as for
every GET."""

from django.conf import settings
from ninja import Router

from agent.api import QueryRequest
from agent.client import AgentError, AgentTimeout
from api import lints
from api.access import project_for
from api.database import query_target
from api.errors import ApiError
from api.schemas import AdvisorsOut, Message
from hosts import agents

router = Router(tags=["advisors"])
ERRORS = {200: AdvisorsOut, 400: Message, 404: Message, 502: Message, 504: Message}


@router.get("/{ref}/advisors/security", response=ERRORS, summary="Security lints of the project's database")
def security_advisors(request, ref: str):
    return {"lints": _lints(project_for(request, ref), lints.SECURITY)}


@router.get("/{ref}/advisors/performance", response=ERRORS, summary="Performance lints of the project's database")
def performance_advisors(request, ref: str):
    return {"lints": _lints(project_for(request, ref), lints.PERFORMANCE)}


def _lints(project, kind: str) -> list[dict]:
    spec = QueryRequest(
        sql=lints.lints_sql(kind),
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
        raise ApiError(504, f"The advisors did not finish within {deadline:g}s") from None
    except AgentError as error:
        if error.code == "query_failed":
            said = error.message.split(": ", 1)[-1]
            raise ApiError(400, f"The advisors could not read the database: {said}") from None
        raise ApiError(502, f"The project's host did not run the advisors: {error.message}") from None
