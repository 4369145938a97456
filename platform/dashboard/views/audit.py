from django.core.paginator import Paginator
from django.shortcuts import render
from django.views.decorators.http import require_GET

from audit.models import AuditEntry
from dashboard.forms import AuditFilterForm
from dashboard.views.common import PAGE_SIZE


@require_GET
def audit(request):
    """The whole audit trail, newest first, filtered by who, what, project and time."""
    filters = AuditFilterForm(request.GET or None)
    entries = filters.filter(AuditEntry.objects.select_related("project").order_by("-at", "-pk"))
    page = Paginator(entries, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "dashboard/audit.html", {"filters": filters, "page": page, "rows": list(page.object_list)})
