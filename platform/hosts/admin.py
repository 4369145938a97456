from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db import transaction

from hosts.actions import refresh_host
from hosts.models import RuntimeHost


class RuntimeHostForm(forms.ModelForm):
    """The agent token is write-only: never rendered back, kept as stored when left blank."""

    agent_token = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="Bearer token the agent requires; stored encrypted and never shown. Leave blank to keep it.",
    )

    class Meta:
        model = RuntimeHost
        fields = [
            "name",
            "agent_url",
            "agent_token",
            "port_range_start",
            "port_range_end",
            "block_size",
            "probe_host_override",
            "pooler_host",
            "accepts_projects",
        ]

    def clean_agent_token(self):
        token = self.cleaned_data["agent_token"]
        if token:
            return token
        if self.instance.pk is not None:
            return RuntimeHost.objects.get(pk=self.instance.pk).agent_token
        raise forms.ValidationError("Enter the agent's token.")


@admin.register(RuntimeHost)
class RuntimeHostAdmin(admin.ModelAdmin):
    form = RuntimeHostForm
    list_display = [
        "name",
        "agent_url",
        "port_range_start",
        "port_range_end",
        "block_size",
        "region",
        "accepts_projects",
        "last_seen_at",
    ]
    list_filter = ["accepts_projects", "region"]
    search_fields = ["name", "agent_url"]
    readonly_fields = ["capabilities", "last_seen_at", "last_error", "created_at"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # Ask the agent once the save is committed, so no row lock is held while it answers.
        transaction.on_commit(lambda: self._ask_agent(request, obj))

    def _ask_agent(self, request, host):
        if refresh_host(host, deadline=settings.BERTH_AGENT_PAGE_DEADLINE):
            versions = ", ".join(str(v) for v in host.postgres_versions) or "none"
            self.message_user(request, f"The agent of {host.name} answered: {host.driver} driver, Postgres {versions}.")
            if host.ephemeral_overlap:
                self.message_user(request, f"{host.name}: {host.ephemeral_overlap}.", messages.WARNING)
        else:
            self.message_user(
                request,
                f"The agent of {host.name} did not answer ({host.last_error}); projects cannot be created there "
                f"until it does (`manage.py hosts refresh {host.name}` asks again).",
                messages.WARNING,
            )
