"""A project's Backups section (its protection, base backups, restorable window, WAL
archiving, last verified restore) and its actions. Restore and clone are asked twice: the
first POST shows the chosen point in words, the second (confirm=yes) queues the operation.
All are thin callers of operations.protection's verbs, as the API and `manage.py backups` are."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard.views.common import render_live
from dashboard.views.project import backups_context, get_project, page_context
from hosts.models import RuntimeHost
from operations import protection
from operations.actions import OperationRefused

LABEL = "dashboard"


@require_GET
def backups(request, ref):
    project = get_project(ref)
    context = backups_context(project)
    return render_live(
        request, "dashboard/project.html#backups", context, in_flight=context["backup_running"] is not None
    )


@require_POST
def backups_action(request, ref):
    project = get_project(ref)
    action = request.POST.get("do", "")
    try:
        if action == "backup":
            operation = protection.request_backup(project, actor=request.user, label=LABEL)
        elif action == "verify":
            operation = protection.request_verify(project, actor=request.user, label=LABEL)
        elif action == "protect":
            operation = protection.protect_project(project, actor=request.user, label=LABEL)
        else:
            if action not in ("restore", "clone"):
                messages.error(request, "Unknown backup action.")
                return redirect("dashboard:project", ref)
            return restore_or_clone(request, project, action)
    except OperationRefused as refusal:
        messages.error(request, str(refusal))
    else:
        messages.success(request, f"{operation.get_kind_display().capitalize()} queued (operation {operation.pk}).")
    return redirect("dashboard:project", ref)


def restore_or_clone(request, project, action: str):
    """First POST: the confirmation naming the chosen point (and the clone's name and host).
    Second, with confirm=yes: the verb. The point is `latest` or seconds since the epoch."""
    target = protection.RestoreTarget.parse(request.POST.get("to", "latest"))
    found = protection.protection_of(project)
    if found is not None:
        protection.check_in_window(project, found, target)
    name = request.POST.get("name", "").strip()
    host = RuntimeHost.objects.filter(name=request.POST.get("host", "")).first()
    if action == "clone" and not name:
        raise OperationRefused("Give the new project a name.")
    if request.POST.get("confirm") != "yes":
        asked = {"action": action, "target": target, "to": request.POST.get("to", "latest"), "name": name, "host": host}
        return render(
            request, "dashboard/project.html", {**page_context(project), **backups_context(project), "asked": asked}
        )
    if action == "restore":
        operation = protection.request_restore(project, target, actor=request.user, label=LABEL, host=host)
        messages.success(request, f"Restore to {target.describe()} queued (operation {operation.pk}).")
        return redirect("dashboard:project", project.ref)
    try:
        clone = protection.clone_project(project, target, name=name, host=host, actor=request.user, label=LABEL)
    except ValidationError as error:
        raise OperationRefused("; ".join(error.messages)) from None
    messages.success(request, f"Clone {clone.ref} of {project.ref} as of {target.describe()} queued.")
    return redirect("dashboard:project", clone.ref)
