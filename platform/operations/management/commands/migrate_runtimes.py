"""manage.py migrate_runtimes: the command-line front of rollouts (operations.rollouts).

    migrate_runtimes --template NAME --to latest|REV [--project REF ...] [--canary N]
        [--wave-size N] [--max-failures N] [--concurrency N] [--no-restart]
        [--fail-on-conflict] [--dry-run] [--json]
    migrate_runtimes --resume ROLLOUT | --cancel ROLLOUT | --pause ROLLOUT
    migrate_runtimes --rollback ROLLOUT [--project REF ...]
    migrate_runtimes --show ROLLOUT

Starting, resuming or rolling back creates or moves a Rollout that the worker drives; the
command watches it with a progress bar until it stops, then prints a table (or, with
--json, the rollout's whole record). Exit status: 0 every project moved, 3 some projects
conflict (resolve_conflicts), 4 a project failed or the rollout halted, 5 it was paused or
cancelled, 1 a refused request.
"""

import json
import time

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from operations import rollouts
from operations.models import Outcome, Rollout
from operations.resync import plan_migration
from operations.runtime_files import AgentRuntimeFiles
from templating.models import TemplateVersion

LABEL = "manage.py migrate_runtimes"
EXIT_CONFLICTS, EXIT_FAILURES, EXIT_STOPPED = 3, 4, 5
POLL_S = 0.5


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError
    return number


def _not_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError
    return number


def exit_status(rollout: Rollout) -> int:
    """What a finished watch tells a script: see the module docstring."""
    outcomes = rollouts.summary(rollout)["outcomes"]
    if rollout.state == Rollout.State.HALTED or outcomes[Outcome.FAILED]:
        return EXIT_FAILURES
    if rollout.state in (Rollout.State.PAUSED, Rollout.State.CANCELLED):
        return EXIT_STOPPED
    if outcomes[Outcome.CONFLICTED]:
        return EXIT_CONFLICTS
    return 0


class Command(BaseCommand):
    help = "Roll a template's projects out to one of its revisions in waves, each gated on health."

    # The gateway a dry run reads hosts' digests through; tests replace it with a fake.
    runtime_files = AgentRuntimeFiles

    def add_arguments(self, parser):
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("--template", help="Template name, e.g. supabase (with --to)")
        action.add_argument("--resume", type=int, metavar="ROLLOUT", help="Resume a paused or halted rollout")
        action.add_argument("--pause", type=int, metavar="ROLLOUT", help="Pause a running rollout")
        action.add_argument("--cancel", type=int, metavar="ROLLOUT", help="Cancel an unfinished rollout")
        action.add_argument("--rollback", type=int, metavar="ROLLOUT", help="Move a rollout's projects back")
        action.add_argument("--show", type=int, metavar="ROLLOUT", help="Print a rollout's state and outcomes")
        parser.add_argument("--to", help="'latest' or a revision number")
        parser.add_argument("--project", action="append", default=[], metavar="REF", help="Only these projects")
        parser.add_argument("--canary", type=_not_negative, default=1, metavar="N", help="Projects in the first wave")
        parser.add_argument("--wave-size", type=_positive, default=5, metavar="N", help="Projects per later wave")
        parser.add_argument(
            "--max-failures", type=_positive, default=1, metavar="N", help="Failed projects that halt it"
        )
        parser.add_argument("--concurrency", type=_positive, default=2, metavar="N", help="Operations at once")
        parser.add_argument("--no-restart", action="store_true", help="Push files; restart nothing")
        parser.add_argument("--fail-on-conflict", action="store_true", help="Count conflicts as failures")
        parser.add_argument("--dry-run", action="store_true", help="Plan against the hosts' files, change nothing")
        parser.add_argument("--json", action="store_true", help="Print the outcome as JSON")

    def handle(self, *args, **options):
        self.json = options["json"]
        self.console = Console(file=self.stdout, width=160, highlight=False)
        try:
            if options["template"]:
                if not options["to"]:
                    raise CommandError("--template needs --to latest|REV")
                target = self._target(options["template"], options["to"])
                if options["dry_run"]:
                    return self._dry_run(target, options)
                rollout = rollouts.start_rollout(
                    target,
                    refs=options["project"] or None,
                    canary=options["canary"],
                    wave_size=options["wave_size"],
                    max_failures=options["max_failures"],
                    concurrency=options["concurrency"],
                    restart=not options["no_restart"],
                    fail_on_conflict=options["fail_on_conflict"],
                    label=LABEL,
                )
            elif options["rollback"]:
                rollout = rollouts.rollback(self._rollout(options["rollback"]), refs=options["project"], label=LABEL)
            elif options["resume"]:
                rollout = self._rollout(options["resume"])
                if not rollouts.resume(rollout, label=LABEL):
                    raise CommandError(f"{rollout} cannot be resumed (only paused or halted ones can)")
            elif options["pause"] or options["cancel"]:
                rollout = self._rollout(options["pause"] or options["cancel"])
                verb = rollouts.pause if options["pause"] else rollouts.cancel
                if not verb(rollout, label=LABEL):
                    raise CommandError(f"{rollout} is not in a state that allows this")
                return self._finish(rollout)
            else:
                return self._finish(self._rollout(options["show"]))
        except rollouts.RolloutRefused as refusal:
            raise CommandError(str(refusal)) from None
        self._watch(rollout)
        return self._finish(rollout)

    def _rollout(self, pk: int) -> Rollout:
        rollout = Rollout.objects.select_related("target").filter(pk=pk).first()
        if rollout is None:
            raise CommandError(f"no rollout #{pk}")
        return rollout

    def _target(self, template: str, to: str) -> TemplateVersion:
        versions = TemplateVersion.objects.filter(name=template)
        if to == "latest":
            target = versions.order_by("-revision").first()
        elif to.isdigit():
            target = versions.filter(revision=int(to)).first()
        else:
            raise CommandError("--to takes 'latest' or a revision number")
        if target is None:
            raise CommandError(f"template {template} has no version {to}; run `manage.py templates sync` first")
        return target

    def _watch(self, rollout: Rollout) -> None:
        """Follow the rollout the worker drives until it stops and nothing of it is in flight."""
        if not self.json:
            self.stderr.write(f"{rollout} started; the worker drives it (Ctrl-C leaves it running)")
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=self.stderr),
            transient=True,
            disable=self.json,
        )
        try:
            with progress:
                bar = progress.add_task("starting", total=None)
                while True:
                    rollout.refresh_from_db()
                    counts = rollouts.summary(rollout)
                    in_flight = counts["outcomes"][Outcome.RUNNING]
                    progress.update(
                        bar,
                        total=counts["total"],
                        completed=counts["settled"],
                        description=f"#{rollout.pk} {rollout.state}, wave {rollout.wave}, {in_flight} in flight",
                    )
                    if rollout.state != Rollout.State.RUNNING and not in_flight:
                        return
                    time.sleep(POLL_S)
        except KeyboardInterrupt:
            raise CommandError(
                f"stopped watching; {rollout} goes on in the worker "
                f"(--show {rollout.pk}, --pause {rollout.pk}, --cancel {rollout.pk})",
                returncode=EXIT_STOPPED,
            ) from None

    def _finish(self, rollout: Rollout) -> None:
        rollout.refresh_from_db()
        if self.json:
            self.stdout.write(json.dumps(rollouts.as_json(rollout), indent=2))
        else:
            self._table(rollout)
        status = exit_status(rollout)
        if status:
            raise CommandError(f"{rollout}: {rollout.reason or 'see the outcomes above'}", returncode=status)

    def _table(self, rollout: Rollout) -> None:
        record = rollouts.as_json(rollout)
        table = Table("project", "wave", "from", "to", "outcome", "detail", title=str(rollout))
        for entry in record["projects"]:
            detail = entry["message"]
            if entry["conflicts"]:
                detail += f" [conflicts: {', '.join(entry['conflicts'])}]"
            table.add_row(
                entry["ref"],
                str(entry["wave"]),
                f"r{entry['from_revision']}",
                f"r{entry['to_revision']}",
                entry["outcome"],
                detail,
            )
        self.console.print(table)
        counts = ", ".join(f"{n} {outcome}" for outcome, n in record["summary"].items() if n)
        self.console.print(f"{rollout.state}: {counts}" + (f" ({rollout.reason})" if rollout.reason else ""))
        if record["summary"][Outcome.CONFLICTED]:
            self.console.print(
                "Resolve conflicts with: manage.py resolve_conflicts --project REF --take-template|--keep-local "
                "(--show for the three-way diff)"
            )

    def _dry_run(self, target: TemplateVersion, options) -> None:
        try:
            behind = list(rollouts.projects_behind(target, options["project"] or None))
        except rollouts.RolloutRefused as refusal:
            raise CommandError(str(refusal)) from None
        files = self.runtime_files()
        results = []
        for position, project in enumerate(behind):
            wave = rollouts.wave_of(position, options["canary"], options["wave_size"])
            results.append((wave, plan_migration(project, target, files, label=LABEL)))
        if self.json:
            projects = [
                {
                    "ref": r.ref,
                    "wave": wave,
                    "from_revision": r.from_revision,
                    "to_revision": r.to_revision,
                    "outcome": r.status,
                    "message": r.message,
                    "conflicts": [a.path for a in r.plan.conflicts] if r.plan else [],
                }
                for wave, r in results
            ]
            self.stdout.write(json.dumps({"dry_run": True, "template": target.name, "projects": projects}, indent=2))
        else:
            table = Table("project", "wave", "from", "to", "plan", "detail", title=f"dry run to {target}")
            for wave, r in results:
                table.add_row(r.ref, str(wave), f"r{r.from_revision}", f"r{r.to_revision}", r.status, r.message)
            self.console.print(table)
            for _, r in results:
                for action in r.plan.conflicts if r.plan else []:
                    self.console.print(f"{r.ref} {action.path}: {action.reason}")
                    if action.diff:
                        self.stdout.write(action.diff)
        statuses = [r.status for _, r in results]
        if Outcome.FAILED in statuses:
            raise CommandError("planning failed for some projects", returncode=EXIT_FAILURES)
        if Outcome.CONFLICTED in statuses:
            raise CommandError("some projects would conflict", returncode=EXIT_CONFLICTS)
