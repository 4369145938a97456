"""Verbs about what a project's host holds. Creating a project queues its provisioning, and
acting on a project runs work, so both go through operations (creation, actions)."""

from django.db import transaction
from django.utils import timezone

from audit.actions import record
from projects.models import Project


def record_drift(project: Project, host_digests: dict[str, str | None], *, actor=None, label: str | None = None):
    """Record which managed files differ on the host from what Berth pushed ("locally modified").

    `host_digests` are the agent's digests (None: absent) read against `project.file_digests`,
    for all of its paths. Returns the drifted paths, or None when nothing was recorded because
    the recorded digests changed since (a re-sync landed meanwhile: the answer judged against
    the wrong base). The audit trail gets a row only when the set of drifted paths changes.
    """
    drifted = sorted(
        path for path, digest in project.file_digests.items() if path in host_digests and host_digests[path] != digest
    )
    with transaction.atomic():
        current = Project.objects.select_for_update().filter(pk=project.pk).values("file_digests", "drifted_paths")
        current = current.first()
        if current is None or current["file_digests"] != project.file_digests:
            return None
        Project.objects.filter(pk=project.pk).update(drifted_paths=drifted, drift_checked_at=timezone.now())
        if drifted != current["drifted_paths"]:
            record(
                actor,
                "project.drift",
                project=project,
                detail={"drifted": drifted, "before": current["drifted_paths"]},
                label=label or "drift check",
            )
    project.drifted_paths = drifted
    return drifted
