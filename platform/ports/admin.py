from django.contrib import admin

from ports.models import PortBlock


@admin.register(PortBlock)
class PortBlockAdmin(admin.ModelAdmin):
    list_display = ["host", "first_port", "last_port", "state", "project", "leased_at", "released_at", "checked_at"]
    list_filter = ["state", "host"]
    search_fields = ["project__ref", "last_project_ref", "first_port"]
    list_select_related = ["host", "project"]
    readonly_fields = [
        "host",
        "first_port",
        "last_port",
        "project",
        "leased_at",
        "released_at",
        "last_project_ref",
        "checked_at",
    ]
