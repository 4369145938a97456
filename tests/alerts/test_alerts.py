"""Alerts reach a person: rules open one incident per condition and resolve it once, the worker
delivers each message to a real webhook receiver (which checks the signature), to a
Slack-compatible one and by Django mail (locmem), retries with backoff, and a failing channel
fails visibly without holding up the others."""

import datetime
from datetime import timedelta
from io import StringIO

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from alerts.actions import add_channel
from alerts.delivery import backoff, deliver_due
from alerts.models import Channel, ChannelKind, Delivery, DeliveryState, Incident
from alerts.rules import FREQUENT, HOURLY, evaluate
from audit.models import AuditEntry
from operations.models import Rollout
from templating.actions import sync_templates
from templating.models import TemplateVersion
from tests.api_helpers import make_org
from tests.factories import make_host, make_project
from tests.stack import free_port_range
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.django_db

SECRET = "webhook-secret-0123456789"


@pytest.fixture
def receiver():
    server = WebhookReceiver(SECRET)
    yield server
    server.stop()


def webhook(url: str, *, secret: str = SECRET, organization=None, name="ops") -> Channel:
    return add_channel(
        Channel(name=name, kind=ChannelKind.WEBHOOK, url=url, secret=secret, organization=organization), label="test"
    )


def unreachable_host(name="edge1", minutes=30):
    return make_host(
        name=name, last_error="connection refused", last_seen_at=timezone.now() - timedelta(minutes=minutes)
    )


def test_a_host_unreachable_sends_one_signed_message_while_it_lasts_and_one_when_it_ends(receiver, settings):
    settings.BERTH_ALERT_HOST_UNREACHABLE_MINUTES = 10
    webhook(receiver.url)
    host = unreachable_host()
    make_host(name="fresh", last_error="connection refused", last_seen_at=timezone.now() - timedelta(minutes=2))

    assert evaluate(FREQUENT) == (1, 0), "the host silent for 2 minutes is not reported yet"
    assert deliver_due() == 1
    for _ in range(3):  # the condition lasts: no new incident, nothing more sent
        assert evaluate(FREQUENT) == (0, 0)
        assert deliver_due() == 0

    (opened,) = receiver.accepted
    assert receiver.refused == 0, "every body carried a valid signature"
    assert opened["event"] == "incident.opened"
    assert opened["rule"] == "host_unreachable" and opened["subject"] == "edge1"
    assert opened["status"] == "unreachable" and opened["project"] is None
    assert datetime.datetime.fromisoformat(opened["at"]) <= timezone.now()

    host.last_error = ""
    host.last_seen_at = timezone.now()
    host.save()
    assert evaluate(FREQUENT) == (0, 1)
    assert deliver_due() == 1
    assert [m["event"] for m in receiver.accepted] == ["incident.opened", "incident.resolved"]
    assert receiver.accepted[1]["incident"] == opened["incident"]
    assert not Incident.objects.filter(resolved_at__isnull=True).exists()


def test_a_receiver_refuses_a_body_signed_with_another_secret_and_the_channel_shows_it(receiver):
    wrong = webhook(receiver.url, secret="another-secret-0123456789")
    unreachable_host()
    evaluate(FREQUENT)
    deliver_due()
    assert receiver.refused == 1 and receiver.accepted == []
    wrong.refresh_from_db()
    assert wrong.failing and "HTTP 401" in wrong.last_error


def test_a_failing_channel_retries_with_backoff_gives_up_and_never_holds_up_the_others(receiver, settings):
    settings.BERTH_ALERT_SEND_TIMEOUT = 1
    settings.BERTH_ALERT_MAX_ATTEMPTS = 3
    hanging = WebhookReceiver(SECRET, hang=True)
    try:
        dead = webhook(f"http://127.0.0.1:{free_port_range(1)}/hook", name="dead")
        slow = webhook(hanging.url, name="hangs")
        good = webhook(receiver.url, name="good")
        unreachable_host()
        evaluate(FREQUENT)

        assert deliver_due() == 1, "the good channel is sent to in the same pass"
        assert len(receiver.accepted) == 1
        for channel in (dead, slow):
            channel.refresh_from_db()
            assert channel.failing and channel.consecutive_failures == 1
        slow.refresh_from_db()
        assert "Timeout" in slow.last_error
        assert deliver_due() == 0, "failed deliveries wait out their backoff"

        now = timezone.now()
        for attempts in (1, 2):
            now += backoff(attempts) + timedelta(seconds=1)
            deliver_due(now=now)
        failed = Delivery.objects.filter(channel__in=[dead, slow])
        assert set(failed.values_list("state", flat=True)) == {DeliveryState.FAILED}
        assert set(failed.values_list("attempts", flat=True)) == {3}
        dead.refresh_from_db()
        assert dead.consecutive_failures == 3 and dead.last_success_at is None
        good.refresh_from_db()
        assert not good.failing and good.last_success_at is not None
    finally:
        hanging.stop()
    assert backoff(1) == timedelta(seconds=30) and backoff(20) == timedelta(hours=1)


def certificate(days: int) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "db.test.berth.localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_a_certificate_near_expiry_mails_its_organization_and_tells_staff_but_no_other_organization(receiver, settings):
    settings.BERTH_ALERT_CERT_DAYS = 30
    acme, other = make_org("Acme"), make_org("Other")
    add_channel(Channel(name="acme mail", kind=ChannelKind.EMAIL, emails="ops@acme.test", organization=acme), label="t")
    add_channel(
        Channel(name="other mail", kind=ChannelKind.EMAIL, emails="ops@other.test", organization=other), label="t"
    )
    webhook(receiver.url)  # staff
    expiring = make_project(organization=acme, secrets={"tls_cert": certificate(10)})
    make_project(organization=acme, secrets={"tls_cert": certificate(400)})
    make_project(organization=acme, secrets={})  # an older project without a certificate

    assert evaluate(HOURLY) == (1, 0)
    assert deliver_due() == 2

    (message,) = mail.outbox
    assert message.to == ["ops@acme.test"]
    assert message.subject.startswith("[Berth FIRING] certificate near expiry project " + expiring.ref)
    assert expiring.ref in message.body
    assert receiver.accepted[0]["project"] == expiring.ref and receiver.accepted[0]["status"] == "expiring"


def test_a_halted_rollout_reaches_a_slack_compatible_webhook_as_text():
    slack = WebhookReceiver("")  # no signature check: Slack's incoming webhooks take {"text"}
    try:
        add_channel(Channel(name="chat", kind=ChannelKind.SLACK, url=slack.url), label="t")
        sync_templates()
        rollout = Rollout.objects.create(
            template="postgres",
            target=TemplateVersion.objects.latest_of("postgres"),
            state=Rollout.State.HALTED,
            reason="1 failed: blogxyz",
        )
        evaluate(FREQUENT)
        deliver_due()
        summary = f"rollout #{rollout.pk} of postgres to r1 halted: 1 failed: blogxyz"
        assert slack.accepted == [{"text": f"[Berth FIRING] rollout halted: {summary}"}]
    finally:
        slack.stop()


def test_the_channels_command_adds_lists_and_tests_and_refuses_bad_input(receiver):
    out = StringIO()
    call_command("channels", "add", "--kind", "webhook", "--url", receiver.url, "--secret", SECRET, stdout=out)
    channel_id = int(out.getvalue().strip().splitlines()[-1])
    assert Channel.objects.get(pk=channel_id).organization is None

    listing = StringIO()
    call_command("channels", "list", stdout=listing)
    assert f"{channel_id}  webhook" in listing.getvalue() and "ok" in listing.getvalue()

    call_command("channels", "test", str(channel_id), stdout=StringIO())
    assert receiver.accepted[-1]["event"] == "test" and receiver.accepted[-1]["status"] == "test"

    with pytest.raises(CommandError, match="secret of at least 16"):
        call_command("channels", "add", "--kind", "webhook", "--url", receiver.url, "--secret", "short")
    with pytest.raises(CommandError, match="no organization"):
        call_command("channels", "add", "--kind", "email", "--emails", "a@b.test", "--organization", "nope")
    with pytest.raises(CommandError, match="not an e-mail address"):
        call_command("channels", "add", "--kind", "email", "--emails", "nobody")
    assert Channel.objects.count() == 1, "refused channels are not saved"

    dead = webhook(f"http://127.0.0.1:{free_port_range(1)}/hook", name="dead")
    with pytest.raises(CommandError, match="failed"):
        call_command("channels", "test", str(dead.pk), stdout=StringIO())
    assert AuditEntry.objects.filter(action="alerts.channel_test").count() == 2


def test_the_alerts_page_adds_a_channel_sends_a_test_and_shows_the_log(staff_client, receiver, settings):
    page = staff_client.post(
        reverse("dashboard:alerts"),
        {"name": "ops", "kind": "webhook", "url": receiver.url, "secret": SECRET, "organization": "", "emails": ""},
    )
    assert page.status_code == 302
    channel = Channel.objects.get()
    staff_client.post(reverse("dashboard:test_channel", args=[channel.pk]))
    deliver_due()
    text = staff_client.get(reverse("dashboard:alerts")).content.decode()
    assert "● ok" in text and "test" in text and "sent" in text
    refused = staff_client.post(reverse("dashboard:alerts"), {"name": "x", "kind": "webhook", "url": "", "secret": ""})
    assert "needs the URL" in refused.content.decode()
    assert Channel.objects.count() == 1


def test_a_project_the_status_gate_moves_to_a_failing_status_is_one_incident_until_it_moves_out(receiver):
    from projects.models import Project, Status, StatusCause, StatusMove

    acme = make_org("Acme")
    webhook(receiver.url, organization=acme, name="acme hook")
    project = make_project(organization=acme, status=Status.COMING_UP)
    Project.objects.filter(pk=project.pk).move_status(
        StatusMove(Status.INIT_FAILED, "its runtime never became healthy"), cause=StatusCause.SETTLED
    )
    make_project(organization=acme, status=Status.ACTIVE_HEALTHY)

    assert evaluate(FREQUENT) == (1, 0)
    assert evaluate(FREQUENT) == (0, 0)
    deliver_due()
    (opened,) = receiver.accepted
    assert opened["project"] == project.ref and opened["status"] == "INIT_FAILED"
    assert "(settled): its runtime never became healthy" in opened["summary"]

    Project.objects.filter(pk=project.pk).move_status(StatusMove(Status.COMING_UP, "retry"), cause=StatusCause.CLAIMED)
    assert evaluate(FREQUENT) == (0, 1)
    deliver_due()
    assert [m["event"] for m in receiver.accepted] == ["incident.opened", "incident.resolved"]
