from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from agent.client import AgentError
from audit.actions import record
from audit.models import Action
from dashboard import queries
from dashboard.forms import PROJECT_ACTIONS, ProjectActionForm
from dashboard.views.common import render_live
from hosts import agents
from hosts.models import RuntimeHost
from metrics.charts import project_charts
from operations import protection
from operations.actions import OperationRefused, act_on_project, unavailable_actions
from operations.dbsettings import settings_of
from operations.models import BACKUP_KINDS, State
from projects.actions import record_drift
from projects.models import Status
from templating.manifest import manifest_of
from templating.models import TemplateVersion
from templating.render import RenderError
from templating.resync import paths_to_check, plan_project_resync
from templating.secrets import PUBLIC_KEYS

AUDIT_ROWS = 20
BACKUP_ROWS = 10


def get_project(ref: str):
    project = queries.project_page(ref).first()
    if project is None:
        raise Http404("No such project")
    return project


def status_context(project) -> dict:
    """The status card: status with its reason, what failed and why, and the actions that apply."""
    recent = list(project.operations.order_by("-created_at", "-pk")[:2])
    current = recent[0] if recent and not recent[0].is_finished else None
    last = recent[0] if recent else None
    # The operation that failed, when it is the latest finished one (a retry in flight still shows it).
    finished = [op for op in recent if op.is_finished][:1]
    failed = finished[0] if finished and finished[0].state in (State.FAILED, State.TIMED_OUT) else None
    latest = TemplateVersion.objects.latest_of(project.template)
    why_not = unavailable_actions(
        project,
        last=last,
        in_progress=current is not None,
        update_available=latest is not None and latest.revision > project.template_version.revision,
    )
    return {
        "project": project,
        "current": current,
        "failed": failed,
        "output_tail": output_tail(failed),
        "status_reason": status_reason(project, current, failed),
        "actions": [(value, label) for value, label in PROJECT_ACTIONS if value not in why_not],
        "why_not": [(label, why_not[value]) for value, label in PROJECT_ACTIONS if value in why_not],
    }


def output_tail(operation) -> str:
    """The agent's output kept on the failed operation's last event that has one."""
    if operation is None:
        return ""
    for event in operation.events.order_by("-at", "-pk"):
        if (event.data or {}).get("output_tail"):
            return event.data["output_tail"]
    return ""


def status_reason(project, current, failed) -> str:
    """Why the project shows its status; for UNKNOWN never blank, since grey alone says nothing."""
    if project.status_reason:
        return project.status_reason
    if project.status != Status.UNKNOWN:
        return ""
    if current is not None and current.state == State.QUEUED:
        if current.deadline < timezone.now():
            return f"{current.get_kind_display()} queued, and its queue deadline passed: no worker picked it up."
        return f"{current.get_kind_display()} queued, waiting for a worker."
    if current is not None:
        return f"{current.get_kind_display()} running; the status follows once it reports."
    if failed is not None:
        return f"Its last {failed.get_kind_display().lower()} failed, so nothing is known to run."
    if project.host_id is None:
        return "Never provisioned."
    return "No health report yet: the next refresh asks the host."


def connection_details(project) -> dict:
    """Where to reach the runtime: the host's address and the port of each template slot."""
    block = getattr(project, "port_block", None)
    slots = manifest_of(project.template_version).ports
    address = urlsplit(project.host.agent_url).hostname if project.host else None
    return {
        "address": address,
        "slots": [(slot, block.first_port + offset if block else None) for slot, offset in sorted(slots.items())],
        "db_port": block.first_port + slots["db"] if block and "db" in slots else None,
    }


def secret_rows(project, *, revealed: str | None = None) -> list[tuple[str, str | None]]:
    """(name, value) of each secret the project's template uses; the value is None while it
    stays hidden. Only `revealed` (one name) is shown, besides keys that are not secret."""
    used = project.template_version.secret_names()
    return [
        (name, str(project.secrets[name]) if name == revealed or name in PUBLIC_KEYS else None)
        for name in used
        if name in project.secrets
    ]


def connection_context(project, *, revealed: str | None = None) -> dict:
    return {"connection": connection_details(project), "secrets": secret_rows(project, revealed=revealed)}


def audit_rows(project) -> list:
    return list(project.audit_entries.order_by("-at", "-pk")[:AUDIT_ROWS])


def page_context(project, *, revealed: str | None = None) -> dict:
    return {
        **status_context(project),
        "latest": TemplateVersion.objects.latest_of(project.template),
        "operations": queries.recent_operations(project),
        "status_history": queries.status_history(project),
        "audit": audit_rows(project),
        **connection_context(project, revealed=revealed),
        **charts_context(project),
        **backups_context(project),
        "db_settings": settings_of(project),
    }


def backups_context(project) -> dict:
    """The Backups section: protection, recent base backups, a backup operation in flight."""
    found = protection.protection_of(project)
    running = project.operations.unfinished().filter(kind__in=BACKUP_KINDS).first()
    return {
        "project": project,
        "protection": found,
        "backups": list(project.backups.order_by("-started_at", "-pk")[:BACKUP_ROWS]),
        "backup_running": running,
        "hosts": RuntimeHost.objects.order_by("name"),
    }


def charts_context(project) -> dict:
    return {"charts": project_charts(project), "collect_minutes": settings.BERTH_METRICS_COLLECT_MINUTES}


@require_GET
def project(request, ref):
    return render(request, "dashboard/project.html", page_context(get_project(ref)))


@require_GET
def project_status(request, ref):
    project = get_project(ref)
    context = {**status_context(project), **charts_context(project), "charts_oob": True}
    if not project.in_flight:
        # The last poll: what the finished operation changed (host, ports) shows at once.
        context.update(connection_context(project), connection_oob=True)
    return render_live(request, "dashboard/project.html#status", context, in_flight=project.in_flight)


@require_GET
def project_timeline(request, ref):
    project = get_project(ref)
    context = {"project": project, "operations": queries.recent_operations(project)}
    return render_live(request, "dashboard/project.html#timeline", context, in_flight=project.in_flight)


@require_POST
def project_action(request, ref):
    project = get_project(ref)
    form = ProjectActionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Unknown action.")
        return redirect("dashboard:project", ref=ref)
    action = form.cleaned_data["action"]
    label = dict(PROJECT_ACTIONS)[action]
    params = None
    if action == "delete":
        if form.cleaned_data["confirm_ref"].strip() != project.ref:
            messages.error(request, f"Not deleted: type the project's ref ({project.ref}) to confirm.")
            return redirect("dashboard:project", ref=ref)
        params = {"purge_data": True} if form.cleaned_data["purge_data"] else {}
    try:
        operation = act_on_project(project, action, actor=request.user, params=params)
    except OperationRefused as refusal:
        messages.error(request, f"{label} refused: {refusal}")
    else:
        messages.success(request, f"{label} queued (operation {operation.pk}).")
    return redirect("dashboard:project", ref=ref)


@require_POST
def reveal_secrets(request, ref):
    """Show one of the project's secrets to this staff member, and record that it was shown.

    htmx gets that secret's row, and the audit card again (out of band) with the reveal in it.
    """
    project = get_project(ref)
    name = request.POST.get("name", "")
    if name not in dict(secret_rows(project)):
        return HttpResponseBadRequest("No such secret for this project's template.")
    record(request.user, Action.PROJECT_REVEAL_SECRET, project=project, detail={"secret": name})
    if request.htmx:
        context = {"project": project, "name": name, "value": str(project.secrets[name]), "audit": audit_rows(project)}
        return render(request, "dashboard/project.html#revealed_secret", context)
    return render(request, "dashboard/project.html", page_context(project, revealed=name))


@require_GET
def resync_plan(request, ref):
    """The re-sync plan to the template's latest version, against the files on the host now.

    Live agent data: the agent is asked for its digests within BERTH_AGENT_PAGE_DEADLINE.
    """
    project = get_project(ref)
    context = {"project": project, "plan": plan_context(project, actor=request.user)}
    if request.htmx:
        return render(request, "dashboard/project.html#resync_plan", context)
    return render(request, "dashboard/project.html", {**page_context(project), **context})


def plan_context(project, *, actor) -> dict:
    """The plan to the latest version; the host's digests it reads also record the project's drift."""
    target = TemplateVersion.objects.latest_of(project.template)
    if target is None or target.pk == project.template_version_id:
        return {"note": f"{project.ref} is on the latest version of {project.template}."}
    if project.host is None:
        return {"target": target, "note": "Not provisioned yet: provisioning will render the latest version."}
    try:
        client = agents.client_for(project.host, deadline=settings.BERTH_AGENT_PAGE_DEADLINE)
        host_digests = client.digests(project.ref, paths_to_check(project, target))
    except AgentError as error:
        return {"target": target, "error": f"agent unreachable: {error}"}
    record_drift(project, host_digests, actor=actor)
    try:
        plan, _ = plan_project_resync(project, target, host_digests)
    except (RenderError, ValidationError) as error:
        return {"target": target, "error": f"cannot render {target}: {error}"}
    return {"target": target, "actions": plan.actions, "conflicts": len(plan.conflicts)}
