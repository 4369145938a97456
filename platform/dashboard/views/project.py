from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from agent.client import AgentError
from audit.actions import record
from dashboard import queries
from dashboard.forms import PROJECT_ACTIONS, ProjectActionForm
from dashboard.views.common import render_live
from hosts import agents
from operations.actions import OperationRefused, act_on_project
from operations.models import UNFINISHED_STATES
from projects.actions import record_drift
from templating.manifest import manifest_of
from templating.models import TemplateVersion
from templating.render import RenderError
from templating.resync import paths_to_check, plan_project_resync
from templating.secrets import PUBLIC_KEYS

AUDIT_ROWS = 20


def get_project(ref: str):
    project = queries.project_page(ref).first()
    if project is None:
        raise Http404("No such project")
    return project


def status_context(project) -> dict:
    return {
        "project": project,
        "current": project.operations.filter(state__in=UNFINISHED_STATES).first(),
        "actions": PROJECT_ACTIONS,
    }


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


def secret_rows(project, *, revealed: bool) -> list[tuple[str, str | None]]:
    """(name, value) of each project secret; the value is None while it stays hidden."""
    return [
        (name, str(value) if revealed or name in PUBLIC_KEYS else None)
        for name, value in sorted(project.secrets.items())
    ]


def connection_context(project, *, revealed: bool) -> dict:
    return {
        "connection": connection_details(project),
        "secrets": secret_rows(project, revealed=revealed),
        "revealed": revealed,
        "postgres_password": project.secrets.get("postgres_password") if revealed else None,
    }


def page_context(project, *, revealed: bool = False) -> dict:
    return {
        **status_context(project),
        "latest": TemplateVersion.objects.latest_of(project.template),
        "operations": queries.recent_operations(project),
        "audit": list(project.audit_entries.order_by("-at", "-pk")[:AUDIT_ROWS]),
        **connection_context(project, revealed=revealed),
    }


@require_GET
def project(request, ref):
    return render(request, "dashboard/project.html", page_context(get_project(ref)))


@require_GET
def project_status(request, ref):
    project = get_project(ref)
    context = status_context(project)
    if not project.in_flight:
        # The last poll: what the finished operation changed (host, ports) shows at once.
        context.update(connection_context(project, revealed=False), connection_oob=True)
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
    """Show the project's secrets to this staff member, and record that they were shown."""
    project = get_project(ref)
    record(request.user, "project.reveal_secrets", project=project, detail={"secrets": sorted(project.secrets)})
    if request.htmx:
        context = {"project": project, **connection_context(project, revealed=True)}
        return render(request, "dashboard/project.html#connection", context)
    return render(request, "dashboard/project.html", page_context(project, revealed=True))


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
