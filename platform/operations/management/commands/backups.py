"""manage.py backups: a project's backups from the shell, through the same verbs as the
dashboard and the Management API (operations.protection).

    backups list REF [--json]                          protection, window, base backups
    backups run REF [--json]                           a base backup now (queued)
    backups restore REF --to UNIX|latest [--into NAME] [--host NAME] [--json]
        in place (same ref; --host: onto another host, its own was lost), or --into a new
        project (a clone) of that name, on --host or wherever placement puts it
    backups verify REF [--json]                        a restore test (queued)
    backups protect REF|--all [--json]                 turn protection on (projects made before)

Exit status: 0 queued (or listed), 1 refused (the reason printed; nothing queued).
"""

import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from hosts.models import RuntimeHost
from operations import protection
from operations.actions import OperationRefused
from projects.models import Project

LABEL = "manage.py backups"


def when(moment) -> str | None:
    return moment.isoformat() if moment else None


class Command(BaseCommand):
    help = "List, take, restore, clone and verify a project's backups; protect projects made before backups."

    def add_arguments(self, parser):
        verbs = parser.add_subparsers(dest="verb", required=True)
        for verb, text in (
            ("list", "The project's protection, restorable window and base backups"),
            ("run", "Take a base backup now"),
            ("verify", "Test a restore into a scratch cluster"),
            ("restore", "Restore in place, onto another host, or into a new project"),
            ("protect", "Turn WAL archiving and base backups on"),
        ):
            sub = verbs.add_parser(verb, help=text)
            sub.add_argument("ref", nargs="?" if verb == "protect" else None)
            sub.add_argument("--json", action="store_true", help="Machine-readable output")
            if verb == "restore":
                sub.add_argument("--to", required=True, help="Seconds since 1970-01-01 UTC, or 'latest'")
                sub.add_argument("--into", metavar="NEW_NAME", help="Clone into a new project of this name")
                sub.add_argument("--host", metavar="NAME", help="The host to restore or clone onto")
            if verb == "protect":
                sub.add_argument("--all", action="store_true", help="Every live project not yet protected")

    def handle(self, *args, verb, ref, **options):
        self.as_json = options["json"]
        try:
            if verb == "protect" and options["all"]:
                return self.protect_all()
            if ref is None:
                raise CommandError("name the project (its ref)")
            project = Project.objects.live().select_related("host").filter(ref=ref).first()
            if project is None:
                raise CommandError(f"{ref}: no such project")
            if verb == "list":
                return self.show(project)
            if verb == "run":
                return self.queued(protection.request_backup(project, label=LABEL))
            if verb == "verify":
                return self.queued(protection.request_verify(project, label=LABEL))
            if verb == "protect":
                return self.queued(protection.protect_project(project, label=LABEL))
            return self.restore(project, options)
        except OperationRefused as refusal:
            raise CommandError(str(refusal)) from None

    def restore(self, project, options):
        target = protection.RestoreTarget.parse(options["to"])
        host = None
        if options["host"]:
            host = RuntimeHost.objects.filter(name=options["host"]).first()
            if host is None:
                raise CommandError(f"{options['host']}: no such host")
        if options["into"]:
            try:
                clone = protection.clone_project(project, target, name=options["into"], host=host, label=LABEL)
            except ValidationError as error:
                raise CommandError("; ".join(error.messages)) from None
            return self.queued(clone.operations.get(), project=clone)
        return self.queued(protection.request_restore(project, target, host=host, label=LABEL))

    def protect_all(self):
        queued, refused = [], []
        for project in Project.objects.live().filter(protection__isnull=True, host__isnull=False):
            try:
                queued.append(protection.protect_project(project, label=LABEL))
            except OperationRefused as refusal:
                refused.append(str(refusal))
        if self.as_json:
            self.stdout.write(json.dumps({"queued": [op.pk for op in queued], "refused": refused}))
        else:
            for operation in queued:
                self.stdout.write(f"{operation.project.ref}: protect queued (operation {operation.pk})")
            for reason in refused:
                self.stderr.write(f"refused: {reason}")

    def queued(self, operation, project=None):
        project = project or operation.project
        if self.as_json:
            body = {"ref": project.ref, "operation": operation.pk, "kind": operation.kind, "params": operation.params}
            self.stdout.write(json.dumps(body))
        else:
            self.stdout.write(f"{project.ref}: {operation.get_kind_display()} queued (operation {operation.pk})")

    def show(self, project):
        found = protection.protection_of(project)
        backups = list(project.backups.order_by("-started_at", "-pk"))
        if self.as_json:
            body = {
                "ref": project.ref,
                "protected": bool(found and found.enabled),
                "archiving": bool(found and found.configured_at),
                "repository": found.repository.location().display if found else None,
                "earliest": when(found.earliest_restorable_at) if found else None,
                "latest": when(found.latest_restorable_at) if found else None,
                "last_archived_wal": found.last_archived_wal if found else None,
                "failure": found.failure if found else None,
                "last_verified_at": when(found.last_verified_at) if found else None,
                "last_verify_ok": found.last_verify_ok if found else None,
                "backups": [
                    {
                        "id": backup.pk,
                        "label": backup.label,
                        "kind": backup.kind,
                        "trigger": backup.trigger,
                        "status": backup.status,
                        "size_bytes": backup.size_bytes,
                        "started_at": when(backup.started_at),
                        "finished_at": when(backup.finished_at),
                        "error": backup.error,
                    }
                    for backup in backups
                ],
            }
            self.stdout.write(json.dumps(body))
            return
        if found is None or not found.enabled:
            self.stdout.write(f"{project.ref}: not protected (`manage.py backups protect {project.ref}`)")
            return
        self.stdout.write(f"{project.ref}: into {found.repository.location().display}")
        self.stdout.write(f"restorable: {found.window_text()}")
        if found.failure:
            self.stdout.write(f"FAILING: {found.failure}")
        for backup in backups:
            size = f"{backup.size_bytes} bytes" if backup.size_bytes is not None else "-"
            self.stdout.write(
                f"  {backup.started_at:%Y-%m-%d %H:%M:%S}  {backup.status:<9} {size:>16}  {backup.trigger}"
            )
