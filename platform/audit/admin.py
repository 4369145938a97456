from django.contrib import admin

from audit.models import AuditEntry
from berth.admin import ReadOnlyAdmin


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The audit trail is append-only: readable here, never edited."""

    list_display = ["at", "actor_label", "action", "project"]
    list_filter = ["action"]
    search_fields = ["actor_label", "action", "project__ref"]
    list_select_related = ["project"]
