from django.contrib import admin, messages

from ports.actions import recheck_blocks, release_ports
from ports.errors import PortCheckFailed
from ports.models import BlockState, PortBlock


class ReusableFilter(admin.SimpleListFilter):
    """Cooling blocks split by whether their cool-down is over (a lease may take them now)."""

    title = "cool-down"
    parameter_name = "cooled"

    def lookups(self, request, model_admin):
        return [("yes", "Cool-down over"), ("no", "Still cooling")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.cooled()
        if self.value() == "no":
            return queryset.filter(state=BlockState.COOLING).exclude(pk__in=queryset.cooled().values("pk"))
        return queryset


@admin.register(PortBlock)
class PortBlockAdmin(admin.ModelAdmin):
    """Leases are read here and changed only through the actions, which keep the invariants."""

    list_display = [
        "host",
        "first_port",
        "last_port",
        "state",
        "project",
        "last_project_ref",
        "leased_at",
        "released_at",
        "checked_at",
        "blocked_reason",
    ]
    list_filter = ["state", ReusableFilter, "host"]
    search_fields = ["project__ref", "last_project_ref", "first_port"]
    list_select_related = ["host", "project"]
    readonly_fields = list_display
    actions = ["release", "recheck"]

    def has_add_permission(self, request):
        # Blocks are laid out from the host's range (ports.actions.sync_port_blocks), never by hand.
        return False

    @admin.action(description="Release the selected leases (their ports cool down before reuse)")
    def release(self, request, queryset):
        released = 0
        for block in queryset.filter(state=BlockState.LEASED).select_related("project"):
            released += release_ports(block.project, actor=request.user) is not None
        self.message_user(request, f"Released {released} leases into their cool-down.")

    @admin.action(description="Re-check the selected blocked blocks")
    def recheck(self, request, queryset):
        try:
            results = recheck_blocks(queryset.filter(state=BlockState.BLOCKED), actor=request.user)
        except PortCheckFailed as error:
            self.message_user(request, str(error), messages.ERROR)
            return
        freed = sum(not r.busy for r in results)
        self.message_user(request, f"Re-checked {len(results)} blocked blocks: {freed} free again.")
