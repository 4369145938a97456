"""A project's database settings changed by its team (Postgres parameters, SSL enforcement,
network restrictions), applied to its running server by its host's agent.

Why a synchronous agent call and not an operation: the Management API answers these changes
with what the server now runs (`PUT config/database/postgres` returns the configuration,
`ssl-enforcement` says `appliedSuccessfully`), and the CLI prints that answer; the change is
a reload (milliseconds) or, when asked for, one restart, bounded by BERTH_API_SETTINGS_DEADLINE
on the agent and the client. It never moves the project's status (no operation kind's
transitional status applies to a reload), and it holds the agent's runtime lock, so it never
runs beside an operation's command on the same runtime (that one answers busy: 409).

Invariants:
- The rows are written (and audited) before the agent is called, in one transaction, with
  `applying_since` set; a second change meanwhile is refused, so two applies never race.
- After the call, in a second transaction: applied (what the server reported is kept); or
  refused by PostgreSQL, and the rows go back to what they were (the old settings still run);
  or not confirmed (agent unreachable, timeout), and the rows keep the change with `applied`
  false and the reason.
"""

import ipaddress
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from agent.api import SettingsReply, SettingsRequest
from agent.client import AgentError, AgentTimeout
from audit.actions import record
from audit.models import Action
from hosts import agents
from operations import routes
from projects.models import DatabaseSettings, DesiredState, Project
from projects.postgres_config import check_config

# What the agent's refusal codes mean here: PostgreSQL (or the agent's own check) refused the
# settings, and the old ones still run.
REFUSED_CODES = ("settings_rejected", "invalid")
# The fields a change may set, as DatabaseSettings names them.
FIELDS = ("postgres_config", "ssl_enforced", "allowed_cidrs", "allowed_cidrs_v6")


class SettingsRefused(Exception):
    """A change not made; `status` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def settings_of(project: Project) -> DatabaseSettings:
    """The project's settings row; the defaults (nothing set) when it has none yet."""
    return DatabaseSettings.objects.filter(project=project).first() or DatabaseSettings(project=project)


def check_cidrs(cidrs: list[str], version: int) -> list[str]:
    """The ranges, each in its canonical form; a ValidationError names each one that is not an IPv`version` range."""
    found, bad = [], []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(str(cidr).strip(), strict=False)
        except ValueError:
            bad.append(repr(cidr))
            continue
        if network.version != version:
            bad.append(f"{cidr!r} (not IPv{version})")
            continue
        found.append(str(network))
    if bad:
        key = "dbAllowedCidrs" if version == 4 else "dbAllowedCidrsV6"
        raise ValidationError({key: f"not IPv{version} address ranges: {', '.join(bad)}"})
    return list(dict.fromkeys(found))


def change_settings(project: Project, *, actor=None, label: str | None = None, restart: bool = False, **changes):
    """Set some of FIELDS and apply the project's whole settings to its server. Returns the
    settings row as it stands after; raises SettingsRefused (nothing changed) or, when the
    change is stored but not confirmed, SettingsRefused with status 502/504."""
    unknown = set(changes) - set(FIELDS)
    if unknown:
        raise ValueError(f"not a database setting: {', '.join(sorted(unknown))}")
    if project.host_id is None:
        raise SettingsRefused(f"{project.ref} has never been provisioned")
    if project.desired_state != DesiredState.RUNNING:
        raise SettingsRefused(f"{project.ref} is paused; restore it before changing its database settings")
    memory = project.host.capabilities.get("memory_bytes")
    problems = []
    # The parameters the agent will get: the new ones, or those set before, checked again
    # (against the host's memory as it reports it now) before anything is written.
    config = changes.get("postgres_config", settings_of(project).postgres_config)
    try:
        parameters = check_config(config, memory)
    except ValidationError as error:
        problems += error.messages
    for key, version in (("allowed_cidrs", 4), ("allowed_cidrs_v6", 6)):
        try:
            if key in changes:
                changes[key] = check_cidrs(changes[key], version)
        except ValidationError as error:
            problems += error.messages
    if problems:
        raise SettingsRefused("; ".join(problems))

    now = timezone.now()
    with transaction.atomic():
        row, _ = DatabaseSettings.objects.select_for_update().get_or_create(project=project)
        if row.applying_since and now - row.applying_since < timedelta(seconds=settings.BERTH_API_SETTINGS_DEADLINE):
            raise SettingsRefused(f"{project.ref}: another settings change is being applied; try again", status=409)
        if "postgres_config" not in changes and row.postgres_config != config:
            raise SettingsRefused(f"{project.ref}: its settings changed meanwhile; try again", status=409)
        before = {field: getattr(row, field) for field in FIELDS}
        if "allowed_cidrs" in changes or "allowed_cidrs_v6" in changes:
            row.old_allowed_cidrs, row.old_allowed_cidrs_v6 = row.allowed_cidrs, row.allowed_cidrs_v6
        for field, value in changes.items():
            setattr(row, field, value)
        row.applied, row.applying_since = False, now
        row.save()
        record(
            actor,
            Action.PROJECT_DATABASE_SETTINGS,
            project=project,
            detail={"changes": changes, "restart": restart},
            label=label,
        )
    request = SettingsRequest(
        parameters=parameters,
        restart=restart,
        ssl_enforced=row.ssl_enforced,
        allowed_cidrs=[*row.allowed_cidrs, *row.allowed_cidrs_v6],
    )
    deadline = settings.BERTH_API_SETTINGS_DEADLINE
    try:
        reply = agents.client_for(project.host, deadline=deadline + 5).apply_settings(
            project.ref, request, deadline_s=deadline
        )
    except AgentError as error:
        _not_applied(row, before, error)
    _applied(row, reply)
    if "allowed_cidrs" in changes or "allowed_cidrs_v6" in changes:
        # The host's router lets through only the allowed ranges too (operations.routes).
        routes.push_after(project)
    return row


def _applied(row: DatabaseSettings, reply: SettingsReply) -> None:
    row.applied, row.applying_since, row.applied_at, row.apply_error = True, None, timezone.now(), ""
    row.pending_restart, row.running_values = reply.pending_restart, reply.values
    row.old_allowed_cidrs = row.old_allowed_cidrs_v6 = None
    row.save(
        update_fields=[
            "applied",
            "applying_since",
            "applied_at",
            "apply_error",
            "pending_restart",
            "running_values",
            "old_allowed_cidrs",
            "old_allowed_cidrs_v6",
            "updated_at",
        ]
    )


def _not_applied(row: DatabaseSettings, before: dict, error: AgentError):
    message = error.message.split(": ", 1)[-1]
    if error.code in REFUSED_CODES:
        # The server still runs the old settings: the rows say so again.
        for field, value in before.items():
            setattr(row, field, value)
        row.applied, row.applying_since, row.apply_error = True, None, ""
        row.old_allowed_cidrs = row.old_allowed_cidrs_v6 = None
        row.save()
        raise SettingsRefused(message)
    row.applying_since, row.apply_error = None, message
    row.save(update_fields=["applying_since", "apply_error", "updated_at"])
    if isinstance(error, AgentTimeout):
        raise SettingsRefused(f"The project's host did not confirm the change in time: {message}", status=504)
    if error.code == "busy":
        raise SettingsRefused(f"The project's runtime is busy with an operation; try again: {message}", status=409)
    raise SettingsRefused(f"The project's host did not apply the change: {message}", status=502)


def network_bans(project: Project) -> list[str]:
    """The addresses the project's server bans for repeated failed passwords (read from its log now)."""
    return _bans(project, [])


def unban(project: Project, addresses: list[str], *, actor=None, label: str | None = None) -> list[str]:
    """Lift the bans of `addresses`; audited. Returns the addresses still banned."""
    checked = []
    for address in addresses:
        try:
            checked.append(str(ipaddress.ip_address(str(address).strip())))
        except ValueError:
            raise SettingsRefused(f"not an IP address: {address!r}") from None
    banned = _bans(project, checked)
    with transaction.atomic():
        record(actor, Action.PROJECT_NETWORK_UNBAN, project=project, detail={"addresses": checked}, label=label)
    return banned


def _bans(project: Project, unbanned: list[str]) -> list[str]:
    if project.host_id is None:
        raise SettingsRefused(f"{project.ref} has never been provisioned")
    try:
        return agents.client_for(project.host, deadline=settings.BERTH_AGENT_CALL_DEADLINE).bans(project.ref, unbanned)
    except AgentError as error:
        message = error.message.split(": ", 1)[-1]
        if error.code == "invalid":
            raise SettingsRefused(message) from None
        raise SettingsRefused(f"The project's host did not answer: {message}", status=502) from None
