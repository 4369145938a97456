from django.contrib import admin, messages

from berth.admin import ReadOnlyAdmin
from operations.actions import act_on_projects
from projects.models import Project, StatusChange


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = [
        "ref",
        "name",
        "organization",
        "host",
        "postgres_major",
        "template_version",
        "desired_state",
        "status",
        "updated_at",
    ]
    list_filter = ["status", "desired_state", "template", "host", "postgres_major", "organization"]
    search_fields = ["ref", "name"]
    list_select_related = ["host", "template_version", "organization"]
    # Everything the operations own is read-only here: a host or major changed by hand would
    # leave leases and runtimes behind; status moves through the verbs (retry, mark failed).
    readonly_fields = [
        "ref",
        "organization",
        "region",
        "template",
        "template_version",
        "host",
        "postgres_major",
        "desired_state",
        "status",
        "status_reason",
        "probe_failures",
        "drifted_paths",
        "drift_checked_at",
        "file_digests",
        "created_by",
        "created_at",
        "updated_at",
        "status_changed_at",
    ]
    exclude = ["secrets"]
    actions = ["resync_to_latest", "retry"]

    @admin.action(description="Retry the last failed operation")
    def retry(self, request, queryset):
        outcome = act_on_projects(list(queryset.values_list("ref", flat=True)), "retry", actor=request.user)
        for refusal in outcome.refused:
            self.message_user(request, str(refusal), messages.WARNING)
        self.message_user(request, f"Retry queued for {len(outcome.queued)} project(s).")

    @admin.action(description="Re-sync to the latest template version")
    def resync_to_latest(self, request, queryset):
        # Queues one re-sync operation per project; the worker does the three-way merge.
        outcome = act_on_projects(list(queryset.values_list("ref", flat=True)), "resync", actor=request.user)
        current = [r for r in outcome.refused if r.code == "current"]
        for refusal in outcome.refused:
            if refusal.code != "current":
                self.message_user(request, str(refusal), messages.WARNING)
        self.message_user(
            request,
            f"Re-sync queued for {len(outcome.queued)} project(s); {len(current)} already on the latest version.",
        )

    def has_add_permission(self, request):
        # A project is created through create_project (dashboard, `manage.py projects create`),
        # which refuses what cannot run and queues the provisioning; a bare row here would not.
        return False


@admin.register(StatusChange)
class StatusChangeAdmin(ReadOnlyAdmin):
    """Every move of a project's status, written only by the status gate: read here, never edited."""

    list_display = ["at", "project", "old", "new", "cause", "operation_id", "reason"]
    list_filter = ["cause", "new", "old"]
    search_fields = ["project__ref", "reason"]
    list_select_related = ["project"]
