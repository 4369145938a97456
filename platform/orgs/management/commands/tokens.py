"""`manage.py tokens create|list|revoke`: personal access tokens for the Management API."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from berth.table import format_table
from orgs.actions import create_token, revoke_token
from orgs.models import AccessToken

LABEL = "manage.py tokens"


class Command(BaseCommand):
    help = "Create, list and revoke personal access tokens (sbp_...) for the Management API."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a token; it is printed once, alone on the last line")
        create.add_argument("--user", required=True, help="user name of the token's owner")
        create.add_argument("--name", required=True, help="label to tell the token apart")
        create.add_argument("--expires-days", type=int, default=None, help="days until it expires (default: never)")
        listing = sub.add_parser("list", help="list tokens (never their values)")
        listing.add_argument("--user", help="only this user's tokens")
        revoke = sub.add_parser("revoke", help="revoke tokens by id (see list)")
        revoke.add_argument("ids", nargs="+", type=int)

    def handle(self, *args, action, **options):
        getattr(self, f"_{action}")(**options)

    def _create(self, *, user, name, expires_days, **options):
        owner = get_user_model().objects.filter(username=user).first()
        if owner is None:
            raise CommandError(f"no user named {user!r}")
        try:
            token, plaintext = create_token(owner, name=name, expires_days=expires_days, label=LABEL)
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        expiry = f", expires {token.expires_at:%Y-%m-%d %H:%M} UTC" if token.expires_at else ""
        self.stdout.write(f"Created token {token.pk} {token.name!r} for {user}{expiry}. It is shown only now:")
        self.stdout.write(plaintext)

    def _list(self, *, user, **options):
        tokens = AccessToken.objects.select_related("user").order_by("pk")
        if user:
            tokens = tokens.filter(user__username=user)
        rows = [
            (
                str(token.pk),
                token.user.get_username(),
                token.name,
                f"{token.hint}…",
                token.state,
                f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never",
            )
            for token in tokens
        ]
        self.stdout.write(format_table(("id", "user", "name", "token", "state", "last used"), rows))

    def _revoke(self, *, ids, **options):
        tokens = {token.pk: token for token in AccessToken.objects.select_related("user").filter(pk__in=ids)}
        missing = [str(pk) for pk in ids if pk not in tokens]
        for pk in ids:
            if pk in tokens:
                done = revoke_token(tokens[pk], label=LABEL)
                self.stdout.write(f"{pk}: {'revoked' if done else 'was already revoked'}")
        if missing:
            raise CommandError(f"no token with id {', '.join(missing)}")
