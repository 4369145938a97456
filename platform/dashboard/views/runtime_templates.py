from itertools import groupby

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard import queries
from dashboard.views.common import render_live
from operations.resync import start_template_migration
from templating.models import TemplateVersion


def template_summaries() -> list[dict]:
    """One entry per template name: its versions newest first, and its migration progress."""
    summaries = []
    for name, versions in groupby(queries.template_versions(), key=lambda v: v.name):
        versions = list(versions)
        summaries.append({"name": name, "versions": versions, "latest": versions[0]})
    return summaries


@require_GET
def templates(request):
    summaries = template_summaries()
    for summary in summaries:
        summary["progress"] = queries.migration_progress(summary["name"], summary["latest"])
    return render(request, "dashboard/templates.html", {"templates": summaries})


@require_GET
def migration_progress(request, name):
    """The progress partial; polled while the migration is starting or any re-sync is unfinished."""
    latest = TemplateVersion.objects.latest_of(name)
    if latest is None:
        raise Http404("No such template")
    progress = queries.migration_progress(name, latest)
    context = {"summary": {"name": name, "latest": latest, "progress": progress}}
    return render_live(request, "dashboard/templates.html#progress", context, in_flight=progress["in_flight"])


@require_POST
def migrate(request, name):
    """Start the bulk migration of a template's projects to its latest version, in a worker."""
    latest = TemplateVersion.objects.latest_of(name)
    if latest is None:
        raise Http404("No such template")
    start_template_migration(latest, actor=request.user)
    messages.success(
        request, f"Migration of {name} to r{latest.revision} started: a worker queues one re-sync per project behind."
    )
    return redirect("dashboard:templates")
