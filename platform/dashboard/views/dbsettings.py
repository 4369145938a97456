"""A project's database settings on the dashboard: what is set, what the server runs (and
what waits for a restart), and the same changes the Management API makes, through the same
verbs (operations.dbsettings, operations.dbpassword)."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from dashboard.forms import DatabasePasswordForm, DatabaseSettingsForm
from dashboard.views.project import get_project
from operations.dbpassword import PasswordRefused, change_database_password
from operations.dbsettings import SettingsRefused, change_settings, settings_of

LABEL = "dashboard"


@require_http_methods(["GET", "POST"])
def database_settings(request, ref):
    project = get_project(ref)
    row = settings_of(project)
    form = DatabaseSettingsForm(initial=DatabaseSettingsForm.initial_for(row))
    password_form = DatabasePasswordForm()
    if request.method == "POST" and request.POST.get("action") == "password":
        password_form = DatabasePasswordForm(request.POST)
        if password_form.is_valid():
            try:
                kept = change_database_password(
                    project, password_form.cleaned_data["password"], actor=request.user, label=LABEL
                )
            except PasswordRefused as refusal:
                messages.error(request, f"Password not changed: {refusal.message}")
            else:
                left = f" Files edited on the host were left as they are: {', '.join(kept)}." if kept else ""
                messages.success(request, f"The database password of {project.ref} is changed.{left}")
                return redirect("dashboard:database_settings", ref)
    elif request.method == "POST":
        form = DatabaseSettingsForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                change_settings(
                    project,
                    actor=request.user,
                    label=LABEL,
                    restart=data["restart"],
                    postgres_config=data["postgres_config"],
                    ssl_enforced=data["ssl_enforced"],
                    allowed_cidrs=data["allowed_cidrs"],
                    allowed_cidrs_v6=data["allowed_cidrs_v6"],
                )
            except SettingsRefused as refusal:
                messages.error(request, f"Not changed: {refusal.message}")
            else:
                messages.success(request, f"The database settings of {project.ref} are applied.")
                return redirect("dashboard:database_settings", ref)
    context = {"project": project, "db_settings": settings_of(project), "form": form, "password_form": password_form}
    return render(request, "dashboard/database_settings.html", context)
