"""/v1/projects: list, read, create, delete, pause, restore, API keys, health, storage config,
database metrics.

Every route resolves the project through api.access, so tenancy is decided in one place.
Writes call the same verbs as the dashboard (operations.creation.create_project,
operations.actions.request_operation) and so pass the same checks and audit."""

import tomllib
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpResponse
from ninja import Query, Router
from ninja import Status as Reply
from prometheus_client import CONTENT_TYPE_LATEST

from api.access import LISTED_ORDER, caller, listed_projects, organization_for_write, project_for
from api.audit import token_used
from api.errors import ApiError
from api.schemas import (
    ApiKeyOut,
    Message,
    ProjectCreate,
    ProjectCreated,
    ProjectDeleted,
    ProjectOut,
    ServiceHealth,
    StorageConfigOut,
)
from audit.models import Action
from berth.keyset import after_row
from hosts.actions import refresh_unseen
from hosts.models import RuntimeHost
from metrics.exposition import latest_sample, render_project
from operations.actions import OperationRefused, request_operation
from operations.creation import DuplicateProjectName, available_majors, check_region, create_project
from operations.models import Kind
from orgs.models import Role
from projects.models import TRANSITIONAL_STATUSES, Project, Status
from templating.manifest import manifest_of
from templating.secrets import key_hash, new_style_api_keys

router = Router(tags=["projects"])

LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 1000
# Supabase's service names -> the template probe that answers for each (the API gateway
# fronts auth, rest, realtime and storage).
SERVICE_PROBES = {
    "db": "db",
    "db_postgres_user": "db",
    "pooler": "pooler",
    "pg_bouncer": "pooler",
    "auth": "api",
    "rest": "api",
    "realtime": "api",
    "storage": "api",
}
WRITE_ERRORS = {404: Message, 403: Message, 400: Message}


def database_host(ref: str) -> str:
    return f"db.{ref}.{settings.BERTH_DATABASE_DOMAIN}"


def project_created(project: Project) -> dict:
    org = project.organization
    return {
        "id": project.ref,
        "ref": project.ref,
        "organization_id": org.slug,
        "organization_slug": org.slug,
        "name": project.name,
        "region": project.region or (project.host.region if project.host else "") or "local",
        "created_at": project.created_at,
        "status": project.status,
    }


def project_out(project: Project) -> dict:
    major = str(project.postgres_major)
    return {
        **project_created(project),
        "database": {
            "host": database_host(project.ref),
            "version": major,
            "postgres_engine": major,
            "release_channel": "ga",
        },
    }


@router.get("", response=list[ProjectOut], summary="List projects in the caller's organizations, newest first")
def list_projects(request, limit: int = LIST_LIMIT_DEFAULT, offset: int = 0, after: str = ""):
    """`after=<ref>` (Berth's addition) gives the projects listed after that one: a keyset
    page, as cheap deep in the list as at its start. `offset` reads and skips the rows before
    the page, so its cost grows with it."""
    if not 1 <= limit <= LIST_LIMIT_MAX or offset < 0:
        raise ApiError(400, f"limit must be 1-{LIST_LIMIT_MAX} and offset at least 0")
    listed = listed_projects(caller(request))
    if after:
        if offset:
            raise ApiError(400, "give either after or offset, not both")
        last = listed.filter(ref=after).first()
        if last is None:
            raise ApiError(400, f"after: no project {after!r} in your list")
        listed = listed.filter(after_row(LISTED_ORDER, last))
    projects = listed[offset : offset + limit]
    return [project_out(project) for project in projects]


@router.get("/{ref}", response={200: ProjectOut, 404: Message}, summary="One project")
def get_project(request, ref: str):
    return project_out(project_for(request, ref))


@router.post(
    "", response={201: ProjectCreated, 400: Message, 403: Message, 409: Message, 422: Message}, summary="Create"
)
def create(request, body: ProjectCreate):
    user = caller(request)
    slug = body.organization_slug or body.organization_id
    if not slug:
        raise ApiError(400, "organization_slug is required")
    org = organization_for_write(request, slug)
    try:
        major = _postgres_major(body.postgres_engine, body.region or "")
        project = create_project(
            name=body.name,
            postgres_major=major,
            template=settings.BERTH_API_TEMPLATE,
            organization=org,
            region=body.region or "",
            postgres_password=body.db_pass,
            actor=user,
        )
    except DuplicateProjectName as error:
        raise ApiError(409, "; ".join(error.messages)) from None
    except ValidationError as error:
        raise ApiError(422, "; ".join(error.messages)) from None
    token_used(request, Action.PROJECT_CREATE, project=project)
    project.organization = org
    return Reply(201, project_created(project))


def _postgres_major(engine: str | None, region: str) -> int:
    """The requested major, or the newest one the API's template can run on some host that
    would take the project (in the region, or unlabelled).

    Only hosts whose agents answer count, as on the dashboard's form (operations.creation.
    available_majors): a host never heard from is asked first, within the page deadline, and
    offers nothing if it does not answer, so no version is promised that no host runs.
    """
    if engine is None:
        accepting = RuntimeHost.objects.filter(accepts_projects=True).order_by("name")
        if region:
            check_region(region)  # a region no host serves is refused as such, not as "no version"
            accepting = accepting.filter(region__in=["", region])
        hosts = list(accepting)
        refresh_unseen(hosts, deadline=settings.BERTH_AGENT_PAGE_DEADLINE)
        majors = sorted({m for host in hosts for m in available_majors(settings.BERTH_API_TEMPLATE, host)})
        if not majors:
            silent = [host.name for host in hosts if not host.reachable]
            detail = f"; hosts whose agents did not answer: {', '.join(silent)}" if silent else ""
            raise ApiError(
                422, f"No Postgres version of template {settings.BERTH_API_TEMPLATE} can run on any host{detail}"
            )
        return majors[-1]
    if not engine.isdigit():
        raise ApiError(422, f"postgres_engine must be a major version such as '15', not {engine!r}")
    return int(engine)


@router.delete("/{ref}", response={200: ProjectDeleted, **WRITE_ERRORS}, summary="Delete a project and its data")
def delete(request, ref: str):
    project = project_for(request, ref, write=True)
    _operate(request, project, Kind.DELETE, params={"purge_data": True})
    return {"id": project.pk, "ref": project.ref, "name": project.name, "slug": project.ref}


@router.post("/{ref}/pause", response={200: Message, **WRITE_ERRORS}, summary="Stop the project's runtime")
def pause(request, ref: str):
    _operate(request, project_for(request, ref, write=True), Kind.STOP)
    return {"message": "Pausing"}


@router.post("/{ref}/restore", response={200: Message, **WRITE_ERRORS}, summary="Start a paused project again")
def restore(request, ref: str):
    _operate(request, project_for(request, ref, write=True), Kind.START)
    return {"message": "Restoring"}


def _operate(request, project: Project, kind: str, params: dict | None = None) -> None:
    user = caller(request)
    try:
        with transaction.atomic():
            request_operation(project, kind, actor=user, params=params)
            token_used(request, Action.requested(kind), project=project)
    except OperationRefused as refusal:
        raise ApiError(400, str(refusal)) from None


@router.get("/{ref}/api-keys", response={200: list[ApiKeyOut], 404: Message}, summary="The project's API keys")
def api_keys(request, ref: str, reveal: bool = False):
    """The legacy JWT keys and the new-style ones, as the platform lists them. A read_only
    member gets the public keys alone (anon, publishable): the others bypass Row Level
    Security. Without `reveal` the new-style secret key is masked, as on the platform."""
    project = project_for(request, ref)
    with transaction.atomic():
        token_used(request, Action.PROJECT_REVEAL_API_KEYS, project=project)
    keys = project.secrets
    new_style = new_style_api_keys(project.ref, keys["jwt_secret"])
    listed = [
        _legacy_key("anon", keys["anon_key"], "Legacy anon API key"),
        _legacy_key("service_role", keys["service_role_key"], "Legacy service_role API key"),
        _new_style_key(project, "publishable", new_style["publishable"], template=None),
        _new_style_key(
            project,
            "secret",
            new_style["secret"] if reveal else _masked(new_style["secret"]),
            template={"role": "service_role"},
            hashed=new_style["secret"],
        ),
    ]
    if project.caller_role == Role.READ_ONLY:
        listed = [key for key in listed if key["id"] in ("anon", _key_id(project, "publishable"))]
    return listed


def _legacy_key(name: str, jwt: str, description: str) -> dict:
    return {
        "name": name,
        "api_key": jwt,
        "id": name,
        "type": "legacy",
        "hash": key_hash(jwt),
        "prefix": jwt.rsplit(".", 1)[-1][:5],
        "description": description,
    }


def _key_id(project: Project, kind: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"berth:{project.ref}:{kind}"))


def _new_style_key(project: Project, kind: str, shown: str, *, template: dict | None, hashed: str = "") -> dict:
    full = hashed or shown
    return {
        "id": _key_id(project, kind),
        "name": "default",
        "type": kind,
        "api_key": shown,
        "description": None,
        "secret_jwt_template": template,
        "hash": key_hash(full),
        "prefix": full[: len(f"sb_{kind}_") + 4],
        "inserted_at": project.created_at,
        "updated_at": project.created_at,
    }


def _masked(api_key: str) -> str:
    visible = len("sb_secret_") + 4
    return api_key[:visible] + "·" * (len(api_key) - visible)


@router.get("/{ref}/health", response={200: list[ServiceHealth], 404: Message}, summary="Health of services")
def health(request, ref: str, services: list[str] = Query(...)):  # noqa: B008 (ninja's declaration)
    """From the last health refresh (the project's observed status); never waits on an agent."""
    project = project_for(request, ref)
    names = [name for item in services for name in item.split(",") if name]
    if unknown := [name for name in names if name not in SERVICE_PROBES]:
        raise ApiError(400, f"Unknown services: {', '.join(unknown)}; known: {', '.join(SERVICE_PROBES)}")
    probes = {probe.name for probe in manifest_of(project.template_version).probes}
    if project.status == Status.ACTIVE_HEALTHY:
        status = "ACTIVE_HEALTHY"
    elif project.status in TRANSITIONAL_STATUSES:
        status = "COMING_UP"
    else:
        status = "UNHEALTHY"
    replies = []
    for name in names:
        if SERVICE_PROBES[name] not in probes:
            replies.append(
                {"name": name, "healthy": False, "status": "UNHEALTHY", "error": "not run by this project's template"}
            )
        else:
            replies.append({"name": name, "healthy": status == "ACTIVE_HEALTHY", "status": status})
    return replies


@router.get("/{ref}/metrics", response={404: Message}, summary="The project's database metrics, for Prometheus")
def metrics(request, ref: str):
    """Prometheus text format, as Supabase's privileged metrics endpoint answers: the project's
    latest sample from the metrics pass (never waits on an agent), with its age."""
    project = project_for(request, ref)
    return HttpResponse(render_project(project, latest_sample(project)), content_type=CONTENT_TYPE_LATEST)


@router.get("/{ref}/config/storage", response={200: StorageConfigOut, 404: Message}, summary="Storage config")
def storage_config(request, ref: str):
    """What the project's template provides: its supabase/config.toml [storage] section, if any."""
    project = project_for(request, ref)
    storage = _template_storage(project.template_version)
    enabled = bool(storage.get("enabled", False))
    images = enabled and bool(storage.get("image_transformation", {}).get("enabled"))
    off = {"enabled": False}
    return {
        "fileSizeLimit": _bytes(storage.get("file_size_limit", "0")) if enabled else 0,
        "features": {
            "imageTransformation": {"enabled": images},
            "s3Protocol": {"enabled": enabled and bool(storage.get("s3_protocol", {}).get("enabled"))},
            "purgeCache": off,
            "icebergCatalog": {**off, "maxNamespaces": 0, "maxTables": 0, "maxCatalogs": 0},
            "vectorBuckets": {**off, "maxBuckets": 0, "maxIndexes": 0},
        },
        "capabilities": {"list_v2": enabled, "iceberg_catalog": False},
        "external": {"upstreamTarget": "main"},
        "migrationVersion": "",
        # Storage keeps a pool of its own database connections (its default), none per request.
        "databasePoolMode": "recycled",
    }


def _template_storage(version) -> dict:
    text = version.files.get("supabase/config.toml")
    if not isinstance(text, str):
        return {}
    try:
        return tomllib.loads(text).get("storage", {})
    except tomllib.TOMLDecodeError:
        return {}


_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}


def _bytes(text) -> int:
    """'50MiB' -> 52428800, as the CLI's config.toml writes sizes."""
    text = str(text).strip().upper()
    digits = text.rstrip("KMGIB")
    unit = text[len(digits) :]
    return int(digits) * _UNITS[unit] if digits.isdigit() and unit in _UNITS else 0
