"""Rollout pages: the list, one rollout's live progress by wave, its controls, and the three-way diff."""

from django.conf import settings
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from agent.client import AgentError
from berth.keyset import paginate
from dashboard.views.common import PAGE_SIZE, render_live
from operations import rollouts
from operations.actions import OperationRefused
from operations.conflicts import RESOLUTIONS, three_way
from operations.models import Outcome, Rollout, RolloutProject

ACTIONS = {"pause": rollouts.pause, "resume": rollouts.resume, "cancel": rollouts.cancel}


@require_GET
def rollout_list(request):
    """Rollouts, newest first, a keyset page at a time."""
    rows = Rollout.objects.select_related("target", "created_by")
    page = paginate(rows, ["-created_at", "-pk"], request.GET.get("cursor"), PAGE_SIZE)
    return render(request, "dashboard/rollouts.html", {"rows": page.rows, "page": page})


def _context(rollout: Rollout) -> dict:
    counts = rollouts.summary(rollout)
    entries = list(rollout.projects.select_related("project", "from_version", "target_version", "operation"))
    waves = []
    for number in sorted(counts["waves"]):
        members = [entry for entry in entries if entry.wave == number]
        done = sum(entry.outcome not in (Outcome.PENDING, Outcome.RUNNING) for entry in members)
        waves.append({"number": number, "entries": members, "done": done, "size": len(members)})
    in_flight = rollout.is_running or counts["outcomes"][Outcome.RUNNING] > 0
    return {"rollout": rollout, "counts": counts, "waves": waves, "in_flight": in_flight}


@require_GET
def rollout(request, rollout_id):
    """The rollout page; its progress partial polls while the rollout runs or an operation of it is in flight."""
    item = get_object_or_404(Rollout.objects.select_related("target", "rollback_of"), pk=rollout_id)
    context = _context(item)
    if request.htmx and request.htmx.target == "rollout-progress":
        return render_live(request, "dashboard/rollout.html#progress", context, in_flight=context["in_flight"])
    return render(request, "dashboard/rollout.html", context)


@require_POST
def rollout_action(request, rollout_id):
    """pause, resume, cancel, rollback, or resolve every conflicted project one way."""
    item = get_object_or_404(Rollout, pk=rollout_id)
    action = request.POST.get("action", "")
    if action in ACTIONS:
        if ACTIONS[action](item, actor=request.user):
            messages.success(request, f"Rollout #{item.pk}: {action} done.")
        else:
            messages.error(request, f"Rollout #{item.pk} is {item.state}: it cannot {action} now.")
    elif action == "rollback":
        try:
            back = rollouts.rollback(item, actor=request.user)
        except rollouts.RolloutRefused as refusal:
            messages.error(request, str(refusal))
        else:
            messages.success(request, f"Rollback #{back.pk} started.")
            return redirect("dashboard:rollout", back.pk)
    elif action in RESOLUTIONS:
        done = rollouts.resolve_all(item, action, actor=request.user)
        for ref, what in done.items():
            messages.info(request, f"{ref}: {what}")
        if not done:
            messages.error(request, "No conflicted project to resolve.")
    else:
        messages.error(request, f"Unknown action {action!r}.")
    return redirect("dashboard:rollout", item.pk)


@require_POST
def rollout_resolve(request, rollout_id, ref):
    entry = get_object_or_404(RolloutProject.objects.select_related("project"), rollout_id=rollout_id, project__ref=ref)
    how = request.POST.get("how", "")
    try:
        operation = rollouts.resolve(entry, how, actor=request.user)
    except (OperationRefused, rollouts.RolloutRefused) as refusal:
        messages.error(request, str(refusal))
    else:
        messages.success(request, f"{ref}: {how} queued as operation #{operation.pk}.")
    return redirect("dashboard:rollout", rollout_id)


@require_GET
def rollout_diff(request, rollout_id, ref):
    """The three-way view of one conflicted project, read live from its agent within the page deadline."""
    entry = get_object_or_404(
        RolloutProject.objects.select_related("project__host", "project__template_version", "target_version"),
        rollout_id=rollout_id,
        project__ref=ref,
    )
    context = {"entry": entry, "rollout_id": rollout_id, "files": None, "error": ""}
    project = entry.project
    if project.host_id is None:
        context["error"] = "This project has never been provisioned: there is nothing on a host to compare."
    elif project.template_version_id == entry.target_version_id:
        context["error"] = f"{ref} is already on {entry.target_version}: nothing conflicts."
    else:
        try:
            context["files"] = three_way(project, entry.target_version, deadline=settings.BERTH_AGENT_PAGE_DEADLINE)
        except AgentError as error:
            context["error"] = f"agent unreachable: {error}"
    return render(request, "dashboard/rollout_diff.html", context)
