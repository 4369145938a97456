"""/v1/projects/{ref}: config/database/postgres (GET, PUT), ssl-enforcement (GET, PUT),
network-restrictions (GET, POST apply), network-bans (POST retrieve, DELETE): the settings a
team changes on its own database.

Reads answer from the stored settings; writes call operations.dbsettings.change_settings,
which applies them through the project's host's agent and answers with what the server runs.
read_only members may read them and change nothing (403)."""

from typing import Any

from django.db import transaction
from ninja import Router, Status

from api.access import caller, project_for
from api.audit import token_used
from api.errors import ApiError
from api.schemas import (
    AllowedCidrs,
    Message,
    NetworkBansOut,
    NetworkRestrictionsOut,
    NetworkUnbanIn,
    PostgresConfig,
    PostgresConfigUpdate,
    SslEnforcementIn,
    SslEnforcementOut,
)
from audit.models import Action
from operations.dbsettings import SettingsRefused, change_settings, network_bans, settings_of, unban
from projects.models import DatabaseSettings, Project

router = Router(tags=["database settings"])
ERRORS = {400: Message, 403: Message, 404: Message, 409: Message, 502: Message, 504: Message}


def _change(request, project: Project, **changes) -> DatabaseSettings:
    try:
        row = change_settings(project, actor=caller(request), **changes)
    except SettingsRefused as refusal:
        raise ApiError(refusal.status, refusal.message) from None
    with transaction.atomic():
        token_used(request, Action.PROJECT_DATABASE_SETTINGS, project=project)
    return row


@router.get(
    "/{ref}/config/database/postgres",
    response={200: PostgresConfig, 404: Message},
    exclude_none=True,
    summary="The Postgres parameters the team set",
)
def postgres_config(request, ref: str):
    return settings_of(project_for(request, ref)).postgres_config


@router.put(
    "/{ref}/config/database/postgres",
    response={200: PostgresConfig, **ERRORS},
    exclude_none=True,
    summary="Set the Postgres parameters, applied by a reload (or a restart when needed and asked)",
)
def update_postgres_config(request, ref: str, body: PostgresConfigUpdate):
    project = project_for(request, ref, write=True)
    config = body.dict(exclude_none=True)
    restart = config.pop("restart_database", True)
    return _change(request, project, postgres_config=config, restart=restart).postgres_config


def _ssl(row: DatabaseSettings) -> dict:
    return {"currentConfig": {"database": row.ssl_enforced}, "appliedSuccessfully": row.applied}


@router.get("/{ref}/ssl-enforcement", response={200: SslEnforcementOut, 404: Message}, summary="SSL enforcement")
def ssl_enforcement(request, ref: str):
    return _ssl(settings_of(project_for(request, ref)))


@router.put(
    "/{ref}/ssl-enforcement",
    response={200: SslEnforcementOut, **ERRORS},
    summary="Refuse (or allow again) database connections without TLS",
)
def update_ssl_enforcement(request, ref: str, body: SslEnforcementIn):
    project = project_for(request, ref, write=True)
    return _ssl(_change(request, project, ssl_enforced=body.requestedConfig.database))


def _restrictions(row: DatabaseSettings) -> dict:
    reply = {
        "entitlement": "allowed",
        "config": {"dbAllowedCidrs": row.allowed_cidrs, "dbAllowedCidrsV6": row.allowed_cidrs_v6},
        "status": row.restrictions_status,
        "applied_at": row.applied_at,
        "updated_at": row.updated_at if row.pk else None,
    }
    if row.old_allowed_cidrs is not None:
        reply["old_config"] = {"dbAllowedCidrs": row.old_allowed_cidrs, "dbAllowedCidrsV6": row.old_allowed_cidrs_v6}
    return reply


@router.get(
    "/{ref}/network-restrictions",
    response={200: NetworkRestrictionsOut, 404: Message},
    exclude_none=True,
    summary="The client address ranges allowed to reach the database",
)
def network_restrictions(request, ref: str):
    return _restrictions(settings_of(project_for(request, ref)))


@router.post(
    "/{ref}/network-restrictions/apply",
    response={201: NetworkRestrictionsOut, **ERRORS},
    exclude_none=True,
    summary="Allow only these client address ranges (this host's own connections always are)",
)
def apply_network_restrictions(request, ref: str, body: AllowedCidrs):
    project = project_for(request, ref, write=True)
    changes = {}
    if body.dbAllowedCidrs is not None:
        changes["allowed_cidrs"] = body.dbAllowedCidrs
    if body.dbAllowedCidrsV6 is not None:
        changes["allowed_cidrs_v6"] = body.dbAllowedCidrsV6
    return Status(201, _restrictions(_change(request, project, **changes)))


def _ipv4(addresses: list[str]) -> list[str]:
    return [address for address in addresses if ":" not in address]


@router.post(
    "/{ref}/network-bans/retrieve",
    response={201: NetworkBansOut, 400: Message, 404: Message, 502: Message},
    summary="Addresses banned for repeated failed passwords (read from the server's log now)",
)
def retrieve_network_bans(request, ref: str):
    project = project_for(request, ref)
    try:
        banned = network_bans(project)
    except SettingsRefused as refusal:
        raise ApiError(refusal.status, refusal.message) from None
    return Status(201, {"banned_ipv4_addresses": _ipv4(banned)})


@router.delete(
    "/{ref}/network-bans",
    response={200: Any, 400: Message, 403: Message, 404: Message, 502: Message},
    summary="Lift bans",
)
def remove_network_bans(request, ref: str, body: NetworkUnbanIn):
    project = project_for(request, ref, write=True)
    addresses = list(body.ipv4_addresses)
    if body.requester_ip:
        addresses.append(request.META.get("REMOTE_ADDR", ""))
    try:
        unban(project, addresses, actor=caller(request))
    except SettingsRefused as refusal:
        raise ApiError(refusal.status, refusal.message) from None
    with transaction.atomic():
        token_used(request, Action.PROJECT_NETWORK_UNBAN, project=project)
    return Status(200, None)  # JSON null, as the platform answers
