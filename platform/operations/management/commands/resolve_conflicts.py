"""manage.py resolve_conflicts: settle projects a rollout left conflicted (operations.conflicts).

    resolve_conflicts --project REF [--project REF ...] --take-template|--keep-local|--show
    resolve_conflicts --rollout ROLLOUT --take-template|--keep-local

--take-template writes the template's rendering (the host's file is kept beside it as
`<path>.backup-<stamp>`), --keep-local keeps the host's file and records it as locally
modified; both queue a re-sync operation per project (the worker runs it, restarting a
running project) and wait for it. --show prints the three-way view: what Berth pushed,
what the host holds now and what the template renders, as diffs, secrets masked.
Exit status: 0 all resolved, 4 some could not be, 1 a refused request.
"""

import json
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from operations import rollouts
from operations.actions import OperationRefused
from operations.conflicts import KEEP_LOCAL, TAKE_TEMPLATE, three_way
from operations.models import Outcome, Rollout, RolloutProject
from projects.models import Project

LABEL = "manage.py resolve_conflicts"
EXIT_FAILURES = 4
POLL_S = 0.5


class Command(BaseCommand):
    help = "Resolve re-sync conflicts of rollout projects: take the template's files or keep the host's."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--project", action="append", metavar="REF", help="A conflicted project")
        which.add_argument("--rollout", type=int, metavar="ROLLOUT", help="Every conflicted project of a rollout")
        how = parser.add_mutually_exclusive_group(required=True)
        how.add_argument("--take-template", action="store_const", const=TAKE_TEMPLATE, dest="how")
        how.add_argument("--keep-local", action="store_const", const=KEEP_LOCAL, dest="how")
        how.add_argument("--show", action="store_const", const="show", dest="how", help="Print the three-way view")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print the outcomes as JSON")

    def handle(self, *args, project, rollout, how, as_json, **options):
        entries = self._entries(project, rollout)
        if how == "show":
            return self._show(entries)
        queued = []
        for entry in entries:
            try:
                queued.append((entry, rollouts.resolve(entry, how, label=LABEL)))
            except (OperationRefused, rollouts.RolloutRefused) as refusal:
                raise CommandError(f"{entry.project.ref}: {refusal}") from None
        results = [self._wait(entry) for entry, _ in queued]
        if as_json:
            self.stdout.write(json.dumps(results, indent=2))
        else:
            for result in results:
                self.stdout.write(f"{result['ref']}: {result['outcome']}: {result['message']}")
        if any(result["outcome"] != Outcome.RESOLVED for result in results):
            raise CommandError("some conflicts were not resolved", returncode=EXIT_FAILURES)

    def _entries(self, refs, rollout_pk) -> list[RolloutProject]:
        if rollout_pk is not None:
            rollout = Rollout.objects.filter(pk=rollout_pk).first()
            if rollout is None:
                raise CommandError(f"no rollout #{rollout_pk}")
            entries = list(rollout.projects.filter(outcome=Outcome.CONFLICTED).select_related("project", "rollout"))
            if not entries:
                raise CommandError(f"{rollout} has no conflicted project")
            return entries
        entries = []
        for ref in refs:
            project = Project.objects.filter(ref=ref).first()
            if project is None:
                raise CommandError(f"no project {ref}")
            entry = rollouts.latest_conflict(project)
            if entry is None:
                raise CommandError(f"{ref} has no conflicted rollout to resolve")
            entries.append(entry)
        return entries

    def _wait(self, entry: RolloutProject) -> dict:
        """Wait for the resolution's operation (within its queue and running deadlines)."""
        limit = time.monotonic() + settings.BERTH_QUEUE_DEADLINE + settings.BERTH_OPERATION_DEADLINE
        while time.monotonic() < limit:
            rollouts.drive(entry.rollout_id)
            entry.refresh_from_db()
            if entry.outcome != Outcome.RUNNING:
                break
            time.sleep(POLL_S)
        ref, outcome = entry.project.ref, entry.outcome
        return {"ref": ref, "rollout": entry.rollout_id, "outcome": outcome, "message": entry.message}

    def _show(self, entries: list[RolloutProject]) -> None:
        for entry in entries:
            project = Project.objects.select_related("template_version", "host").get(pk=entry.project_id)
            files = three_way(project, entry.target_version, deadline=settings.BERTH_AGENT_CALL_DEADLINE)
            self.stdout.write(f"== {project.ref}: {project.template_version} -> {entry.target_version}")
            if not files:
                self.stdout.write("no conflict now")
            for view in files:
                self.stdout.write(f"-- {view.path}: {view.reason}")
                self.stdout.write("the host's edit (pushed -> host now):")
                self.stdout.write(view.host_diff or "(no difference)\n", ending="")
                self.stdout.write("the template's change (pushed -> template):")
                self.stdout.write(view.template_diff or "(no difference)\n", ending="")
