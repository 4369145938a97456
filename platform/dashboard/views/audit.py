from django.shortcuts import render
from django.views.decorators.http import require_GET

from audit.models import AuditEntry
from berth.keyset import paginate
from dashboard.forms import AuditFilterForm
from dashboard.views.common import PAGE_SIZE

# Newest first, the id breaking ties; AuditEntry's indexes serve it alone and per action or project.
AUDIT_ORDERING = ["-at", "-pk"]


@require_GET
def audit(request):
    """The whole audit trail, newest first, filtered by who, what, project and time, a page
    at a time (keyset: the last page costs what the first does)."""
    filters = AuditFilterForm(request.GET or None)
    entries = filters.filter(AuditEntry.objects.select_related("project"))
    page = paginate(entries, AUDIT_ORDERING, request.GET.get("cursor"), PAGE_SIZE)
    return render(request, "dashboard/audit.html", {"filters": filters, "page": page, "rows": page.rows})
