from django.contrib import admin
from django.db import transaction
from django.utils import timezone

from operations.models import UNFINISHED_STATES, Operation, OperationEvent, State


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
    ]
    inlines = [OperationEventInline]
    actions = ["mark_failed"]

    @admin.action(description="Mark the selected unfinished operations failed")
    def mark_failed(self, request, queryset):
        """For an operation staff know is dead (its worker gone) before the reaper's deadline."""
        marked = sum(mark_failed(operation, actor=request.user) for operation in queryset.select_related("project"))
        self.message_user(request, f"Marked {marked} operation(s) failed; finished ones were left as they were.")


def mark_failed(operation: Operation, *, actor) -> bool:
    """Fail an unfinished operation as the reaper would, with the staff member as the cause.

    Conditional on the row still being unfinished, so a worker's verdict that landed first
    stands; the project leaves any transitional status, as after a timeout.
    """
    from audit.actions import record
    from operations import claims
    from projects.models import TRANSITIONAL_STATUSES

    cause = f"marked failed by {actor.get_username()}"
    with transaction.atomic():
        updated = Operation.objects.filter(pk=operation.pk, state__in=UNFINISHED_STATES).update(
            state=State.FAILED, finished_at=timezone.now(), error_code="marked_failed", error_message=cause
        )
        if not updated:
            return False
        project = operation.project
        if operation.state == State.RUNNING or project.status in TRANSITIONAL_STATUSES:
            claims.set_status(project, claims.status_after_timeout(operation), f"{operation.kind} {cause}")
        OperationEvent.objects.create(
            operation=operation, step="marked_failed", level=OperationEvent.Level.ERROR, message=cause.capitalize()
        )
        record(actor, "operation.mark_failed", project=project, detail={"operation": operation.pk})
    return True
