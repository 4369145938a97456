"""Verbs of alerting: add a channel, send it a test, open and resolve incidents (each with its
messages queued for every channel that hears of it). Each runs in one transaction with its
audit row; the worker is asked to deliver once it commits."""

import django_q.tasks
from django.db import IntegrityError, transaction
from django.utils import timezone

from alerts.models import Channel, Delivery, Event, Incident, Rule
from audit.actions import record
from audit.models import Action


def _deliver_soon() -> None:
    django_q.tasks.async_task("alerts.tasks.deliver", task_name="alerts-deliver", group="alerts")


def add_channel(channel: Channel, *, actor=None, label: str | None = None) -> Channel:
    """Validate and save a new channel; ValidationError names the field at fault, nothing saved."""
    channel.full_clean()
    with transaction.atomic():
        channel.save()
        record(actor, Action.ALERTS_CHANNEL_ADD, detail=_described(channel), label=label)
    return channel


def send_test(channel: Channel, *, actor=None, label: str | None = None) -> Delivery:
    """Queue a test message to the channel (the worker sends it, with retries, as any other)."""
    now = timezone.now()
    payload = {"event": "test", "channel": channel.name, "project": None, "status": "test", "at": now.isoformat()}
    with transaction.atomic():
        delivery = Delivery.objects.create(channel=channel, event=Event.TEST, payload=payload, next_attempt_at=now)
        record(actor, Action.ALERTS_CHANNEL_TEST, detail=_described(channel), label=label)
        transaction.on_commit(_deliver_soon)
    return delivery


def _described(channel: Channel) -> dict:
    # Never the secret; the URL may carry a token (Slack's do), so only its host.
    host = channel.url.split("://", 1)[-1].split("/", 1)[0] if channel.url else ""
    return {"channel": channel.name, "kind": channel.kind, "organization_id": channel.organization_id, "host": host}


def payload_of(incident: Incident, event: str, at) -> dict:
    """The webhook body: the event, the rule, the project ref (or null), the status, the time."""
    return {
        "event": f"incident.{event}",
        "incident": incident.pk,
        "rule": incident.rule,
        "rule_name": Rule(incident.rule).label,
        "subject": incident.subject,
        "project": incident.project_ref or None,
        "status": incident.status if event == Event.OPENED else "resolved",
        "summary": incident.summary,
        "at": at.isoformat(),
    }


def _queue(incident: Incident, event: str, at) -> int:
    payload = payload_of(incident, event, at)
    channels = list(Channel.objects.for_incident(incident.organization_id))
    Delivery.objects.bulk_create(
        Delivery(channel=channel, incident=incident, event=event, payload=payload, next_attempt_at=at)
        for channel in channels
    )
    return len(channels)


def open_incident(rule: str, subject: str, *, summary: str, status: str, organization_id=None, project_ref="") -> bool:
    """Open the incident unless one is open for this rule and subject; True when it opened (its
    message queued to every channel that hears of it)."""
    now = timezone.now()
    with transaction.atomic():
        try:
            with transaction.atomic():
                incident = Incident.objects.create(
                    rule=rule,
                    subject=subject,
                    organization_id=organization_id,
                    project_ref=project_ref,
                    status=status,
                    summary=summary,
                    opened_at=now,
                )
        except IntegrityError:
            return False  # open already (a concurrent evaluation opened it): one message per incident
        _queue(incident, Event.OPENED, now)
        record(None, Action.ALERTS_INCIDENT_OPEN, detail={"rule": rule, "subject": subject}, label="berth-alerts")
        transaction.on_commit(_deliver_soon)
    return True


def resolve_incident(incident: Incident) -> bool:
    """Close the open incident and queue its one resolved message; False when it was closed already."""
    now = timezone.now()
    with transaction.atomic():
        if not Incident.objects.filter(pk=incident.pk, resolved_at__isnull=True).update(resolved_at=now):
            return False
        incident.resolved_at = now
        _queue(incident, Event.RESOLVED, now)
        record(
            None,
            Action.ALERTS_INCIDENT_RESOLVE,
            detail={"rule": incident.rule, "subject": incident.subject},
            label="berth-alerts",
        )
        transaction.on_commit(_deliver_soon)
    return True
