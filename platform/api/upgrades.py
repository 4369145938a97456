"""/v1/projects/{ref}/upgrade: a project's major upgrade, in the Supabase platform's shapes.

    GET  /v1/projects/{ref}/upgrade/eligibility  ProjectUpgradeEligibilityResponse
    POST /v1/projects/{ref}/upgrade              {target_version} -> {tracking_id}
    GET  /v1/projects/{ref}/upgrade/status       {databaseUpgradeStatus: {...} | null}

Eligibility asks the project's agent within BERTH_AGENT_PAGE_DEADLINE (live data, as a page
would); the POST judges it again and is refused at once, naming the reason, when the target
is not eligible (nothing is queued). The work is operations.upgrades' verbs."""

from django.conf import settings
from django.db import transaction
from ninja import Router
from ninja import Status as Reply

from api.access import caller, project_for
from api.audit import token_used
from api.errors import ApiError
from api.schemas import Message, UpgradeEligibilityOut, UpgradeIn, UpgradeStarted, UpgradeStatusOut
from audit.models import Action
from operations.actions import OperationRefused
from operations.models import Kind
from operations.upgrades import UpgradeRefused, eligibility, request_upgrade, upgrade_status

router = Router(tags=["database version upgrade"])


@router.get(
    "/{ref}/upgrade/eligibility",
    response={200: UpgradeEligibilityOut, 404: Message},
    summary="Whether the project's Postgres can be upgraded, to which majors, and why not",
)
def upgrade_eligibility(request, ref: str):
    project = project_for(request, ref)
    return eligibility(project, deadline=settings.BERTH_AGENT_PAGE_DEADLINE).as_platform()


@router.post(
    "/{ref}/upgrade",
    response={201: UpgradeStarted, 400: Message, 403: Message, 404: Message},
    summary="Upgrade the project's Postgres to a newer major",
)
def upgrade(request, ref: str, body: UpgradeIn):
    project = project_for(request, ref, write=True)
    target = str(body.target_version).strip()
    if not target.isdigit():
        raise ApiError(400, f"target_version must be a major version such as '17', not {body.target_version!r}")
    try:
        with transaction.atomic():
            operation = request_upgrade(project, int(target), actor=caller(request))
            token_used(request, Action.requested(Kind.UPGRADE), project=project)
    except (UpgradeRefused, OperationRefused) as refusal:
        raise ApiError(400, str(refusal)) from None
    return Reply(201, {"tracking_id": str(operation.pk)})


@router.get(
    "/{ref}/upgrade/status",
    response={200: UpgradeStatusOut, 404: Message},
    summary="The latest upgrade of the project's Postgres",
)
def status(request, ref: str, tracking_id: str | None = None):
    return upgrade_status(project_for(request, ref))
