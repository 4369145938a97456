from itertools import groupby

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard import queries
from dashboard.views.common import render_live
from operations.resync import start_template_migration
from templating.manifest import manifest_of
from templating.models import TemplateVersion


def template_summaries(name: str | None = None) -> list[dict]:
    """One entry per template name: its versions newest first, and what the latest one is."""
    versions = queries.template_versions()
    if name is not None:
        versions = versions.filter(name=name)
    summaries = []
    for template, group in groupby(versions, key=lambda v: v.name):
        group = list(group)
        summaries.append({"name": template, "versions": group, "latest": group[0], "manifest": manifest_of(group[0])})
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
    [summary] = template_summaries(name)
    # The settled reply also brings the revision table's project counts up to date (out of band).
    context = {"summary": {**summary, "progress": progress}, "versions_oob": not progress["in_flight"]}
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
    import difflib

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
