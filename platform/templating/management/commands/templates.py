"""manage.py templates sync | list [NAME] | diff NAME REV_A REV_B"""

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from berth.table import format_table
from templating.actions import SyncRace, sync_templates
from templating.manifest import ManifestError
from templating.models import TemplateVersion
from templating.registry import diff_versions
from templating.render import RenderError

LABEL = "manage.py templates"


class Command(BaseCommand):
    help = "Register, list and compare versions of the runtime templates under runtimes/."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True)
        sync = sub.add_parser("sync", help="Register a new version of every template whose content changed")
        sync.add_argument("--dir", help="Templates folder (default: settings.BERTH_RUNTIMES_DIR)")
        listing = sub.add_parser("list", help="List registered versions")
        listing.add_argument("name", nargs="?", help="Only this template")
        diff = sub.add_parser("diff", help="Show what changed between two versions of a template")
        diff.add_argument("name")
        diff.add_argument("rev_a", type=int)
        diff.add_argument("rev_b", type=int)

    def handle(self, *args, subcommand, **options):
        getattr(self, f"handle_{subcommand}")(**options)

    def handle_sync(self, *, dir, **options):
        try:
            results = sync_templates(dir, label=LABEL)
        except (ManifestError, RenderError, SyncRace) as error:
            raise CommandError(f"{error}\nNothing was registered.") from None
        for result in results:
            version = result.version
            if result.created:
                self.stdout.write(self.style.SUCCESS(f"{version.name}: registered r{version.revision}"))
            else:
                self.stdout.write(f"{version.name}: unchanged (r{version.revision})")

    def handle_list(self, *, name, **options):
        versions = TemplateVersion.objects.annotate(project_count=Count("projects")).order_by("name", "revision")
        if name:
            versions = versions.filter(name=name)
        latest = {}
        for version in versions:
            latest[version.name] = version.revision
        rows = [
            (
                v.name,
                f"r{v.revision}" + (" (latest)" if latest[v.name] == v.revision else ""),
                v.digest[:12],
                v.created_at.strftime("%Y-%m-%d %H:%M"),
                str(v.project_count),
            )
            for v in versions
        ]
        if not rows:
            self.stdout.write("No template versions registered; run `manage.py templates sync`.")
            return
        self.stdout.write(format_table(("template", "revision", "digest", "registered", "projects"), rows))

    def handle_diff(self, *, name, rev_a, rev_b, **options):
        found = {v.revision: v for v in TemplateVersion.objects.filter(name=name, revision__in=[rev_a, rev_b])}
        missing = [f"r{rev}" for rev in (rev_a, rev_b) if rev not in found]
        if missing:
            raise CommandError(f"template {name} has no {' or '.join(missing)}")
        diff = diff_versions(found[rev_a], found[rev_b])
        self.stdout.write(diff or f"{name} r{rev_a} and r{rev_b} have the same content.", ending="")
        if not diff:
            self.stdout.write("")
