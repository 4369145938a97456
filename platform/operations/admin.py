from django.contrib import admin

from operations.actions import cancel_operation, fail_operation
from operations.models import Operation, OperationEvent


class OperationEventInline(admin.TabularInline):
    model = OperationEvent
    extra = 0
    can_delete = False
    readonly_fields = ["at", "step", "level", "message", "data"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "kind", "state", "attempt", "created_at", "deadline", "error_code"]
    list_filter = ["state", "kind", "project__host"]
    search_fields = ["project__ref", "project__name", "error_message"]
    list_select_related = ["project"]
    readonly_fields = [
        "project",
        "kind",
        "attempt",
        "params",
        "deadline",
        "heartbeat_at",
        "requested_by",
        "task_id",
        "created_at",
        "started_at",
        "finished_at",
        "desired_before",
        "status_before",
        "status_reason_before",
        "restarted",
        "result",
        "result_message",
        "conflict_paths",
    ]
    inlines = [OperationEventInline]
    actions = ["cancel", "mark_failed"]

    @admin.action(description="Cancel the selected unfinished operations (stops a running one's agent command)")
    def cancel(self, request, queryset):
        cancelled = sum(
            cancel_operation(operation, actor=request.user) for operation in queryset.select_related("project")
        )
        self.message_user(request, f"Cancelled {cancelled} operation(s); finished ones were left as they were.")

    def has_add_permission(self, request):
        # Operations are requested through the verbs (dashboard, commands, the project admin's actions).
        return False

    @admin.action(description="Mark the selected unfinished operations failed")
    def mark_failed(self, request, queryset):
        """For an operation staff know is dead (its worker gone) before the reaper's deadline."""
        reason = f"marked failed in the admin by {request.user.get_username()}"
        marked = sum(
            fail_operation(operation, actor=request.user, reason=reason)
            for operation in queryset.select_related("project")
        )
        self.message_user(request, f"Marked {marked} operation(s) failed; finished ones were left as they were.")
