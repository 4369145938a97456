"""/v1/projects/{ref}/database/backups: a project's backups and its point-in-time restore,
in the Supabase platform's shapes (as `supabase backups list` and `supabase backups
restore --timestamp` call them).

    GET  /v1/projects/{ref}/database/backups              V1BackupsResponse
    POST /v1/projects/{ref}/database/backups/restore-pitr {recovery_time_target_unix} -> 201

A restore is refused at once, naming the reason and nothing queued, for a time outside the
restorable window (the window is in the message), one that is not a time, or a project
busy with another operation. read_only members may list, not restore. The work is
operations.protection's."""

from django.db import transaction
from ninja import Router
from ninja import Status as Reply

from api.access import caller, project_for
from api.audit import token_used
from api.errors import ApiError
from api.schemas import BackupsOut, Message, RestorePitrIn
from audit.models import Action
from backups.models import BackupStatus
from operations.actions import OperationRefused
from operations.models import Kind
from operations.protection import RestoreTarget, protection_of, request_restore

router = Router(tags=["database backups"])

# Backup statuses as the platform names them.
PLATFORM_STATUS = {
    BackupStatus.RUNNING: "PENDING",
    BackupStatus.COMPLETED: "COMPLETED",
    BackupStatus.FAILED: "FAILED",
    BackupStatus.EXPIRED: "REMOVED",
}


@router.get(
    "/{ref}/database/backups",
    response={200: BackupsOut, 404: Message},
    summary="The project's base backups and its restorable window",
)
def list_backups(request, ref: str):
    project = project_for(request, ref)
    protection = protection_of(project)
    on = protection is not None and protection.enabled and protection.configured_at is not None
    window = protection.window if protection is not None else None
    backups = project.backups.order_by("-started_at", "-pk") if on else []
    return {
        "region": project.host.region if project.host and project.host.region else project.region or "local",
        "walg_enabled": on,
        "pitr_enabled": on,
        "backups": [
            {
                "id": backup.pk,
                "inserted_at": backup.started_at.isoformat(),
                "is_physical_backup": True,
                "status": PLATFORM_STATUS[backup.status],
            }
            for backup in backups
        ],
        "physical_backup_data": {
            "earliest_physical_backup_date_unix": int(window[0].timestamp()) if window else None,
            "latest_physical_backup_date_unix": int(window[1].timestamp()) if window else None,
        },
    }


@router.post(
    "/{ref}/database/backups/restore-pitr",
    response={201: None, 400: Message, 403: Message, 404: Message},
    summary="Restore the project's database, in place, to a point in time",
)
def restore_pitr(request, ref: str, body: RestorePitrIn):
    project = project_for(request, ref, write=True)
    try:
        target = RestoreTarget.parse(body.recovery_time_target_unix)
        if target.at is None:
            raise OperationRefused("recovery_time_target_unix must be a time (seconds since 1970-01-01 UTC)")
        with transaction.atomic():
            operation = request_restore(project, target, actor=caller(request))
            token_used(request, Action.requested(Kind.RESTORE), project=project, operation=operation.pk)
    except OperationRefused as refusal:
        raise ApiError(400, str(refusal)) from None
    return Reply(201, None)
