from django.contrib import admin, messages

from projects.models import Project


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
        from operations.actions import OperationRefused, retry_project

        queued = 0
        for project in queryset:
            try:
                retry_project(project, actor=request.user)
            except OperationRefused as refusal:
                self.message_user(request, str(refusal), messages.WARNING)
            else:
                queued += 1
        self.message_user(request, f"Retry queued for {queued} project(s).")

    @admin.action(description="Re-sync to the latest template version")
    def resync_to_latest(self, request, queryset):
        # Queues one re-sync operation per project; the worker does the three-way merge.
        from operations.actions import OperationRefused
        from templating.actions import request_resync_to_latest

        queued = current = 0
        for project in queryset:
            try:
                operation = request_resync_to_latest(project, actor=request.user)
            except OperationRefused as refusal:
                self.message_user(request, f"{project.ref}: {refusal}", messages.WARNING)
                continue
            if operation is None:
                current += 1
            else:
                queued += 1
        self.message_user(request, f"Re-sync queued for {queued} project(s); {current} already on the latest version.")

    def has_add_permission(self, request):
        # A project is created through create_project (dashboard, `manage.py projects create`),
        # which refuses what cannot run and queues the provisioning; a bare row here would not.
        return False
