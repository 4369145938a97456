from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from berth.keyset import paginate
from dashboard import queries
from dashboard.forms import OperationFilterForm
from dashboard.views.common import PAGE_SIZE, render_live, safe_next
from operations.actions import cancel_operation
from operations.models import Operation, State


@require_GET
def operations(request):
    """The queue and the history. The table re-polls itself while any row on it is unfinished."""
    filters = OperationFilterForm(request.GET or None)
    table = filters.filter(queries.operation_table())
    page = paginate(table, queries.OPERATION_ORDERING, request.GET.get("cursor"), PAGE_SIZE)
    rows = page.rows
    in_flight = any(not op.is_finished for op in rows)
    context = {"filters": filters, "page": page, "rows": rows, "in_flight": in_flight}
    if request.htmx and request.htmx.target == "operations-table":
        return render_live(request, "dashboard/operations.html#table", context, in_flight=in_flight)
    return render(request, "dashboard/operations.html", context)


@require_POST
def cancel(request, pk):
    operation = get_object_or_404(Operation.objects.select_related("project"), pk=pk)
    was_running = operation.state == State.RUNNING
    if cancel_operation(operation, actor=request.user):
        stopping = "; its agent command and what it started are being stopped" if was_running else ""
        messages.success(request, f"Cancelled {operation.kind} of {operation.project.ref}{stopping}.")
    else:
        messages.error(request, f"Not cancelled: {operation.kind} of {operation.project.ref} already ended.")
    return redirect(safe_next(request, reverse("dashboard:operations")))
