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
