"""A project's Postgres major upgrade: eligibility (live from its agent, within
BERTH_AGENT_PAGE_DEADLINE) shown before the button; upgrade, rollback and discard are POSTs
to the same verbs as the API and `manage.py upgrade_postgres`."""

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard.views.project import get_project
from operations.actions import OperationRefused
from operations.upgrades import (
    UpgradeRefused,
    eligibility,
    request_upgrade,
    request_upgrade_discard,
    request_upgrade_rollback,
)

LABEL = "dashboard"


def upgrade_context(project) -> dict:
    found = eligibility(project, deadline=settings.BERTH_AGENT_PAGE_DEADLINE)
    # A cluster started before Berth set wal_level = logical: a restart lets the upgrade use
    # logical replication (seconds of downtime) instead of a dump.
    needs_restart = any("wal_level" in w["message"] for w in found.warnings)
    return {"project": project, "eligibility": found, "platform": found.as_platform(), "needs_restart": needs_restart}


@require_GET
def upgrade(request, ref):
    project = get_project(ref)
    context = upgrade_context(project)
    if request.htmx:
        return render(request, "dashboard/upgrade.html#panel", context)
    return render(request, "dashboard/upgrade.html", context)


@require_POST
def upgrade_action(request, ref):
    project = get_project(ref)
    action = request.POST.get("action")
    try:
        if action == "upgrade":
            target = request.POST.get("target", "")
            if not target.isdigit():
                messages.error(request, "Choose the Postgres version to upgrade to.")
                return redirect("dashboard:upgrade", ref)
            request_upgrade(project, int(target), actor=request.user, label=LABEL)
            messages.success(request, f"Upgrade of {project.ref} to PostgreSQL {target} queued.")
        elif action == "rollback":
            request_upgrade_rollback(project, actor=request.user, label=LABEL)
            messages.success(
                request, f"Rollback of {project.ref} to PostgreSQL {project.previous_postgres_major} queued."
            )
        elif action == "discard":
            request_upgrade_discard(project, actor=request.user, label=LABEL)
            messages.success(request, f"The kept PostgreSQL {project.previous_postgres_major} cluster will be removed.")
        else:
            messages.error(request, "Unknown upgrade action.")
            return redirect("dashboard:upgrade", ref)
    except (UpgradeRefused, OperationRefused) as refusal:
        messages.error(request, str(refusal))
        return redirect("dashboard:upgrade", ref)
    return redirect("dashboard:project", ref)
