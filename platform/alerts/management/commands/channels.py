"""`manage.py channels add|list|test`: notification channels for alerts."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from alerts.actions import add_channel, send_test
from alerts.delivery import attempt, claim_next
from alerts.models import Channel, ChannelKind, Delivery, DeliveryState
from berth.table import format_table
from orgs.models import Organization

LABEL = "manage.py channels"


class Command(BaseCommand):
    help = "Add, list and test notification channels (webhook, Slack-compatible webhook, e-mail)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="add a channel; prints its id alone on the last line")
        add.add_argument("--kind", required=True, choices=ChannelKind.values)
        add.add_argument("--url", default="", help="webhook and slack: where to post")
        add.add_argument("--secret", default="", help="webhook: the HMAC key its body is signed with (16+ characters)")
        add.add_argument("--emails", default="", help="email: addresses, separated by commas")
        add.add_argument(
            "--organization", metavar="SLUG", help="only this organization's incidents (default: staff, all)"
        )
        add.add_argument("--name", default="", help="a name to tell it apart (default: the kind and the id)")
        sub.add_parser("list", help="list channels with their last outcome")
        test = sub.add_parser("test", help="send a test message now; exit status 1 when it fails")
        test.add_argument("id", type=int)

    def handle(self, *args, action, **options):
        getattr(self, f"_{action}")(**options)

    def _add(self, *, kind, url, secret, emails, organization, name, **options):
        org = None
        if organization:
            org = Organization.objects.filter(slug=organization).first()
            if org is None:
                raise CommandError(f"no organization with the slug {organization!r}")
        channel = Channel(kind=kind, url=url, secret=secret, emails=emails, organization=org, name=name or kind)
        try:
            add_channel(channel, label=LABEL)
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        reach = f"organization {org.slug}" if org else "staff (every incident)"
        self.stdout.write(f"Added {channel.kind} channel {channel.name!r} for {reach}:")
        self.stdout.write(str(channel.pk))

    def _list(self, **options):
        rows = [
            (
                str(channel.pk),
                channel.name,
                channel.kind,
                channel.organization.slug if channel.organization else "staff",
                "off" if not channel.enabled else ("FAILING" if channel.failing else "ok"),
                f"{channel.last_success_at:%Y-%m-%d %H:%M}" if channel.last_success_at else "never",
                channel.last_error[:60],
            )
            for channel in Channel.objects.select_related("organization")
        ]
        self.stdout.write(format_table(("id", "name", "kind", "for", "state", "last sent", "last error"), rows))

    def _test(self, *, id, **options):
        channel = Channel.objects.filter(pk=id).first()
        if channel is None:
            raise CommandError(f"no channel {id}")
        queued = send_test(channel, label=LABEL)
        # Send it here, as the worker would (claimed the same way), so the answer is now.
        delivery = claim_next(timezone.now())
        while delivery is not None and delivery.pk != queued.pk:
            attempt(delivery)  # something else was due first: it goes out too
            delivery = claim_next(timezone.now())
        if delivery is not None:
            attempt(delivery)
        queued = Delivery.objects.get(pk=queued.pk)
        if queued.state != DeliveryState.SENT:
            raise CommandError(f"the test message to {channel.name!r} failed: {queued.last_error or 'not sent'}")
        self.stdout.write(f"Sent a test message to {channel.name!r}.")
