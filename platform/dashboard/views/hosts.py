from django.conf import settings
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET

from dashboard import queries
from hosts.actions import refresh_host
from hosts.models import RuntimeHost


@require_GET
def hosts(request):
    """Hosts as last reported; each row then asks its agent live (htmx, on load)."""
    return render(request, "dashboard/hosts.html", {"hosts": queries.with_capacity(queries.hosts_with_capacity())})


@require_GET
def host_agent(request, pk):
    """Live agent data for one host, waited for at most BERTH_AGENT_PAGE_DEADLINE.

    Without JavaScript this is the "check now" link: it refreshes, then shows the hosts page.
    """
    host = get_object_or_404(RuntimeHost, pk=pk)
    reachable = refresh_host(host, deadline=settings.BERTH_AGENT_PAGE_DEADLINE)
    if not request.htmx:
        return redirect("dashboard:hosts")
    [host] = queries.with_capacity(queries.hosts_with_capacity().filter(pk=pk))
    return render(request, "dashboard/hosts.html#host_row", {"host": host, "checked": True, "reachable": reachable})
