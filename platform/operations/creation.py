"""Creating a project: it and the request for its provisioning are one write, so a project
never exists without the operation that will bring it up."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from audit.actions import record
from audit.models import Action
from backups.models import Protection, Repository
from hosts.actions import refresh_host, refresh_unseen
from hosts.models import RuntimeHost
from operations.actions import request_operation
from operations.models import Kind
from orgs.models import Organization, default_organization_id
from projects.models import Project
from templating.manifest import manifest_of
from templating.models import TemplateVersion
from templating.secrets import generate_project_secrets, generate_tls_secrets, validate_database_password
from templating.versions import UnsupportedPostgresVersion, check_postgres_major, supported_majors


class DuplicateProjectName(ValidationError):
    """The organization already has a live project of that name."""


def create_project(
    *,
    name: str,
    postgres_major: int,
    template: str,
    host=None,
    organization=None,
    region: str = "",
    postgres_password: str | None = None,
    actor=None,
    label: str | None = None,
    clone: dict | None = None,
) -> Project:
    """Create a project and queue its provisioning, in one transaction.

    Everything that can be refused (unknown template, a Postgres major the template cannot
    run, a region no host serves, a weak database password, a host that cannot run it or
    whose blocks cannot hold the template's ports, a name the organization already uses) is
    refused here, before anything is leased or started, with a ValidationError keyed by the
    form field it concerns. A host whose agent never answered is asked first, within the
    page deadline, so it is judged by what it really runs. `organization` defaults to the
    default organization; `postgres_password` to a generated one. With `clone` (the params
    operations.protection.clone_params made), its data comes from another project's backups:
    its first operation is a clone instead of a provisioning.

    Every project is protected from the start: its protection row is written with it, and
    its first operation turns WAL archiving on.
    """
    version = TemplateVersion.objects.latest_of(template)
    if version is None:
        raise ValidationError(
            {"template": f"Template {template!r} has no registered version; run `manage.py templates sync`."}
        )
    try:
        check_postgres_major(version, postgres_major)
    except UnsupportedPostgresVersion as error:
        raise ValidationError({"postgres_major": error.message}) from None
    if region:
        check_region(region, host)
    project_secrets = generate_project_secrets()
    if postgres_password is not None:
        validate_database_password(postgres_password)
        project_secrets["postgres_password"] = postgres_password
    # Last: these may ask agents never heard from.
    if host is None:
        _check_some_host_can_take(version, postgres_major, region)
    else:
        _check_host_can_take(version, postgres_major, host)

    project = Project(
        name=name.strip(),
        organization_id=organization.pk if organization else default_organization_id(),
        region=region,
        postgres_major=postgres_major,
        template=template,
        template_version=version,
        host=host,
        secrets=project_secrets,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    project.secrets.update(generate_tls_secrets(project.ref, settings.BERTH_DATABASE_DOMAIN))
    project.full_clean(exclude=["template_version", "host", "created_by", "organization"])
    with transaction.atomic():
        # The organization's row lock makes the name check and the insert one step for
        # concurrent creations in that organization.
        Organization.objects.select_for_update().filter(pk=project.organization_id).values_list("pk").first()
        if Project.objects.live().filter(organization_id=project.organization_id, name=project.name).exists():
            raise DuplicateProjectName(
                {"name": f"The organization already has a project named {project.name!r}."}, code="duplicate"
            )
        project.save()
        detail = {"name": project.name, "template": str(version)}
        if clone is not None:
            detail["clone_of"] = clone["source_ref"]
        record(actor, Action.PROJECT_CREATE, project=project, detail=detail, label=label)
        Protection.objects.create(project=project, repository=Repository.objects.for_host(host))
        if clone is None:
            request_operation(project, Kind.PROVISION, actor=actor, label=label)
        else:
            request_operation(project, Kind.CLONE, actor=actor, label=label, params=clone)
    return project


def check_region(region: str, host=None) -> None:
    """Refuse a region no host that accepts projects serves: hosts labelled with it, or unlabelled.
    Also for callers that pick a default by region before creating (the API's Postgres version)."""
    if host is not None:
        if host.region not in ("", region):
            raise ValidationError({"region": f"Host {host.name} is in region {host.region}, not {region}."})
        return
    hosts = RuntimeHost.objects.filter(accepts_projects=True)
    if not hosts.exists() or hosts.filter(region__in=["", region]).exists():
        return  # no host at all is the host check's refusal
    regions = sorted(set(hosts.values_list("region", flat=True)))
    raise ValidationError({"region": f"No host serves region {region!r}; regions: {', '.join(regions) or 'none'}"})


def _unreachable(host) -> str:
    # No error kept means it was not asked: the deadline ran out on the hosts asked before it.
    met = f" ({host.last_error})" if host.last_error else " (not asked: the deadline had passed)"
    return (
        f"the agent of host {host.name} has never answered and could not be reached now{met}, "
        f"so what it can run is unknown; start it or check its URL and token, then try again "
        f"(`manage.py hosts refresh {host.name}` asks it)"
    )


def _check_host_can_take(version, postgres_major: int, host) -> None:
    if not host.has_reported and not refresh_host(host, deadline=settings.BERTH_AGENT_PAGE_DEADLINE):
        raise ValidationError({"host": f"{_unreachable(host)}.".replace("the", "The", 1)})
    slots = manifest_of(version).slots_needed
    if not host.holds_slots(slots):
        raise ValidationError(
            {
                "host": f"Template {version.name} needs {slots} ports per project, but host {host.name} "
                f"leases blocks of {host.block_size}."
            }
        )
    try:
        check_postgres_major(version, postgres_major, host=host)
    except UnsupportedPostgresVersion as error:
        raise ValidationError({"postgres_major": error.message}) from None


def _check_some_host_can_take(version, postgres_major: int, region: str) -> None:
    """Refuse now what placement could never place: no host that accepts projects (in the
    region, or unlabelled, when one is asked for) has blocks large enough, or every one that
    answered cannot run it. Hosts never heard from are asked first (within the page deadline);
    one that still does not answer is named in the refusal.
    """
    accepting = RuntimeHost.objects.filter(accepts_projects=True)
    if region:
        accepting = accepting.filter(region__in=["", region])
    hosts = list(accepting.order_by("name"))
    if not hosts:
        raise ValidationError({"host": "No runtime host accepts projects; register one in the admin first."})
    slots = manifest_of(version).slots_needed
    fitting = [h for h in hosts if h.holds_slots(slots)]
    if not fitting:
        largest = max(h.block_size for h in hosts)
        raise ValidationError(
            {
                "template": f"Template {version.name} needs {slots} ports per project, but no host that accepts "
                f"projects leases blocks that large (the largest are {largest})."
            }
        )
    refresh_unseen(fitting, deadline=settings.BERTH_AGENT_PAGE_DEADLINE)
    known = [h for h in fitting if h.has_reported]
    if any(h.can_run(version, postgres_major) for h in known):
        return
    unknown = [h for h in fitting if not h.has_reported]
    if not known:
        raise ValidationError({"host": "No host can be judged yet: " + "; ".join(_unreachable(h) for h in unknown)})
    supported = sorted({m for h in known for m in supported_majors(version, h)})
    listed = ", ".join(str(m) for m in supported) or "none"
    message = f"No host can run {version.name} with Postgres {postgres_major}; supported: {listed}"
    if unknown:
        message += ". Not judged: " + "; ".join(_unreachable(h) for h in unknown)
    raise ValidationError({"postgres_major": message})


def available_majors(template: str, host: RuntimeHost | None) -> list[int]:
    """Postgres majors the template's latest version supports on the chosen host or, with
    placement left automatic, on at least one host that accepts projects; only hosts whose
    agents answered count, and only those whose blocks hold the template's ports.

    A host whose agent has not answered offers nothing: what it runs is unknown, and creation
    asks it again before judging.
    """
    version = TemplateVersion.objects.latest_of(template)
    if version is None:
        return []
    hosts = [host] if host is not None else RuntimeHost.objects.filter(accepts_projects=True)
    slots = manifest_of(version).slots_needed
    majors = set()
    for h in hosts:
        if h.reachable and h.holds_slots(slots):
            majors.update(supported_majors(version, h))
    return sorted(majors)
