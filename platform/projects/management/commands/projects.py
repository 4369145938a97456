"""Create projects and act on many of them from the shell, through the same verbs as the dashboard."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from berth.table import format_table
from hosts.models import RuntimeHost
from operations.actions import act_on_projects, cancel_operation
from operations.creation import create_project
from projects.models import Project

LABEL = "manage.py projects"
ACTIONS = ["start", "stop", "restart", "resync", "delete", "retry"]


class Command(BaseCommand):
    help = "Create, list and act on projects."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a project and queue its provisioning")
        create.add_argument("name")
        create.add_argument("--postgres", type=int, default=15, help="Postgres major version (default 15)")
        create.add_argument("--template", default="postgres")
        create.add_argument("--host", help="host name; default: placement chooses")
        listing = sub.add_parser("list", help="list projects")
        listing.add_argument("--status")
        for action in ACTIONS:
            act = sub.add_parser(action, help=f"queue a {action} for each project ref")
            act.add_argument("refs", nargs="+")
            if action == "delete":
                act.add_argument("--purge-data", action="store_true", help="also remove the runtime's data")
        cancel = sub.add_parser("cancel", help="cancel each project's queued or running operation")
        cancel.add_argument("refs", nargs="+")

    def handle(self, *args, action, **options):
        if action == "create":
            return self.create(**options)
        if action == "list":
            return self.list(options["status"])
        if action == "cancel":
            return self.cancel(options["refs"])
        return self.act(action, options["refs"], purge_data=options.get("purge_data", False))

    def create(self, *, name, postgres, template, host, **_):
        host_row = None
        if host:
            host_row = RuntimeHost.objects.filter(name=host).first()
            if host_row is None:
                raise CommandError(f"No runtime host named {host!r}.")
        try:
            project = create_project(name=name, postgres_major=postgres, template=template, host=host_row, label=LABEL)
        except ValidationError as error:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in error.message_dict.items())) from None
        self.stdout.write(f"Created {project.ref} ({project.name}); provisioning is queued.")

    def list(self, status):
        projects = Project.objects.select_related("host", "template_version")
        if status:
            projects = projects.filter(status=status.upper())
        rows = [
            (p.ref, p.status, f"pg{p.postgres_major}", p.host.name if p.host else "-", str(p.template_version), p.name)
            for p in projects
        ]
        self.stdout.write(format_table(("ref", "status", "postgres", "host", "template", "name"), rows))

    def cancel(self, refs):
        """A running operation's agent command and what it started are stopped by a worker task."""
        projects = {p.ref: p for p in Project.objects.filter(ref__in=refs)}
        refused = 0
        for ref in refs:
            project = projects.get(ref)
            operation = project and project.operations.unfinished().select_related("project").first()
            if operation and cancel_operation(operation, label=LABEL):
                self.stdout.write(f"cancelled {ref}: {operation.kind} (operation {operation.pk})")
            else:
                refused += 1
                self.stderr.write(f"refused  {ref}: " + ("no such project" if project is None else "nothing to cancel"))
        if refused:
            raise CommandError(f"{refused} of {len(refs)} cancel(s) refused.")

    def act(self, action, refs, *, purge_data):
        params = {"purge_data": True} if purge_data else {}
        outcome = act_on_projects(refs, action, label=LABEL, params=params)
        for operation in outcome.queued:
            self.stdout.write(f"queued   {operation.project.ref}: {operation.kind} (operation {operation.pk})")
        for refusal in outcome.refused:
            self.stderr.write(f"refused  {refusal}")
        if outcome.refused:
            raise CommandError(f"{len(outcome.refused)} of {len(refs)} request(s) refused.")
