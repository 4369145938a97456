from django import forms
from django.contrib import admin
from django.db import transaction

from alerts.actions import add_channel, send_test
from alerts.models import Channel, Delivery, Incident
from audit.actions import record
from audit.models import Action
from berth.admin import ReadOnlyAdmin


class ChannelForm(forms.ModelForm):
    """The webhook secret is write-only: never rendered back, kept as stored when left blank."""

    url = forms.URLField(required=False, max_length=500, assume_scheme="https", label="URL")
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Webhook only: the HMAC key its bodies are signed with (16+ characters); blank keeps it.",
    )

    class Meta:
        model = Channel
        fields = ["name", "kind", "organization", "url", "secret", "emails", "enabled"]

    def clean_secret(self):
        secret = self.cleaned_data["secret"]
        if secret or self.instance.pk is None:
            return secret
        return Channel.objects.get(pk=self.instance.pk).secret


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = ["name", "kind", "organization", "enabled", "consecutive_failures", "last_success_at", "last_error"]
    list_filter = ["kind", "enabled"]
    readonly_fields = ["last_success_at", "last_failure_at", "last_error", "consecutive_failures", "created_at"]
    actions = ["test"]

    def save_model(self, request, obj, form, change):
        if not change:
            add_channel(obj, actor=request.user)
            return
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            record(
                request.user, Action.ALERTS_CHANNEL_CHANGE, detail={"channel": obj.name, "changed": form.changed_data}
            )

    @admin.action(description="Send a test message")
    def test(self, request, queryset):
        for channel in queryset:
            send_test(channel, actor=request.user)
        self.message_user(request, f"Test messages queued for {queryset.count()} channels; see the delivery log.")


@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    list_display = ["rule", "subject", "status", "opened_at", "resolved_at"]
    list_filter = ["rule"]
    search_fields = ["subject", "project_ref"]


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "channel", "event", "state", "attempts", "sent_at", "last_error"]
    list_filter = ["state", "event"]
