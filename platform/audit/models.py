from django.conf import settings
from django.db import models


class AuditEntry(models.Model):
    """Who did what: one row per staff action, written in the same transaction as the action."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
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

    class Meta:
        ordering = ["-at", "-pk"]
        verbose_name_plural = "audit entries"

    def __str__(self):
        return f"{self.actor_label} {self.action}"
