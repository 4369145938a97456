import difflib
from itertools import groupby

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard import queries
from operations import rollouts
from templating.manifest import manifest_of
from templating.models import TemplateVersion


def template_summaries() -> list[dict]:
    """One entry per template name: its versions newest first, and what the latest one is."""
    summaries = []
    for template, group in groupby(queries.template_versions(), key=lambda v: v.name):
        group = list(group)
        summaries.append({"name": template, "versions": group, "latest": group[0], "manifest": manifest_of(group[0])})
    return summaries


@require_GET
def templates(request):
    summaries = template_summaries()
    for summary in summaries:
        summary["progress"] = queries.migration_progress(summary["name"], summary["versions"])
    return render(request, "dashboard/templates.html", {"templates": summaries, "count_cap": f"{queries.COUNT_CAP:,}"})


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


@require_GET
def diff(request, name):
    """What changed in a template between two of its revisions (?a=N&b=M), file by file."""
    versions = {v.revision: v for v in TemplateVersion.objects.filter(name=name)}
    if not versions:
        raise Http404("No such template")
    newest = max(versions)
    try:
        a = int(request.GET.get("a", newest - 1 if newest > 1 else newest))
        b = int(request.GET.get("b", newest))
    except ValueError:
        a, b = newest - 1, newest
    old, new = versions.get(a), versions.get(b)
    files = file_diffs(old, new) if old and new else []
    context = {
        "name": name,
        "revisions": sorted(versions, reverse=True),
        "a": a,
        "b": b,
        "old": old,
        "new": new,
        "files": files,
    }
    return render(request, "dashboard/template_diff.html", context)


def file_diffs(old: TemplateVersion, new: TemplateVersion) -> list[dict]:
    """Each path that differs between two versions (the manifest included), with a unified diff."""

    def texts(version):
        return {"manifest.toml": version.manifest, **version.files}

    before, after = texts(old), texts(new)
    changed = []
    for path in sorted(set(before) | set(after)):
        if before.get(path) == after.get(path):
            continue
        lines = difflib.unified_diff(
            (before.get(path) or "").splitlines(keepends=True),
            (after.get(path) or "").splitlines(keepends=True),
            fromfile=f"r{old.revision}/{path}",
            tofile=f"r{new.revision}/{path}",
        )
        state = "added" if path not in before else "removed" if path not in after else "changed"
        changed.append({"path": path, "state": state, "diff": "".join(lines)})
    return changed
