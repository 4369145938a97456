"""`manage.py hosts refresh [NAME ...]`: ask hosts' agents what they run now.

Exits 1 when an agent did not answer, so scripts notice.
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hosts.actions import refresh_host
from hosts.models import RuntimeHost


class Command(BaseCommand):
    help = "Ask runtime hosts' agents for their driver, Postgres versions and probe host, and keep the answer."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True)
        refresh = sub.add_parser("refresh", help="Ask each named host's agent (default: every host)")
        refresh.add_argument("names", nargs="*", metavar="NAME")

    def handle(self, *args, subcommand, names, **options):
        hosts = RuntimeHost.objects.all()
        if names:
            hosts = hosts.filter(name__in=names)
            unknown = set(names) - {h.name for h in hosts}
            if unknown:
                raise CommandError(f"No such host: {', '.join(sorted(unknown))}")
        unreachable = 0
        for host in hosts:
            if not refresh_host(host, deadline=settings.BERTH_AGENT_CALL_DEADLINE):
                unreachable += 1
                self.stdout.write(self.style.ERROR(f"{host.name}: agent unreachable: {host.last_error}"))
                continue
            versions = ", ".join(str(v) for v in host.postgres_versions) or "none"
            self.stdout.write(
                f"{host.name}: {host.driver} driver, local Postgres {versions}, probe host {host.probe_host or '-'}"
            )
            if host.ephemeral_overlap:
                self.stdout.write(self.style.WARNING(f"warning: {host.name}: {host.ephemeral_overlap}"))
        if unreachable:
            raise CommandError(f"{unreachable} agent(s) did not answer.")
