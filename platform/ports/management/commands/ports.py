"""`manage.py ports report` and `manage.py ports reconcile`.

report exits 1 when it finds anomalies, reconcile when a host could not be checked, so
either can run from cron or a monitor and fail loudly.
"""

from django.core.management.base import BaseCommand, CommandError

from berth.table import format_table
from hosts.models import RuntimeHost
from ports.actions import reconcile_ports
from ports.report import anomalies, host_report

COLUMNS = ["host", "range", "size", "free", "leased", "cooling", "blocked", "unlaid", "stale"]


class Command(BaseCommand):
    help = "Report on port leases per host, or reconcile them."

    def add_arguments(self, parser):
        subcommands = parser.add_subparsers(dest="subcommand", required=True)
        report = subcommands.add_parser(
            "report", help="Blocks per host by state, and anomalies (exit status 1 if there are any)."
        )
        reconcile = subcommands.add_parser(
            "reconcile",
            help="Release leases of deleted projects, lay out blocks, re-check blocked blocks; print what changed.",
        )
        for sub in (report, reconcile):
            sub.add_argument("--host", action="append", dest="hosts", metavar="NAME", help="only this host; repeatable")

    def handle(self, *args, subcommand, hosts, **options):
        selected = RuntimeHost.objects.order_by("name")
        if hosts:
            selected = selected.filter(name__in=hosts)
            unknown = set(hosts) - {h.name for h in selected}
            if unknown:
                raise CommandError(f"No such host: {', '.join(sorted(unknown))}")
        getattr(self, subcommand)(list(selected))

    def report(self, hosts):
        rows = []
        for host in hosts:
            r = host_report(host)
            rows.append(
                [
                    host.name,
                    f"{host.port_range_start}-{host.port_range_end}",
                    str(host.block_size),
                    *(str(n) for n in (r.counts.free, r.counts.leased, r.counts.cooling, r.counts.blocked)),
                    str(r.unlaid),
                    str(r.stale),
                ]
            )
        # Names and ranges align left, counts right.
        self.stdout.write(format_table(COLUMNS, rows, right=range(2, len(COLUMNS))))
        self.stdout.write(
            "free counts blocks whose cool-down is over; unlaid blocks get their rows on first need;"
            " stale blocks lie outside the current layout and go once nothing holds them."
        )
        for host in hosts:
            if host.ephemeral_overlap:
                self.stdout.write(self.style.WARNING(f"warning: {host.name}: {host.ephemeral_overlap}"))
        found = anomalies(hosts)
        if not found:
            self.stdout.write(self.style.SUCCESS("No anomalies."))
            return
        self.stdout.write(self.style.WARNING(f"{len(found)} anomalies:"))
        for line in found:
            self.stdout.write(f"  {line}")
        raise CommandError(f"{len(found)} port lease anomalies; `manage.py ports reconcile` fixes the usual ones")

    def reconcile(self, hosts):
        result = reconcile_ports(hosts, label="manage.py ports reconcile")
        for line in result.changes:
            self.stdout.write(f"changed: {line}")
        if not result.changes:
            self.stdout.write("Nothing to change.")
        for line in result.problems:
            self.stderr.write(f"problem: {line}")
        if result.problems:
            raise CommandError(f"{len(result.problems)} hosts could not be reconciled")
