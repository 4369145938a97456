from django.contrib import admin
from django.db import models

from hosts.models import RuntimeHost


@admin.register(RuntimeHost)
class RuntimeHostAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "agent_url",
        "port_range_start",
        "port_range_end",
        "block_size",
        "region",
        "accepts_projects",
        "last_seen_at",
    ]
    list_filter = ["accepts_projects", "region"]
    search_fields = ["name", "agent_url"]
    readonly_fields = ["capabilities", "last_seen_at", "last_error", "created_at"]
    formfield_overrides = {models.URLField: {"assume_scheme": "http"}}
