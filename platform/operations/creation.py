"""Creating a project: it and the request for its provisioning are one write, so a project
never exists without the operation that will bring it up."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from audit.actions import record
from hosts.actions import refresh_host, refresh_unseen
from hosts.models import RuntimeHost
from operations.actions import request_operation
from operations.models import Kind
from projects.models import Project
from templating.manifest import manifest_of
from templating.models import TemplateVersion
from templating.secrets import generate_project_secrets
from templating.versions import UnsupportedPostgresVersion, check_postgres_major, supported_majors


def create_project(
    *, name: str, postgres_major: int, template: str, host=None, actor=None, label: str | None = None
) -> Project:
    """Create a project and queue its provisioning, in one transaction.

    Everything that can be refused (unknown template, a Postgres major the template cannot
    run, a host that cannot run it or whose blocks cannot hold the template's ports) is
    refused here, before anything is leased or started, with a ValidationError keyed by the
    form field it concerns. A host whose agent never answered is asked first, within the
    page deadline, so it is judged by what it really runs.
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
    if host is None:
        _check_some_host_can_take(version, postgres_major)
    else:
        _check_host_can_take(version, postgres_major, host)

    project = Project(
        name=name.strip(),
        postgres_major=postgres_major,
        template=template,
        template_version=version,
        host=host,
        secrets=generate_project_secrets(),
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    project.full_clean(exclude=["template_version", "host", "created_by"])
    with transaction.atomic():
        project.save()
        record(
            actor,
            "project.create",
            project=project,
            detail={"name": project.name, "template": str(version)},
            label=label,
        )
        request_operation(project, Kind.PROVISION, actor=actor, label=label)
    return project


def _unreachable(host) -> str:
    return (
        f"the agent of host {host.name} has never answered and could not be reached now ({host.last_error}), "
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


def _check_some_host_can_take(version, postgres_major: int) -> None:
    """Refuse now what placement could never place: no host that accepts projects has blocks
    large enough, or every one that answered cannot run it. Hosts never heard from are asked
    first (within the page deadline); one that still does not answer is named in the refusal.
    """
    hosts = list(RuntimeHost.objects.filter(accepts_projects=True).order_by("name"))
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
