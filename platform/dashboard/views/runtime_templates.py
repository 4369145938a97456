from itertools import groupby

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard import queries
from operations import rollouts
from templating.models import TemplateVersion


def template_summaries() -> list[dict]:
    """One entry per template name: its versions newest first, and how many projects are on the latest."""
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


def _count(request, name: str, default: int, minimum: int) -> int:
    try:
        value = int(request.POST.get(name, default))
    except ValueError:
        return default
    return max(minimum, value)


@require_POST
def migrate(request, name):
    """Start a rollout of the template's projects to its latest revision; the worker drives it."""
    latest = TemplateVersion.objects.latest_of(name)
    if latest is None:
        raise Http404("No such template")
    try:
        rollout = rollouts.start_rollout(
            latest,
            canary=_count(request, "canary", 1, 0),
            wave_size=_count(request, "wave_size", 5, 1),
            concurrency=_count(request, "concurrency", 2, 1),
            actor=request.user,
        )
    except rollouts.RolloutRefused as refusal:
        messages.error(request, str(refusal))
        return redirect("dashboard:templates")
    messages.success(request, f"Rollout #{rollout.pk} of {name} to r{latest.revision} started.")
    return redirect("dashboard:rollout", rollout.pk)
