"""A project's database password changed by its team (`PATCH /v1/projects/{ref}/database/password`).

Order, so that nothing ever holds a password the database does not take: the database first
(through the agent's query call, as the superuser with the old password, sending the new one's
SCRAM secret, never the password itself), then the stored secret with its audit row, then the
runtime files that carry it (re-rendered; a file edited on the host is left alone and named),
then the host's route table (the pooler prepares the project with the superuser's password).
From the first step on, the new password works and the old one no longer does.
"""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from agent.api import QueryRequest
from agent.client import AgentError
from audit.actions import record
from audit.models import Action
from hosts import agents
from operations import routes
from operations.runtime_files import AgentRuntimeFiles
from projects.models import DesiredState, Project
from templating.render import render_project
from templating.secrets import scram_verifier, validate_database_password

QUERY_DEADLINE_S = 10.0


class PasswordRefused(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def change_database_password(project: Project, password: str, *, actor=None, label: str | None = None) -> list[str]:
    """Set the project's `postgres` password. Returns the runtime files left as they were
    because they were edited on the host. Raises PasswordRefused (nothing changed), or, once
    the database took it, PasswordRefused 502 when its files could not follow."""
    try:
        validate_database_password(password)
    except ValidationError as error:
        raise PasswordRefused("; ".join(error.messages)) from None
    if project.host_id is None or project.desired_state != DesiredState.RUNNING:
        raise PasswordRefused(f"{project.ref} is not running; restore it before changing its password")
    try:
        host, port = routes.db_endpoint(project)
    except routes.NoDatabase as error:
        raise PasswordRefused(str(error)) from None
    target = {"port": port, "password": project.secrets["postgres_password"], **({"host": host} if host else {})}
    # The verifier is base64 and `$:` only: safe inside a quoted SQL literal.
    sql = f"ALTER ROLE postgres WITH PASSWORD '{scram_verifier(password)}'"
    try:
        agents.client_for(project.host, deadline=QUERY_DEADLINE_S + 5).query(
            project.ref, QueryRequest(sql=sql, **target), deadline_s=QUERY_DEADLINE_S
        )
    except AgentError as error:
        raise PasswordRefused(f"The project's database did not take the password: {error.message}", 502) from None

    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        locked.secrets = {**locked.secrets, "postgres_password": password}
        locked.save(update_fields=["secrets", "updated_at"])
        record(actor, Action.PROJECT_DATABASE_PASSWORD, project=locked, detail={}, label=label)
    project.secrets = locked.secrets
    transaction.on_commit(lambda: routes.push_after(project))
    try:
        return _files_follow(locked)
    except AgentError as error:
        raise PasswordRefused(
            f"The password is changed, but the project's files on its host were not updated: {error.message}", 502
        ) from None


def _files_follow(project: Project) -> list[str]:
    """Push the managed files whose rendering changed with the password, except those edited on
    the host (their digest there is not the one last pushed); returns those left."""
    rendered = render_project(project, project.template_version)
    changed = sorted(
        path for path, digest in rendered.managed_digests.items() if project.file_digests.get(path) != digest
    )
    if not changed:
        return []
    files = AgentRuntimeFiles(deadline=settings.BERTH_AGENT_CALL_DEADLINE)
    on_host = files.digests(project, changed)
    kept = [path for path in changed if on_host.get(path) not in (None, project.file_digests.get(path))]
    pushed = [path for path in changed if path not in kept]
    if pushed:
        files.push(project, rendered, pushed)
        digests = {**project.file_digests, **{path: rendered.managed_digests[path] for path in pushed}}
        Project.objects.filter(pk=project.pk).update(file_digests=digests)
        project.file_digests = digests
    return kept
