"""GET/POST /v1/organizations, GET /v1/organizations/{slug}."""

from django.core.exceptions import ValidationError
from ninja import Router, Status

from api.access import caller
from api.audit import token_used
from api.errors import ApiError
from api.schemas import Message, OrganizationCreate, OrganizationOut
from audit.models import Action
from orgs.actions import create_organization
from orgs.models import Organization

router = Router(tags=["organizations"])


def organization_out(org: Organization) -> dict:
    return {"id": org.slug, "slug": org.slug, "name": org.name}


@router.get("", response=list[OrganizationOut], summary="List the organizations the caller belongs to")
def list_organizations(request):
    return [organization_out(org) for org in Organization.objects.of_user(caller(request)).order_by("name", "slug")]


@router.post("", response={201: OrganizationOut, 400: Message}, summary="Create an organization; the caller owns it")
def create(request, body: OrganizationCreate):
    user = caller(request)
    try:
        org = create_organization(name=body.name, owner=user, actor=user)
    except ValidationError as error:
        raise ApiError(400, "; ".join(error.messages)) from None
    token_used(request, Action.ORGANIZATION_CREATE, organization=org.slug)
    return Status(201, organization_out(org))


@router.get("/{slug}", response={200: OrganizationOut, 404: Message}, summary="One organization of the caller's")
def get_organization(request, slug: str):
    org = Organization.objects.of_user(caller(request)).filter(slug=slug).first()
    if org is None:
        raise ApiError(404, f"Organization {slug} not found")
    return organization_out(org)
