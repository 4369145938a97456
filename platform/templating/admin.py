from django.contrib import admin

from templating.models import TemplateVersion


@admin.register(TemplateVersion)
class TemplateVersionAdmin(admin.ModelAdmin):
    """Template versions are registered by `manage.py templates sync` and never hand-edited."""

    list_display = ["name", "revision", "digest", "created_at"]
    list_filter = ["name"]
    search_fields = ["name", "digest"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # Every version stays renderable and comparable: projects and diffs refer to old ones.
        return False
