"""Temporary login roles for the Supabase CLI (`POST/DELETE /v1/projects/{ref}/cli/login-role`).

The CLI asks for one when no database password is given, logs in as it and, because its
name starts with `cli_login_`, steps up with `SET SESSION ROLE postgres` (a member of
`postgres`). A read-only one reads everything (`pg_read_all_data`) in read-only transactions.

Invariants:
- A role can log in only until its TTL ends: its own `VALID UNTIL` says so to the server,
  and to the pooler (pgbouncer.get_auth returns no secret for an expired role).
- No role outlives its TTL by more than a reaper interval: `reap_expired` (every
  BERTH_REAPER_MINUTES) drops each expired role, and the drop itself checks the role is still
  expired in the database, so a role renewed meanwhile is kept. A host that does not answer
  keeps its rows for the next pass (the role cannot log in meanwhile).
- The password is generated here, sent once to the caller and to the database (through the
  agent, which logs no SQL), and stored nowhere.
"""

import logging
import secrets
import string
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agent.api import QueryRequest
from agent.client import AgentError
from audit.actions import record
from audit.models import Action
from hosts import agents
from operations.routes import db_endpoint
from projects.models import LoginRole, Project

log = logging.getLogger(__name__)

ROLES = {False: "cli_login_postgres", True: "cli_login_read_only"}
PASSWORD_LENGTH = 32
QUERY_DEADLINE_S = 10.0


class LoginRoleFailed(Exception):
    """The project's database did not create or drop the role; the message says why."""


def create_login_role(project: Project, *, read_only: bool, actor=None) -> tuple[LoginRole, str]:
    """Create (or renew) the project's CLI login role; returns it with its new password."""
    role = ROLES[read_only]
    password = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(PASSWORD_LENGTH))
    ttl = settings.BERTH_LOGIN_ROLE_TTL
    expires_at = timezone.now() + timedelta(seconds=ttl)
    grants = (
        f"GRANT pg_read_all_data TO {role}; ALTER ROLE {role} SET default_transaction_read_only = on;"
        if read_only
        else f"GRANT postgres TO {role};"
    )
    sql = (
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN "
        f"CREATE ROLE {role}; END IF; END $$; "
        f"ALTER ROLE {role} WITH LOGIN PASSWORD '{password}' VALID UNTIL '{expires_at.isoformat()}'; "
        # The CLI steps up with SET SESSION ROLE, which keeps the login's settings, not the
        # role's: the login carries the search path `postgres` has on a Supabase project.
        f'ALTER ROLE {role} SET search_path TO "$user", public, extensions; '
        f"{grants}"
    )
    _run(project, sql)
    with transaction.atomic():
        login, _ = LoginRole.objects.update_or_create(
            project=project, role=role, defaults={"read_only": read_only, "expires_at": expires_at}
        )
        record(actor, Action.PROJECT_LOGIN_ROLE, project=project, detail={"role": role, "ttl_seconds": ttl})
    return login, password


def delete_login_roles(project: Project, *, actor=None) -> int:
    """Drop every CLI login role of the project now; how many there were."""
    logins = list(project.login_roles.all())
    for login in logins:
        _run(project, _drop_sql(login.role, only_expired=False))
    with transaction.atomic():
        deleted, _ = LoginRole.objects.filter(pk__in=[login.pk for login in logins]).delete()
        record(actor, Action.PROJECT_LOGIN_ROLE_DELETE, project=project, detail={"roles": deleted})
    return deleted


def reap_expired() -> int:
    """Drop the roles whose TTL has ended; how many were dropped."""
    dropped = 0
    expired = LoginRole.objects.filter(expires_at__lte=timezone.now()).select_related(
        "project__host", "project__port_block", "project__template_version"
    )
    for login in expired:
        try:
            [left] = _run(login.project, _drop_sql(login.role, only_expired=True))
        except LoginRoleFailed as error:
            log.warning("login role %s of %s is not dropped yet: %s", login.role, login.project.ref, error)
            continue
        if left["remaining"]:
            continue  # renewed in the database by a request whose row is being written: kept
        dropped += LoginRole.objects.filter(pk=login.pk, expires_at=login.expires_at).delete()[0]
    return dropped


def _drop_sql(role: str, *, only_expired: bool) -> str:
    """Drop the role (what it owns goes to postgres), only once expired if asked; then say
    whether it is still there."""
    condition = " AND rolvaliduntil <= now()" if only_expired else ""
    return (
        f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}'{condition}) THEN "
        f"REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role}; DROP ROLE {role}; END IF; END $$; "
        f"SELECT count(*) AS remaining FROM pg_roles WHERE rolname = '{role}'"
    )


def _run(project: Project, sql: str) -> list[dict]:
    try:
        host, port = db_endpoint(project)
    except Exception as error:
        raise LoginRoleFailed(str(error)) from None
    spec = QueryRequest(
        sql=sql, port=port, host=host, password=project.secrets["postgres_password"], deadline_s=QUERY_DEADLINE_S
    )
    try:
        return agents.client_for(project.host, deadline=QUERY_DEADLINE_S + 5).query(project.ref, spec)
    except AgentError as error:
        raise LoginRoleFailed(error.message.split(": ", 1)[-1]) from None
