"""Verbs that create projects and record what their hosts hold. Acting on existing projects
goes through operations.actions."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.actions import record
from operations.actions import request_operation
from operations.models import Kind
from projects.models import Project
from templating.models import TemplateVersion


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
) -> Project:
    """Create a project and queue its provisioning, in one transaction.

    Everything that can be refused (unknown template, a Postgres major the template or the
    chosen host cannot run, a region no host serves, a weak database password, a name the
    organization already uses) is refused here, before anything is leased or started, with
    a ValidationError keyed by the form field it concerns. `organization` defaults to the
    default organization; `postgres_password` to a generated one.
    """
    from orgs.models import Organization, default_organization_id
    from templating.secrets import generate_project_secrets, generate_tls_secrets, validate_database_password
    from templating.versions import UnsupportedPostgresVersion, check_postgres_major

    version = TemplateVersion.objects.latest_of(template)
    if version is None:
        raise ValidationError(
            {"template": f"Template {template!r} has no registered version; run `manage.py templates sync`."}
        )
    try:
        check_postgres_major(version, postgres_major, host=host)
    except UnsupportedPostgresVersion as error:
        raise ValidationError({"postgres_major": str(error)}) from None
    if host is None:
        _check_some_host_can_run(version, postgres_major)
    if region:
        _check_region(region, host)
    project_secrets = generate_project_secrets()
    if postgres_password is not None:
        validate_database_password(postgres_password)
        project_secrets["postgres_password"] = postgres_password

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
        record(
            actor,
            "project.create",
            project=project,
            detail={"name": project.name, "template": str(version)},
            label=label,
        )
        request_operation(project, Kind.PROVISION, actor=actor, label=label)
    return project


def record_drift(project: Project, host_digests: dict[str, str | None], *, actor=None, label: str | None = None):
    """Record which managed files differ on the host from what Berth pushed ("locally modified").

    `host_digests` are the agent's digests (None: absent) read against `project.file_digests`,
    for all of its paths. Returns the drifted paths, or None when nothing was recorded because
    the recorded digests changed since (a re-sync landed meanwhile: the answer judged against
    the wrong base). The audit trail gets a row only when the set of drifted paths changes.
    """
    drifted = sorted(
        path for path, digest in project.file_digests.items() if path in host_digests and host_digests[path] != digest
    )
    with transaction.atomic():
        current = Project.objects.select_for_update().filter(pk=project.pk).values("file_digests", "drifted_paths")
        current = current.first()
        if current is None or current["file_digests"] != project.file_digests:
            return None
        Project.objects.filter(pk=project.pk).update(drifted_paths=drifted, drift_checked_at=timezone.now())
        if drifted != current["drifted_paths"]:
            record(
                actor,
                "project.drift",
                project=project,
                detail={"drifted": drifted, "before": current["drifted_paths"]},
                label=label or "drift check",
            )
    project.drifted_paths = drifted
    return drifted


def _check_region(region: str, host) -> None:
    """Refuse a region no host that accepts projects serves: hosts labelled with it, or unlabelled."""
    from hosts.models import RuntimeHost

    if host is not None:
        if host.region not in ("", region):
            raise ValidationError({"region": f"Host {host.name} is in region {host.region}, not {region}."})
        return
    hosts = RuntimeHost.objects.filter(accepts_projects=True)
    if hosts.filter(region__in=["", region]).exists():
        return
    regions = sorted(set(hosts.values_list("region", flat=True)))
    raise ValidationError({"region": f"No host serves region {region!r}; regions: {', '.join(regions) or 'none'}"})


def _check_some_host_can_run(version, postgres_major: int) -> None:
    """Refuse now what placement could never place: every known host reported it cannot run it.

    Hosts whose agents have not reported yet count as possible; placement asks them.
    """
    from hosts.models import RuntimeHost
    from hosts.placement import can_run
    from templating.versions import supported_majors

    hosts = list(RuntimeHost.objects.filter(accepts_projects=True))
    if any(not h.capabilities or can_run(version, postgres_major, h) for h in hosts):
        return
    if not hosts:
        raise ValidationError({"host": "No runtime host accepts projects; register one in the admin first."})
    supported = sorted({m for h in hosts for m in supported_majors(version, h)})
    listed = ", ".join(str(m) for m in supported) or "none"
    raise ValidationError(
        {"postgres_major": f"No host can run {version.name} with Postgres {postgres_major}; supported: {listed}"}
    )
