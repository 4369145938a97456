"""What the calling token's user may see and do: tenancy is membership in organizations.

A project of an organization the caller does not belong to is answered exactly like a
missing one (404), so refs cannot be probed; writes need a role other than read_only (403).
"""

from django.db.models import F

from api.errors import ApiError, forbidden
from orgs.models import Membership, Organization, Role
from projects.models import Project


def caller(request):
    return request.auth.user


# What a project's API description reads; listing loads nothing else (no secrets, no digests).
LISTED_FIELDS = (
    "ref",
    "name",
    "region",
    "created_at",
    "status",
    "postgres_major",
    "organization__slug",
    "host__region",
)


LISTED_ORDER = ["-created_at", "-pk"]


def listed_projects(user):
    """Live projects in the user's organizations, newest first, for listing.

    The organizations are a subquery rather than a join, so PostgreSQL can walk the
    (created_at, id) index newest first and stop at the page's end, however many projects
    the organizations hold."""
    orgs = Membership.objects.filter(user=user).values("organization_id")
    return (
        Project.objects.live()
        .filter(organization_id__in=orgs)
        .select_related("organization", "host")
        .only(*LISTED_FIELDS)
        .order_by(*LISTED_ORDER)
    )


def projects_of(user):
    """Live projects in the user's organizations, each annotated with the user's role there."""
    # The annotation reuses the filter's join: the role is that of the user's own membership row.
    return (
        Project.objects.live()
        .filter(organization__memberships__user=user)
        .annotate(caller_role=F("organization__memberships__role"))
        .select_related("organization", "host")
    )


def project_for(request, ref: str, *, write: bool = False) -> Project:
    project = projects_of(caller(request)).filter(ref=ref).first()
    if project is None:
        raise ApiError(404, f"Project {ref} not found")
    if write and project.caller_role == Role.READ_ONLY:
        raise forbidden("Your role in this project's organization is read_only")
    return project


def organization_for_write(request, slug: str) -> Organization:
    """The organization, when the caller may create in it; 403 alike for unknown and not-a-member."""
    membership = (
        Membership.objects.select_related("organization").filter(organization__slug=slug, user=caller(request)).first()
    )
    if membership is None:
        raise forbidden(f"You are not a member of organization {slug}")
    if not membership.can_write:
        raise forbidden(f"Your role in organization {slug} is read_only")
    return membership.organization
