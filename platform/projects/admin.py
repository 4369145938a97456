from django.contrib import admin

from projects.models import Project


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = [
        "ref",
        "name",
        "host",
        "postgres_major",
        "template_version",
        "desired_state",
        "status",
        "updated_at",
    ]
    list_filter = ["status", "desired_state", "template", "host", "postgres_major"]
    search_fields = ["ref", "name"]
    list_select_related = ["host", "template_version"]
    readonly_fields = [
        "ref",
        "template",
        "template_version",
        "file_digests",
        "created_by",
        "created_at",
        "updated_at",
        "status_changed_at",
    ]
    exclude = ["secrets"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ["file_digests", "created_by", "created_at", "updated_at", "status_changed_at"]
        return self.readonly_fields
