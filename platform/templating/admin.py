from django.contrib import admin

from berth.admin import ReadOnlyAdmin
from templating.models import TemplateVersion


@admin.register(TemplateVersion)
class TemplateVersionAdmin(ReadOnlyAdmin):
    """Template versions are registered by `manage.py templates sync` and never hand-edited.

    Never deleted either: every version stays renderable and comparable (projects and diffs
    refer to old ones)."""

    list_display = ["name", "revision", "digest", "created_at"]
    list_filter = ["name"]
    search_fields = ["name", "digest"]
