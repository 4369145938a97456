"""manage.py upgrade_postgres: a project's Postgres major upgrade from the shell, through the
same verbs as the API and the dashboard (operations.upgrades).

    upgrade_postgres --project REF --check [--json]         eligibility, nothing changes
    upgrade_postgres --project REF --to 17 [--no-wait]       queue the upgrade, then watch it
    upgrade_postgres --project REF --rollback | --discard    back to the kept old major, or remove it
    upgrade_postgres --template NAME --to 17 [--project REF ...] [--canary N] [--wave-size N]
        [--concurrency N] [--max-failures N]                 a fleet in waves (a rollout)

A fleet upgrade is a rollout (operations.rollouts): `migrate_runtimes --show/--pause/--resume/
--cancel/--rollback ROLLOUT` act on it as on any other. Exit status: 0 done (or eligible),
1 refused (or not eligible), 4 the operation failed or the rollout halted, 5 it was paused
or cancelled.
"""

import json
import time

from django.core.management.base import BaseCommand, CommandError

from operations.actions import OperationRefused
from operations.management.commands.migrate_runtimes import Command as MigrateRuntimes
from operations.models import Operation, State
from operations.rollouts import RolloutRefused, start_upgrade_rollout
from operations.upgrades import (
    UpgradeRefused,
    eligibility,
    request_upgrade,
    request_upgrade_discard,
    request_upgrade_rollback,
)
from projects.models import Project

LABEL = "manage.py upgrade_postgres"
EXIT_REFUSED, EXIT_FAILED = 1, 4
POLL_S = 0.5
CHECK_DEADLINE_S = 10.0


class Command(BaseCommand):
    help = "Upgrade a project's (or a fleet's) Postgres to a newer major; roll back or discard the old one."

    def add_arguments(self, parser):
        parser.add_argument(
            "--project", action="append", default=[], metavar="REF", help="The project (fleet: only these)"
        )
        parser.add_argument("--template", help="Upgrade this template's projects in waves (with --to)")
        parser.add_argument("--to", type=int, metavar="MAJOR", help="The Postgres major to upgrade to")
        what = parser.add_mutually_exclusive_group()
        what.add_argument("--check", action="store_true", help="Print the project's eligibility; change nothing")
        what.add_argument("--rollback", action="store_true", help="Return to the old major the last upgrade kept")
        what.add_argument("--discard", action="store_true", help="Remove the old cluster the last upgrade kept")
        parser.add_argument("--no-wait", action="store_true", help="Queue it and return at once")
        parser.add_argument("--json", action="store_true", help="Machine-readable output")
        for option, default, text in (
            ("--canary", 1, "Projects in the first wave"),
            ("--wave-size", 5, "Projects per later wave"),
            ("--concurrency", 2, "Upgrades at once"),
            ("--max-failures", 1, "Failed projects that halt the rollout"),
        ):
            parser.add_argument(option, type=int, default=default, metavar="N", help=f"{text} (default {default})")

    def handle(self, *args, project, template, to, check, rollback, discard, no_wait, **options):
        if template:
            if to is None:
                raise CommandError("--template needs --to MAJOR")
            return self.fleet(template, to, project, options)
        if len(project) != 1:
            raise CommandError("name one project with --project REF (or a fleet with --template NAME --to MAJOR)")
        row = Project.objects.live().select_related("host", "template_version").filter(ref=project[0]).first()
        if row is None:
            raise CommandError(f"No live project {project[0]!r}.")
        if check:
            return self.check(row, options["json"])
        try:
            if rollback:
                operation = request_upgrade_rollback(row, label=LABEL)
            elif discard:
                operation = request_upgrade_discard(row, label=LABEL)
            elif to is not None:
                operation = request_upgrade(row, to, label=LABEL)
            else:
                raise CommandError("say what to do: --to MAJOR, --check, --rollback or --discard")
        except (UpgradeRefused, OperationRefused) as refusal:
            raise CommandError(f"refused: {refusal}", returncode=EXIT_REFUSED) from None
        self.stdout.write(f"operation {operation.pk} ({operation.get_kind_display()}) queued for {row.ref}")
        if not no_wait:
            self.watch(operation)

    def check(self, project: Project, as_json: bool) -> None:
        found = eligibility(project, deadline=CHECK_DEADLINE_S)
        platform = found.as_platform()
        if as_json:
            self.stdout.write(json.dumps(platform, indent=2))
        else:
            offered = platform["target_upgrade_versions"]
            targets = ", ".join(f"{t['postgres_version']} ({t['method']})" for t in offered) or "none"
            self.stdout.write(f"{project.ref}: PostgreSQL {project.postgres_major}; eligible targets: {targets}")
            for error in platform["validation_errors"]:
                self.stdout.write(f"  not eligible: {error['message']}")
            for warning in platform["warnings"]:
                self.stdout.write(f"  warning: {warning['message']}")
        if not found.eligible:
            raise CommandError(f"{project.ref} is not eligible for an upgrade now", returncode=EXIT_REFUSED)

    def watch(self, operation: Operation) -> None:
        """Print each step as it happens until the operation ends (Ctrl-C stops watching only)."""
        shown = 0
        while True:
            operation.refresh_from_db()
            for event in operation.events.order_by("at", "pk")[shown:]:
                self.stdout.write(f"  {event.at:%H:%M:%S} {event.step}: {event.message}")
                shown += 1
            if operation.is_finished:
                break
            time.sleep(POLL_S)
        self.stdout.write(f"operation {operation.pk} {operation.get_state_display()}")
        if operation.state != State.SUCCEEDED:
            raise CommandError(f"{operation.error_code}: {operation.error_message}", returncode=EXIT_FAILED)

    def fleet(self, template: str, to: int, refs: list[str], options: dict) -> None:
        try:
            rollout = start_upgrade_rollout(
                template,
                to,
                refs=refs or None,
                canary=options["canary"],
                wave_size=options["wave_size"],
                concurrency=options["concurrency"],
                max_failures=options["max_failures"],
                label=LABEL,
            )
        except RolloutRefused as refusal:
            raise CommandError(f"refused: {refusal}", returncode=EXIT_REFUSED) from None
        if options["no_wait"]:
            self.stdout.write(f"{rollout} started")
            return
        MigrateRuntimes(stdout=self.stdout, stderr=self.stderr).follow(rollout, as_json=options["json"])
