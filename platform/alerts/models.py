"""Notification channels, incidents and their deliveries (see alerts/rules.py, alerts/delivery.py).

An incident is one condition on one subject (a project, a host, a rollout) from the moment a
rule finds it until the moment it no longer does: at most one open incident per rule and
subject (a partial unique index), so a condition that lasts sends one message, and its end
one more. Each message is a Delivery row per channel, sent by the worker with retries.
"""

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models
from django.db.models import Q

from berth.crypto import EncryptedTextField


class ChannelKind(models.TextChoices):
    WEBHOOK = "webhook", "Webhook (JSON, signed)"
    SLACK = "slack", "Slack-compatible webhook"
    EMAIL = "email", "E-mail"


class ChannelQuerySet(models.QuerySet):
    def for_incident(self, organization_id: int | None):
        """Enabled channels that hear of an incident: staff channels (no organization) hear of
        every incident, an organization's channels of its projects' incidents."""
        reach = Q(organization__isnull=True)
        if organization_id is not None:
            reach |= Q(organization_id=organization_id)
        return self.filter(reach, enabled=True)


class Channel(models.Model):
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=ChannelKind)
    # None: a staff channel, told of every incident (hosts and rollouts too).
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    url = models.URLField(max_length=500, blank=True)
    # The webhook's HMAC key: its body is signed `X-Berth-Signature: sha256=<hex>`.
    secret = EncryptedTextField(blank=True)
    emails = models.TextField(blank=True, help_text="Addresses, separated by commas.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # What its last attempts said, shown on the dashboard: a failing channel stays visible.
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)

    objects = ChannelQuerySet.as_manager()

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self):
        return f"{self.name} ({self.kind})"

    @property
    def failing(self) -> bool:
        return self.consecutive_failures > 0

    @property
    def addresses(self) -> list[str]:
        return [address.strip() for address in self.emails.split(",") if address.strip()]

    def clean(self):
        if self.kind in (ChannelKind.WEBHOOK, ChannelKind.SLACK):
            if not self.url:
                raise ValidationError({"url": "A webhook channel needs the URL to post to."})
            if not self.url.startswith(("https://", "http://")):
                raise ValidationError({"url": "The URL must start with https:// or http://."})
        if self.kind == ChannelKind.WEBHOOK and len(self.secret) < 16:
            raise ValidationError(
                {"secret": "A webhook channel needs a secret of at least 16 characters to sign with."}
            )
        if self.kind == ChannelKind.EMAIL:
            if not self.addresses:
                raise ValidationError({"emails": "An e-mail channel needs at least one address."})
            for address in self.addresses:
                try:
                    validate_email(address)
                except ValidationError:
                    raise ValidationError({"emails": f"{address!r} is not an e-mail address."}) from None


class Rule(models.TextChoices):
    PROJECT_STATUS = "project_status", "project failed or unhealthy"
    HOST_UNREACHABLE = "host_unreachable", "host unreachable"
    ROLLOUT_HALTED = "rollout_halted", "rollout halted"
    CERTIFICATE_EXPIRY = "certificate_expiry", "certificate near expiry"
    PROTECTION_FAILING = "protection_failing", "backups or WAL archiving failing"


class Incident(models.Model):
    rule = models.CharField(max_length=32, choices=Rule)
    # What it is about, unique per rule: a project ref, a host name, a rollout id.
    subject = models.CharField(max_length=100)
    # Whose channels hear of it besides staff's (a project's organization), or None.
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    project_ref = models.CharField(max_length=40, blank=True)
    status = models.CharField(max_length=40, blank=True)  # e.g. the project's status, "halted"
    summary = models.TextField()
    opened_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "subject"], condition=Q(resolved_at__isnull=True), name="one_open_incident"
            )
        ]

    def __str__(self):
        return f"{self.get_rule_display()}: {self.subject}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class Event(models.TextChoices):
    OPENED = "opened"
    RESOLVED = "resolved"
    TEST = "test"


class DeliveryState(models.TextChoices):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # gave up after BERTH_ALERT_MAX_ATTEMPTS


class Delivery(models.Model):
    """One message to one channel: the delivery log. Pending until sent or given up."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="deliveries")
    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, null=True, blank=True, related_name="deliveries")
    event = models.CharField(max_length=16, choices=Event)
    state = models.CharField(max_length=16, choices=DeliveryState, default=DeliveryState.PENDING)
    # The JSON body a webhook receives (the others are written from it).
    payload = models.JSONField()
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="delivery_due_idx"),
            models.Index(fields=["channel", "created_at"], name="delivery_channel_idx"),
        ]

    def __str__(self):
        return f"{self.event} to {self.channel_id} ({self.state})"
