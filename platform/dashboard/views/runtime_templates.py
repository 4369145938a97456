from itertools import groupby

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard import queries
from dashboard.views.common import render_live
from projects.models import DesiredState, Project
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
    latest = queries.template_versions().filter(name=name).first()
    progress = queries.migration_progress(name, latest) if latest else {"total": 0, "on_latest": 0, "resyncing": 0}
    context = {"summary": {"name": name, "latest": latest, "progress": progress}}
    return render_live(request, "dashboard/templates.html#progress", context, in_flight=bool(progress["resyncing"]))


@require_POST
def migrate(request, name):
    """Start the bulk migration of a template's projects: one re-sync operation each.

    Each request stands alone, so a project that refuses (busy, removed) never holds back
    the rest; refusals are reported, and running the migration again picks them up.
    """
    from operations.actions import OperationRefused
    from templating.actions import request_resync_to_latest

    latest = TemplateVersion.objects.latest_of(name)
    if latest is None:
        raise Http404("No such template")
    queued, refused = 0, []
    pending = Project.objects.live().filter(template=name).exclude(template_version=latest).order_by("ref")
    for project in pending.exclude(desired_state=DesiredState.DELETED):
        try:
            if request_resync_to_latest(project, actor=request.user) is not None:
                queued += 1
        except OperationRefused as refusal:
            refused.append(str(refusal))
    messages.success(request, f"Migration of {name} to r{latest.revision}: {queued} re-sync(s) queued.")
    for reason in refused:
        messages.error(request, f"Re-sync refused: {reason}")
    return redirect("dashboard:templates")
