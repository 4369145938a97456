from django import forms

from alerts.models import Channel
from audit.models import AuditEntry
from hosts.admin import RuntimeHostForm
from hosts.models import RuntimeHost
from operations.creation import available_majors
from operations.models import UNFINISHED_STATES, Kind, State
from orgs.models import Organization
from projects.models import Project, Status
from projects.postgres_config import PARAMETERS
from templating.models import TemplateVersion

# What the bulk form and the project page may ask for, in the order buttons show them.
BULK_ACTIONS = [
    ("start", "Start"),
    ("stop", "Stop"),
    ("restart", "Restart"),
    ("retry", "Retry"),
    ("resync", "Re-sync"),
]
PROJECT_ACTIONS = [*BULK_ACTIONS, ("delete", "Delete")]

DRIFT_CHOICES = [
    ("", "Any template state"),
    ("update", "Update available"),
    ("current", "On the latest version"),
    ("modified", "Locally modified"),
]


def template_names() -> list[str]:
    return list(TemplateVersion.objects.order_by("name").values_list("name", flat=True).distinct())


class ProjectFilterForm(forms.Form):
    """The projects table's filters (GET). An invalid value filters nothing rather than erroring."""

    q = forms.CharField(required=False, label="Search", max_length=100)
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Status.choices])
    host = forms.ModelChoiceField(
        required=False, queryset=RuntimeHost.objects.order_by("name"), to_field_name="name", empty_label="Any host"
    )
    template = forms.ChoiceField(required=False)
    drift = forms.ChoiceField(required=False, choices=DRIFT_CHOICES, label="Template")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["template"].choices = [("", "Any template"), *((n, n) for n in template_names())]

    def filter(self, projects):
        if not self.is_valid():
            return projects
        data = self.cleaned_data
        if data["q"]:
            projects = projects.search(data["q"])
        if data["status"]:
            projects = projects.filter(status=data["status"])
        if data["host"]:
            projects = projects.filter(host=data["host"])
        if data["template"]:
            projects = projects.filter(template=data["template"])
        if data["drift"] == "update":
            projects = projects.filter(update_available=True)
        elif data["drift"] == "current":
            projects = projects.filter(update_available=False)
        elif data["drift"] == "modified":
            projects = projects.exclude(drifted_paths=[])
        return projects


class BulkActionForm(forms.Form):
    action = forms.ChoiceField(choices=BULK_ACTIONS)
    refs = forms.MultipleChoiceField(error_messages={"required": "Select at least one project."})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Any ref shape is accepted here; the projects that exist are looked up by the view,
        # and a ref that matches none is reported like any other refusal.
        self.fields["refs"].valid_value = lambda value: True


class ProjectActionForm(forms.Form):
    action = forms.ChoiceField(choices=PROJECT_ACTIONS)
    purge_data = forms.BooleanField(required=False)
    # Delete asks for the ref typed back, so one stray click never removes a project.
    confirm_ref = forms.CharField(required=False)


class CreateProjectForm(forms.Form):
    name = forms.CharField(max_length=100)
    organization = forms.ModelChoiceField(
        required=False,
        queryset=Organization.objects.order_by("name", "slug"),
        to_field_name="slug",
        empty_label="Default organization",
        help_text="Members of the organization reach the project through the Management API.",
    )
    template = forms.ChoiceField()
    postgres_major = forms.TypedChoiceField(coerce=int, label="Postgres version")
    host = forms.ModelChoiceField(
        required=False,
        queryset=RuntimeHost.objects.filter(accepts_projects=True).order_by("name"),
        to_field_name="name",
        empty_label="Automatic (the host with the most free ports)",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = template_names()
        self.fields["template"].choices = [(n, n) for n in names]
        host = self.fields["host"].queryset.filter(name=self._chosen("host") or "").first()
        # Hosts not judged: their agents have not answered (never, or not at their last contact).
        self.unjudged = [h.name for h in ([host] if host else self.fields["host"].queryset) if not h.reachable]
        template = self._chosen("template")
        if template is None:
            # The first template some reachable host can run, so the form opens on one that works.
            template = next((n for n in names if available_majors(n, host)), names[0] if names else None)
            self.initial["template"] = template
        self.majors = available_majors(template, host) if template else []
        self.fields["postgres_major"].choices = [(m, f"Postgres {m}") for m in self.majors]
        if not self.is_bound and str(self.initial.get("postgres_major")) not in {str(m) for m in self.majors}:
            # The newest supported major, unless one still supported was picked already.
            self.initial["postgres_major"] = self.majors[-1] if self.majors else None

    def _chosen(self, name):
        """The value picked for `name` so far (bound data, else initial), for narrowing the choices."""
        if self.is_bound:
            return self.data.get(name) or None
        return self.initial.get(name)


class OperationFilterForm(forms.Form):
    state = forms.ChoiceField(required=False, choices=[("", "Any state"), ("unfinished", "Queue"), *State.choices])
    kind = forms.ChoiceField(required=False, choices=[("", "Any kind"), *Kind.choices])
    host = forms.ModelChoiceField(
        required=False, queryset=RuntimeHost.objects.order_by("name"), to_field_name="name", empty_label="Any host"
    )

    def filter(self, operations):
        if not self.is_valid():
            return operations
        data = self.cleaned_data
        if data["state"] == "unfinished":
            operations = operations.filter(state__in=UNFINISHED_STATES)
        elif data["state"]:
            operations = operations.filter(state=data["state"])
        if data["kind"]:
            operations = operations.filter(kind=data["kind"])
        if data["host"]:
            operations = operations.filter(project__host=data["host"])
        return operations


class AuditFilterForm(forms.Form):
    """The audit page's filters (GET): who, what, which project, and a time window."""

    actor = forms.CharField(required=False, label="Who", max_length=150)
    action = forms.ChoiceField(required=False, label="What")
    project = forms.CharField(required=False, label="Project", max_length=100)
    since = forms.DateTimeField(
        required=False, label="From", widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    until = forms.DateTimeField(
        required=False, label="Until", widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["action"].choices = [("", "Any action"), *((a, a) for a in AuditEntry.objects.actions())]

    def filter(self, entries):
        if not self.is_bound:
            return entries
        if not self.is_valid():
            # A filter that cannot be read shows nothing (and says why), never everything.
            return entries.none()
        data = self.cleaned_data
        if data["actor"]:
            entries = entries.filter(actor_label__icontains=data["actor"].strip())
        if data["action"]:
            entries = entries.filter(action=data["action"])
        if data["project"]:
            entries = entries.filter(project__in=Project.objects.search(data["project"]))
        if data["since"]:
            entries = entries.filter(at__gte=data["since"])
        if data["until"]:
            entries = entries.filter(at__lte=data["until"])
        return entries


class HostEditForm(RuntimeHostForm):
    """The admin's host form (same rules, token write-only), with the host's region too."""

    class Meta(RuntimeHostForm.Meta):
        fields = [*RuntimeHostForm.Meta.fields, "region"]


class ChannelForm(forms.ModelForm):
    """A new notification channel; the model's clean() says what each kind needs."""

    url = forms.URLField(required=False, max_length=500, assume_scheme="https", label="URL (webhook, Slack)")

    class Meta:
        model = Channel
        fields = ["name", "kind", "organization", "url", "secret", "emails"]
        widgets = {"secret": forms.PasswordInput(render_value=False)}
        labels = {"organization": "Organization (empty: staff, every incident)"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["organization"].queryset = Organization.objects.order_by("name")
        self.fields["organization"].required = False


def _lines(text: str) -> list[str]:
    return [item.strip() for line in text.splitlines() for item in line.split(",") if item.strip()]


class DatabaseSettingsForm(forms.Form):
    """A project's database settings as the Management API takes them (operations.dbsettings
    checks every value; this form only splits the text)."""

    postgres_config = forms.CharField(
        label="Postgres parameters",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "placeholder": "work_mem = 64MB\nstatement_timeout = 8s"}),
        help_text="One `name = value` per line; " + ", ".join(PARAMETERS),
    )
    restart = forms.BooleanField(
        label="Restart the database if a parameter needs it (else it waits for the next restart)", required=False
    )
    ssl_enforced = forms.BooleanField(label="Refuse connections without TLS", required=False)
    allowed_cidrs = forms.CharField(
        label="Allowed IPv4 ranges",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="0.0.0.0/0: all",
    )
    allowed_cidrs_v6 = forms.CharField(
        label="Allowed IPv6 ranges", required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="::/0: all"
    )

    @staticmethod
    def initial_for(row) -> dict:
        return {
            "postgres_config": "\n".join(f"{name} = {_shown(value)}" for name, value in row.postgres_config.items()),
            "ssl_enforced": row.ssl_enforced,
            "allowed_cidrs": "\n".join(row.allowed_cidrs),
            "allowed_cidrs_v6": "\n".join(row.allowed_cidrs_v6),
        }

    def clean_postgres_config(self) -> dict:
        config = {}
        for number, line in enumerate(self.cleaned_data["postgres_config"].splitlines(), start=1):
            if not line.strip() or line.strip().startswith("#"):
                continue
            name, equals, value = line.partition("=")
            name, value = name.strip(), value.strip().strip("'\"")
            if not equals or not name or not value:
                raise forms.ValidationError(f"line {number}: write `name = value`")
            kind = PARAMETERS[name].kind if name in PARAMETERS else ""
            if kind == "bool":
                config[name] = value.lower() in ("on", "true", "yes", "1")
            elif kind == "int" and value.lstrip("-").isdigit():
                config[name] = int(value)
            else:
                config[name] = value
        return config

    def clean_allowed_cidrs(self) -> list[str]:
        return _lines(self.cleaned_data["allowed_cidrs"])

    def clean_allowed_cidrs_v6(self) -> list[str]:
        return _lines(self.cleaned_data["allowed_cidrs_v6"])


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


class DatabasePasswordForm(forms.Form):
    password = forms.CharField(label="New database password", widget=forms.PasswordInput, strip=False)
