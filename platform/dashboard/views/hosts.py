from django.conf import settings
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard import queries
from dashboard.forms import HostEditForm
from hosts.actions import refresh_host, save_host, set_accepts_projects
from hosts.models import RuntimeHost
from metrics.charts import host_charts


@require_GET
def hosts(request):
    """Hosts as last reported; each row then asks its agent live (htmx, on load)."""
    listed = queries.with_capacity(queries.hosts_with_capacity())
    return render(request, "dashboard/hosts.html", {"hosts": listed, **charts_context(listed)})


@require_GET
def host_charts_part(request):
    return render(
        request, "dashboard/hosts.html#host_charts", charts_context(list(RuntimeHost.objects.order_by("name")))
    )


def charts_context(hosts) -> dict:
    charts = host_charts(hosts)
    return {
        "host_charts": [(host, charts[host.pk]) for host in hosts],
        "collect_minutes": settings.BERTH_METRICS_COLLECT_MINUTES,
    }


@require_GET
def host_agent(request, pk):
    """Live agent data for one host, waited for at most BERTH_AGENT_PAGE_DEADLINE.

    Without JavaScript this is the "refresh now" link: it refreshes, then shows the hosts page.
    """
    host = get_object_or_404(RuntimeHost, pk=pk)
    reachable = refresh_host(host, deadline=settings.BERTH_AGENT_PAGE_DEADLINE)
    if not request.htmx:
        return redirect("dashboard:hosts")
    [host] = queries.with_capacity(queries.hosts_with_capacity().filter(pk=pk))
    return render(request, "dashboard/hosts.html#host_row", {"host": host, "checked": True, "reachable": reachable})


@require_POST
def drain(request, pk):
    """Close the host to new projects (drain) or open it again; its projects are not moved."""
    host = get_object_or_404(RuntimeHost, pk=pk)
    accepts = request.POST.get("accepts") == "1"
    set_accepts_projects(host, accepts, actor=request.user)
    if accepts:
        messages.success(request, f"{host.name} accepts new projects again.")
    else:
        messages.success(request, f"{host.name} is drained: placement puts no new project there; its projects stay.")
    return redirect("dashboard:hosts")


@require_http_methods(["GET", "POST"])
def edit(request, pk):
    """The host's settings, with the admin's rules (the agent token stays write-only)."""
    host = get_object_or_404(RuntimeHost, pk=pk)
    form = HostEditForm(request.POST or None, instance=host)
    if request.method == "POST" and form.is_valid():
        answered = save_host(form.save(commit=False), actor=request.user)
        if answered:
            messages.success(request, f"Saved {host.name}; its agent answered.")
        else:
            messages.error(request, f"Saved {host.name}, but its agent did not answer: {host.last_error}")
        return redirect("dashboard:hosts")
    return render(request, "dashboard/host_edit.html", {"host": host, "form": form})
