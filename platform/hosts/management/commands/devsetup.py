"""Prepares a development machine: a local admin, the local agent's token and its host row.

Idempotent: scripts/dev runs it on every start. The admin password is generated on
first run, kept in var/admin-password (mode 600) and printed; nothing is baked in code.
"""

import argparse
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from berth.env import kept_secret
from hosts.models import RuntimeHost
from orgs.models import Membership, Role, default_organization_id

DEFAULT_AGENT_URL = "http://127.0.0.1:8470"
DEFAULT_RUNTIME_PORTS = (20000, 21999)


def port_range(value: str) -> tuple[int, int]:
    first, sep, last = value.partition("-")
    if not sep or not first.isdigit() or not last.isdigit() or int(first) >= int(last):
        raise argparse.ArgumentTypeError(f"{value!r} is not FIRST-LAST, e.g. 20000-21999")
    return int(first), int(last)


class Command(BaseCommand):
    help = (
        "Ensure the local admin user (owner of the default organization), the local agent token and the "
        "'local' runtime host exist."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--agent-url", help="the local agent's URL (default on first run http://127.0.0.1:8470; later: kept)"
        )
        parser.add_argument(
            "--runtime-ports",
            type=port_range,
            help="the local host's runtime port range FIRST-LAST (default on first run 20000-21999; later: kept)",
        )

    def handle(self, *args, agent_url, runtime_ports, **options):
        var = settings.VAR_DIR
        password = kept_secret(var / "admin-password", lambda: secrets.token_urlsafe(12))
        users = get_user_model()
        admin = users.objects.filter(username="admin").first()
        if admin is None:
            admin = users.objects.create_superuser("admin", email="", password=password)
            self.stdout.write(self.style.SUCCESS("Created the local admin user."))
        # The admin owns the default organization, so its Management API tokens see those projects.
        Membership.objects.update_or_create(
            organization_id=default_organization_id(), user=admin, defaults={"role": Role.OWNER}
        )

        token = kept_secret(var / "agent-token", lambda: secrets.token_urlsafe(32))
        host = RuntimeHost.objects.filter(name="local").first()
        if host is None:
            first, last = runtime_ports or DEFAULT_RUNTIME_PORTS
            host = RuntimeHost(
                name="local",
                agent_url=agent_url or DEFAULT_AGENT_URL,
                agent_token=token,
                port_range_start=first,
                port_range_end=last,
                block_size=20,
            )
            host.full_clean()
            host.save()
            self.stdout.write(self.style.SUCCESS(f"Registered runtime host 'local' at {host.agent_url}."))
        else:
            # Only what was asked for changes, and every change is said: a URL or range set
            # by hand (the admin, the hosts page) is never put back silently.
            changes = []
            if agent_url and host.agent_url != agent_url:
                changes.append(f"agent URL {host.agent_url} -> {agent_url}")
                host.agent_url = agent_url
            if runtime_ports and (host.port_range_start, host.port_range_end) != runtime_ports:
                was, now = f"{host.port_range_start}-{host.port_range_end}", "-".join(map(str, runtime_ports))
                changes.append(f"runtime ports {was} -> {now}")
                host.port_range_start, host.port_range_end = runtime_ports
            if host.agent_token != token:
                changes.append("agent token (from var/agent-token)")
                host.agent_token = token
            if changes:
                try:
                    host.full_clean()
                except ValidationError as error:
                    raise CommandError(f"cannot change runtime host 'local': {error}") from None
                host.save()
                self.stdout.write(self.style.WARNING(f"Changed runtime host 'local': {'; '.join(changes)}."))

        backups = settings.BERTH_BACKUP_URL
        if backups.scheme == "file" and Path(backups.path).is_relative_to(var):
            # Berth's own default repository, under var/. Any other folder is a mount the
            # operator provides: the agent refuses one that is missing rather than fill a local disk.
            Path(backups.path).mkdir(mode=0o755, parents=True, exist_ok=True)
        self.stdout.write(f"Backups go to {backups.display}")
        self.stdout.write(f"Log in as: admin / {password}   (kept in {var / 'admin-password'})")
