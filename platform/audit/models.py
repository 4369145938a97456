from django.conf import settings
from django.db import connection, models

# The distinct actions by a skip scan: one probe of the (action, ...) index per action,
# however many entries the trail holds (PostgreSQL reads every row for a plain DISTINCT).
_DISTINCT_ACTIONS = """
WITH RECURSIVE found(action) AS (
    (SELECT action FROM {table} ORDER BY action LIMIT 1)
    UNION ALL
    SELECT (SELECT e.action FROM {table} e WHERE e.action > found.action ORDER BY e.action LIMIT 1)
    FROM found WHERE found.action IS NOT NULL
)
SELECT action FROM found WHERE action IS NOT NULL
"""


class Action:
    """Every action name the audit trail holds, as constants (Zulip names its audit events
    `RealmAuditLog.REALM_DOMAIN_ADDED`): callers name these, never a string of their own, so
    a misspelt action is an AttributeError, not a new action nobody filters for."""

    HOST_CREATE = "host.create"
    HOST_CHANGE = "host.change"
    HOST_OPEN = "host.open"
    HOST_DRAIN = "host.drain"
    ORGANIZATION_CREATE = "organization.create"
    ORGANIZATION_MEMBER_ADD = "organization.member_add"
    ORGANIZATION_MEMBER_ROLE = "organization.member_role"
    ORGANIZATION_MEMBER_REMOVE = "organization.member_remove"
    TOKEN_CREATE = "token.create"
    TOKEN_REVOKE = "token.revoke"
    # A write made with an access token; its detail names the action it made (`action`).
    TOKEN_USE = "token.use"
    TEMPLATE_REGISTER = "template.register"
    PORTS_RELEASE = "ports.release"
    PORTS_RECHECK = "ports.recheck"
    # The repair task corrected a host's block counts (ports.actions.repair_block_counts).
    PORTS_REPAIR_COUNTS = "ports.repair_counts"
    ALERTS_CHANNEL_ADD = "alerts.channel_add"
    ALERTS_CHANNEL_CHANGE = "alerts.channel_change"
    ALERTS_CHANNEL_TEST = "alerts.channel_test"
    ALERTS_INCIDENT_OPEN = "alerts.incident_open"
    ALERTS_INCIDENT_RESOLVE = "alerts.incident_resolve"
    PROJECT_CREATE = "project.create"
    PROJECT_DRIFT = "project.drift"
    PROJECT_RESYNC = "project.resync"
    PROJECT_RESOLVE_CONFLICTS = "project.resolve_conflicts"
    PROJECT_REVEAL_SECRET = "project.reveal_secret"
    PROJECT_REVEAL_API_KEYS = "project.reveal_api_keys"
    PROJECT_QUERY = "project.query"
    PROJECT_POOLER_CONFIG = "project.pooler_config"
    PROJECT_LOGIN_ROLE = "project.login_role"
    PROJECT_LOGIN_ROLE_DELETE = "project.login_role_delete"
    # Database settings (operations.dbsettings): Postgres parameters, SSL enforcement, network
    # restrictions; and the database password (operations.dbpassword).
    PROJECT_DATABASE_SETTINGS = "project.database_settings"
    PROJECT_DATABASE_PASSWORD = "project.database_password"
    PROJECT_NETWORK_UNBAN = "project.network_unban"
    # Major upgrades (operations.upgrades): the new major serves and the old one is kept; the
    # kept one serves again; the kept one was removed.
    PROJECT_POSTGRES_UPGRADED = "project.postgres_upgraded"
    PROJECT_POSTGRES_ROLLED_BACK = "project.postgres_rolled_back"
    PROJECT_POSTGRES_DISCARDED = "project.postgres_discarded"
    # Backups (operations.protection): a runtime set to archive into its repository; a
    # project's data replaced by a restore; a backup repository added or changed (admin).
    PROJECT_PROTECTED = "project.protected"
    PROJECT_RESTORED = "project.restored"
    BACKUP_REPOSITORY_CHANGE = "backups.repository_change"
    OPERATION_CANCEL = "operation.cancel"
    OPERATION_MARK_FAILED = "operation.mark_failed"
    ROLLOUT_START = "rollout.start"
    ROLLOUT_ROLLBACK = "rollout.rollback"
    ROLLOUT_PAUSED = "rollout.paused"
    ROLLOUT_RESUMED = "rollout.running"
    ROLLOUT_CANCELLED = "rollout.cancelled"
    ROLLOUT_HALTED = "rollout.halted"
    ROLLOUT_FINISHED = "rollout.finished"

    @staticmethod
    def requested(kind: str) -> str:
        """An operation of `kind` requested: one action per kind, so a new kind needs no constant."""
        return f"operation.{kind}"


class AuditEntryManager(models.Manager):
    def actions(self) -> list[str]:
        """Every action the whole trail holds, in order; on PostgreSQL in one probe per action."""
        if connection.vendor != "postgresql":
            return list(self.order_by("action").values_list("action", flat=True).distinct())
        with connection.cursor() as cursor:
            cursor.execute(_DISTINCT_ACTIONS.format(table=self.model._meta.db_table))
            return [row[0] for row in cursor.fetchall()]


class AuditEntry(models.Model):
    """Who did what: one row per staff action, written in the same transaction as the action."""

    at = models.DateTimeField(auto_now_add=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Who acted when there is no user (a management command, the reaper), or the username kept.
    actor_label = models.CharField(max_length=150)
    action = models.CharField(max_length=64)
    project = models.ForeignKey(
        "projects.Project", on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_entries"
    )
    detail = models.JSONField(default=dict, blank=True)

    objects = AuditEntryManager()

    class Meta:
        ordering = ["-at", "-pk"]
        verbose_name_plural = "audit entries"
        # The audit page is keyset-paged newest first (the id breaking ties), alone or
        # filtered by action or project: each one index range scan.
        indexes = [
            models.Index(fields=["-at", "-id"], name="audit_newest_first"),
            models.Index(fields=["action", "-at", "-id"], name="audit_action_newest_first"),
            models.Index(fields=["project", "-at", "-id"], name="audit_project_newest_first"),
        ]

    def __str__(self):
        return f"{self.actor_label} {self.action}"
