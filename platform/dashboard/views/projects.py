from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import CharField, F, Value
from django.db.models.functions import Coalesce
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from backups.models import Protection
from berth.keyset import paginate
from dashboard import queries
from dashboard.forms import BULK_ACTIONS, BulkActionForm, CreateProjectForm, ProjectFilterForm
from dashboard.views.common import PAGE_SIZE, render_live, safe_next
from hosts.actions import refresh_unseen
from hosts.models import RuntimeHost
from operations.actions import act_on_projects
from operations.creation import create_project
from projects.models import Project

# The status partial answers for at most one page of refs.
MAX_LIVE_REFS = PAGE_SIZE

# Sortable columns: ?sort=KEY (ascending) or ?sort=-KEY; newest first otherwise.
SORTS = {
    "name": "name",
    "ref": "ref",
    "host": "host__name",
    "postgres": "postgres_major",
    "template": "template",
    "status": "status",
    "lastop": "last_activity_at",
    "created": "created_at",
}


def sort_order(value: str, table) -> tuple[str, object, list[str]]:
    """The validated sort key as asked (or "" for the default), the table to page, and the
    keyset ordering.

    A column of the project's own is ordered by itself, ties newest first (reversed with
    the sort), the id last: each such ordering has an index (field, -created_at, -id), or
    a unique one, so a page is one index range scan at any fleet size. The host's name is
    annotated as a non-null `sort_key`, unplaced projects last in either direction; that
    ordering sorts the rows the filters leave, as no index of the project's own orders by
    a host's name.
    """
    key = value.lstrip("-")
    if key not in SORTS:
        return "", table, queries.PROJECT_ORDERING
    field, descending = SORTS[key], value.startswith("-")
    if key == "created":
        return value, table, ["-created_at", "-pk"] if descending else ["created_at", "pk"]
    if key != "host":
        return value, table, [f"-{field}", "created_at", "pk"] if descending else [field, "-created_at", "-pk"]
    table = table.annotate(sort_key=Coalesce(F(field), Value("" if descending else "\uffff"), output_field=CharField()))
    return value, table, ["-sort_key", "-pk"] if descending else ["sort_key", "pk"]


# Failing protections listed above the projects table, oldest failure first.
FAILING_ROWS = 20


@require_GET
def projects(request):
    filters = ProjectFilterForm(request.GET or None)
    sort, table, order = sort_order(request.GET.get("sort", ""), filters.filter(queries.project_table()))
    page = paginate(table, order, request.GET.get("cursor"), PAGE_SIZE)
    rows = page.rows
    context = {
        "filters": filters,
        "page": page,
        "rows": rows,
        "live_refs": [p.ref for p in rows if p.in_flight],
        "any_projects": bool(rows) or Project.objects.live().exists(),
        "bulk_actions": BULK_ACTIONS,
        "sort": sort,
        # Projects whose backups, WAL archiving or restore test are failing, fleet-wide.
        "protection_failing": list(
            Protection.objects.failing().select_related("project").order_by("failure_since")[:FAILING_ROWS]
        ),
        "columns": [
            ("name", "Name"),
            ("ref", "Ref"),
            ("host", "Host"),
            ("postgres", "Postgres"),
            ("template", "Template"),
            ("status", "Status"),
            ("lastop", "Last operation"),
        ],
    }
    return render(request, "dashboard/projects.html", context)


@require_GET
def project_statuses(request):
    """The projects table's status partial: fresh status cells (out-of-band swaps) for the
    given refs, and the poller again for those still in flight, or 286 once all settled."""
    refs = request.GET.getlist("ref")[:MAX_LIVE_REFS]
    rows = list(queries.project_table().filter(ref__in=refs))
    live_refs = [p.ref for p in rows if p.in_flight]
    return render_live(
        request,
        "dashboard/projects.html#live",
        {"rows": rows, "live_refs": live_refs},
        in_flight=bool(live_refs),
    )


@require_POST
def bulk_action(request):
    """One operation per selected project, each requested on its own: a refusal for one
    project never holds back the others, and every refusal is reported with its reason."""
    back = safe_next(request, reverse("dashboard:projects"))
    form = BulkActionForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
        return redirect(back)
    action, refs = form.cleaned_data["action"], form.cleaned_data["refs"]
    outcome = act_on_projects(refs, action, actor=request.user)
    label = dict(BULK_ACTIONS)[action]
    if outcome.queued:
        queued = [f"{operation.project.name} ({operation.project.ref})" for operation in outcome.queued]
        messages.success(request, f"{label} queued for {len(queued)} project(s): {', '.join(queued)}")
    if outcome.refused:
        # One summary, so a long selection does not bury the page in messages.
        named = [f"{r.project.name} ({r})" if r.project else str(r) for r in outcome.refused]
        messages.error(request, f"{label} refused for {len(named)} project(s): {'; '.join(named)}")
    return redirect(back)


@require_http_methods(["GET", "POST"])
def create(request):
    if request.method == "POST":
        form = CreateProjectForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                project = create_project(
                    name=data["name"],
                    postgres_major=data["postgres_major"],
                    template=data["template"],
                    host=data["host"],
                    organization=data["organization"],
                    actor=request.user,
                )
            except ValidationError as error:
                add_errors(form, error)
            else:
                messages.success(request, f"Created {project.name}; provisioning is queued.")
                return redirect("dashboard:project", ref=project.ref)
    else:
        # The template and host picked so far (htmx asks again on each change) narrow the
        # Postgres choices; nothing is judged before it is submitted.
        if not request.htmx:
            # A host never heard from is asked now (within the page deadline), so the form
            # offers what it really runs; right after setup no agent has reported yet.
            hosts = RuntimeHost.objects.filter(accepts_projects=True)
            refresh_unseen(hosts, deadline=settings.BERTH_AGENT_PAGE_DEADLINE)
        form = CreateProjectForm(initial=request.GET.dict())
    template = "dashboard/project_new.html#form" if request.htmx else "dashboard/project_new.html"
    return render(request, template, {"form": form})


def add_errors(form, error: ValidationError) -> None:
    """Show the verb's refusal beside the field it names; what names no field goes on top."""
    if not hasattr(error, "error_dict"):
        form.add_error(None, error)
        return
    for field, errors in error.error_dict.items():
        form.add_error(field if field in form.fields else None, errors)
