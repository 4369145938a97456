"""Delivering messages: the worker claims due deliveries one at a time and sends each outside
any transaction, with backoff between attempts.

- A delivery is claimed by a conditional UPDATE (pending, due, not claimed by another worker)
  that must touch one row; the claim moves its next attempt past the send timeout, so a
  worker that dies mid-send leaves it to be sent again then (at least once, never lost).
- A failed attempt waits BACKOFF_S * 2^(attempts-1) (at most an hour) before the next; after
  BERTH_ALERT_MAX_ATTEMPTS it is given up (`failed`). The channel records each outcome
  (last success, last error, failures in a row) for the dashboard.
- Nothing waits on a channel but its own deliveries: each send has its own timeout, one pass
  stops after PASS_BUDGET_S, and a failing channel's deliveries wait out their backoff while
  other channels' go out. Operations, rules and pages never send.
"""

import time
from datetime import timedelta

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from alerts.channels import SendFailed, send
from alerts.models import Channel, Delivery, DeliveryState

BACKOFF_S = 30
MAX_BACKOFF_S = 3600
PASS_BUDGET_S = 60


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(MAX_BACKOFF_S, BACKOFF_S * 2 ** max(0, attempts - 1)))


def claim_next(now) -> Delivery | None:
    """The next due delivery, claimed for this worker; None when nothing is due."""
    while True:
        due = (
            Delivery.objects.filter(state=DeliveryState.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at", "pk")
            .values_list("pk", "next_attempt_at")
            .first()
        )
        if due is None:
            return None
        pk, at = due
        claimed_until = now + timedelta(seconds=settings.BERTH_ALERT_SEND_TIMEOUT + 30)
        if Delivery.objects.filter(pk=pk, state=DeliveryState.PENDING, next_attempt_at=at).update(
            next_attempt_at=claimed_until
        ):
            return Delivery.objects.select_related("channel").get(pk=pk)
        # Another worker claimed it between our read and our update: look again.


def deliver_due(now=None) -> int:
    """Send what is due, within PASS_BUDGET_S; returns how many were sent."""
    started, sent = time.monotonic(), 0
    while time.monotonic() - started < PASS_BUDGET_S:
        delivery = claim_next(now or timezone.now())
        if delivery is None:
            break
        sent += attempt(delivery)
    return sent


def attempt(delivery: Delivery) -> bool:
    """Send one claimed delivery and record the outcome on it and its channel."""
    channel = delivery.channel
    try:
        if not channel.enabled:
            raise SendFailed("the channel is disabled")
        send(channel, delivery.payload)
    except SendFailed as exc:
        failed_at, attempts = timezone.now(), delivery.attempts + 1
        gave_up = attempts >= settings.BERTH_ALERT_MAX_ATTEMPTS
        Delivery.objects.filter(pk=delivery.pk).update(
            attempts=attempts,
            last_error=str(exc),
            state=DeliveryState.FAILED if gave_up else DeliveryState.PENDING,
            next_attempt_at=failed_at + backoff(attempts),
        )
        Channel.objects.filter(pk=channel.pk).update(
            last_failure_at=failed_at, last_error=str(exc), consecutive_failures=F("consecutive_failures") + 1
        )
        return False
    sent_at = timezone.now()
    Delivery.objects.filter(pk=delivery.pk).update(
        attempts=delivery.attempts + 1, state=DeliveryState.SENT, sent_at=sent_at, last_error=""
    )
    Channel.objects.filter(pk=channel.pk).update(last_success_at=sent_at, last_error="", consecutive_failures=0)
    return True
