"""/v1/projects/{ref}/advisors/security and /advisors/performance: the project's lints.

The lints (api.lints) run as one read-only statement on the project's own database through its
host's agent, like `database/query`, within BERTH_API_QUERY_DEADLINE; nothing is stored, so each
call reads the database as it is now. Reads are not audited (no `token.use` row), as for
every GET."""

from ninja import Router

from api import lints
from api.access import project_for
from api.database import read_only_query
from api.schemas import AdvisorsOut, Message

router = Router(tags=["advisors"])
ERRORS = {200: AdvisorsOut, 400: Message, 404: Message, 502: Message, 504: Message}


@router.get("/{ref}/advisors/security", response=ERRORS, summary="Security lints of the project's database")
def security_advisors(request, ref: str):
    return {"lints": _lints(project_for(request, ref), lints.SECURITY)}


@router.get("/{ref}/advisors/performance", response=ERRORS, summary="Performance lints of the project's database")
def performance_advisors(request, ref: str):
    return {"lints": _lints(project_for(request, ref), lints.PERFORMANCE)}


def _lints(project, kind: str) -> list[dict]:
    return read_only_query(project, lints.lints_sql(kind), what="The advisors")
