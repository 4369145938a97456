"""Prepares a development machine: a local admin, the local agent's token and its host row.

Idempotent: scripts/dev runs it on every start. The admin password is generated on
first run, kept in var/admin-password (mode 600) and printed; nothing is baked in code.
"""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from hosts.models import RuntimeHost
from orgs.models import Membership, Role, default_organization_id


def _kept(path, generate) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generate())
        path.chmod(0o600)
    return path.read_text().strip()


class Command(BaseCommand):
    help = (
        "Ensure the local admin user (owner of the default organization), the local agent token and the "
        "'local' runtime host exist."
    )

    def add_arguments(self, parser):
        parser.add_argument("--agent-url", default="http://127.0.0.1:8470")

    def handle(self, *args, agent_url, **options):
        var = settings.VAR_DIR
        password = _kept(var / "admin-password", lambda: secrets.token_urlsafe(12))
        users = get_user_model()
        admin = users.objects.filter(username="admin").first()
        if admin is None:
            admin = users.objects.create_superuser("admin", email="", password=password)
            self.stdout.write(self.style.SUCCESS("Created the local admin user."))
        # The admin owns the default organization, so its Management API tokens see those projects.
        Membership.objects.update_or_create(
            organization_id=default_organization_id(), user=admin, defaults={"role": Role.OWNER}
        )

        token = _kept(var / "agent-token", lambda: secrets.token_urlsafe(32))
        host, created = RuntimeHost.objects.get_or_create(
            name="local",
            defaults={
                "agent_url": agent_url,
                "agent_token": token,
                "port_range_start": 20000,
                "port_range_end": 21999,
                "block_size": 20,
            },
        )
        if not created and (host.agent_url != agent_url or host.agent_token != token):
            host.agent_url, host.agent_token = agent_url, token
            host.save(update_fields=["agent_url", "agent_token"])
        if created:
            self.stdout.write(self.style.SUCCESS(f"Registered runtime host 'local' at {agent_url}."))

        self.stdout.write(f"Log in as: admin / {password}   (kept in {var / 'admin-password'})")
