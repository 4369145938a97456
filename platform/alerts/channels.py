"""Sending one message on one channel: a signed JSON webhook, a Slack-compatible webhook, or
e-mail through Django's mail settings. Each send is bounded by BERTH_ALERT_SEND_TIMEOUT and
raises SendFailed saying why; nothing here touches the database."""

import hashlib
import hmac
import json

import httpx
from django.conf import settings
from django.core.mail import send_mail

from alerts.models import Channel, ChannelKind

SIGNATURE_HEADER = "X-Berth-Signature"


class SendFailed(Exception):
    pass


def body_of(payload: dict) -> bytes:
    """The webhook's body, byte for byte what is signed."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of the body with the channel's secret>`, as the header carries it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def text_of(payload: dict) -> str:
    """One line a person reads (Slack, the e-mail's subject and first line)."""
    event = payload["event"]
    if event == "test":
        return f"Berth test message for channel {payload['channel']!r}: this channel works."
    verb = "RESOLVED" if event == "incident.resolved" else "FIRING"
    where = f" project {payload['project']}" if payload.get("project") else ""
    return f"[Berth {verb}] {payload['rule_name']}{where}: {payload['summary']}"


def send(channel: Channel, payload: dict) -> None:
    timeout = settings.BERTH_ALERT_SEND_TIMEOUT
    if channel.kind == ChannelKind.EMAIL:
        try:
            send_mail(
                text_of(payload)[:200],
                f"{text_of(payload)}\n\n{json.dumps(payload, indent=2, sort_keys=True)}\n",
                settings.DEFAULT_FROM_EMAIL,
                channel.addresses,
            )
        except Exception as exc:  # smtplib, socket and backend errors alike: the channel failed
            raise SendFailed(f"mail not sent: {exc or type(exc).__name__}") from None
        return
    if channel.kind == ChannelKind.WEBHOOK:
        body = body_of(payload)
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(channel.secret, body)}
    else:
        body = json.dumps({"text": text_of(payload)}).encode()
        headers = {"Content-Type": "application/json"}
    try:
        reply = httpx.post(channel.url, content=body, headers={"User-Agent": "Berth", **headers}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise SendFailed(f"{type(exc).__name__}: {exc}") from None
    if not 200 <= reply.status_code < 300:
        raise SendFailed(f"HTTP {reply.status_code}: {reply.text[:200]}")
