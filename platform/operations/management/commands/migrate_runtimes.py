"""manage.py migrate_runtimes --template NAME --to latest|REV [--project REF ...] [--dry-run] [--batch-size N]

Re-syncs every live project of a template to one version, batch by batch. Projects
already on the target are skipped, so running it again resumes where a run stopped.
"""

from django.core.management.base import BaseCommand, CommandError

from berth.table import format_table
from operations.resync import CONFLICTED, FAILED, UNCHANGED, UPDATED, AgentRuntimeFiles, migrate_project
from projects.models import DesiredState, Project
from templating.models import TemplateVersion

LABEL = "manage.py migrate_runtimes"


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError
    return number


class Command(BaseCommand):
    help = "Re-sync the runtime files of a template's projects to one of its versions (three-way merge)."

    # The gateway to the hosts' agents; tests replace it with a fake.
    runtime_files = AgentRuntimeFiles

    def add_arguments(self, parser):
        parser.add_argument("--template", required=True, help="Template name, e.g. supabase")
        parser.add_argument("--to", required=True, help="'latest' or a revision number")
        parser.add_argument("--project", action="append", default=[], metavar="REF", help="Only these projects")
        parser.add_argument("--dry-run", action="store_true", help="Plan against the hosts' files, change nothing")
        parser.add_argument("--batch-size", type=_positive, default=20, metavar="N")

    def handle(self, *args, template, to, project, dry_run, batch_size, **options):
        target = self._target(template, to)
        projects = (
            Project.objects.live()
            .filter(template=template)
            .exclude(desired_state=DesiredState.DELETED)
            .select_related("template_version", "host")
            .order_by("ref")
        )
        if project:
            projects = projects.filter(ref__in=project)
            unknown = sorted(set(project) - set(projects.values_list("ref", flat=True)))
            if unknown:
                raise CommandError(f"no live {template} project with ref: {', '.join(unknown)}")
        skipped = projects.filter(template_version=target).count()
        pending = list(projects.exclude(template_version=target))
        mode = " (dry run: nothing will change)" if dry_run else ""
        self.stdout.write(
            f"Migrating {len(pending)} {template} project(s) to r{target.revision}{mode}; "
            f"{skipped} already on r{target.revision} skipped."
        )

        files = self.runtime_files()
        results = []
        batches = [pending[i : i + batch_size] for i in range(0, len(pending), batch_size)]
        for number, batch in enumerate(batches, start=1):
            self.stdout.write(f"Batch {number}/{len(batches)} ({len(batch)} project(s))")
            for item in batch:
                result = migrate_project(item, target, files, dry_run=dry_run, label=LABEL)
                results.append(result)
                self.stdout.write(f"  [{len(results)}/{len(pending)}] {result.ref}: {result.status}")

        self._report(results, skipped, target)
        failed = sum(r.status == FAILED for r in results)
        if failed:
            raise CommandError(f"{failed} project(s) failed; fix them and run again (finished ones are skipped).")

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

    def _report(self, results, skipped: int, target: TemplateVersion) -> None:
        if results:
            rows = [(r.ref, f"r{r.from_revision}", f"r{r.to_revision}", r.status, r.message) for r in results]
            self.stdout.write("")
            self.stdout.write(format_table(("project", "from", "to", "result", "detail"), rows))
        for result in results:
            if result.status == CONFLICTED:
                self.stdout.write(f"\nConflicts in {result.ref} (nothing was changed):")
                for action in result.plan.conflicts:
                    self.stdout.write(f"  {action.path}: {action.reason}")
                    if action.diff:
                        self.stdout.write(action.diff, ending="" if action.diff.endswith("\n") else "\n")
        counts = {s: sum(r.status == s for r in results) for s in (UPDATED, UNCHANGED, CONFLICTED, FAILED)}
        self.stdout.write(
            "\n"
            + ", ".join(f"{n} {s}" for s, n in counts.items())
            + f", {skipped} already on r{target.revision} (skipped)"
        )
