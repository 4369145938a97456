"""Verbs about what a project's host holds. Creating a project queues its provisioning, and
acting on a project runs work, so both go through operations (creation, actions)."""

from django.db import transaction
from django.utils import timezone

from audit.actions import record
from audit.models import Action
from projects.models import Project


def record_drift(project: Project, host_digests: dict[str, str | None], *, actor=None, label: str | None = None):
    """Record which managed files differ on the host from what Berth pushed ("locally modified").

    `host_digests` are the agent's digests (None: absent) read against `project.file_digests`,
    for all of its paths. Returns the drifted paths, or None when nothing was recorded because
    the recorded digests changed since (a re-sync landed meanwhile: the answer judged against
    the wrong base). The audit trail gets a row only when the set of drifted paths changes.
    """
    if not record_drifts([(project, host_digests)], actor=actor, label=label):
        return None
    return project.drifted_paths


def record_drifts(answers: list[tuple[Project, dict[str, str | None]]], *, actor=None, label: str | None = None) -> int:
    """record_drift for many projects at once (each with its host's digests); returns how many
    were recorded.

    One locked read for them all and one UPDATE for those whose drifted paths stay as they
    were, a drift check's usual answer; only a project whose drifted paths changed gets an
    UPDATE of its own, with its audit row.
    """
    if not answers:
        return 0
    drifted = {
        project.pk: sorted(
            path for path, digest in project.file_digests.items() if path in digests and digests[path] != digest
        )
        for project, digests in answers
    }
    now = timezone.now()
    with transaction.atomic():
        locked = Project.objects.select_for_update().filter(pk__in=drifted).order_by("pk")
        current = {row["pk"]: row for row in locked.values("pk", "file_digests", "drifted_paths")}
        # Digests recorded since the answer's base was read mean it was judged against the wrong base.
        recorded = [p for p, _ in answers if p.pk in current and current[p.pk]["file_digests"] == p.file_digests]
        moved = [p for p in recorded if drifted[p.pk] != current[p.pk]["drifted_paths"]]
        moved_pks = {p.pk for p in moved}
        Project.objects.filter(pk__in=[p.pk for p in recorded if p.pk not in moved_pks]).update(drift_checked_at=now)
        for project in moved:
            Project.objects.filter(pk=project.pk).update(drifted_paths=drifted[project.pk], drift_checked_at=now)
            record(
                actor,
                Action.PROJECT_DRIFT,
                project=project,
                detail={"drifted": drifted[project.pk], "before": current[project.pk]["drifted_paths"]},
                label=label or "drift check",
            )
    for project in recorded:
        project.drifted_paths = drifted[project.pk]
    return len(recorded)
