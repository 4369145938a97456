"""django-q2 entry points. Each is a thin caller of a verb and safe to run twice."""

from django.contrib.auth import get_user_model

from operations import cleanup, drift, health, reaper
from operations.models import Operation
from operations.resync import request_migration_resyncs
from operations.runner import OperationRun
from templating.models import TemplateVersion


def run_operation(operation_id: int) -> bool:
    """Claim and run one operation. Returns whether this call did the work."""
    operation = Operation.objects.claim(operation_id)
    if operation is None:
        return False
    OperationRun(operation).run()
    return True


def clean_up(operation_id: int) -> bool:
    return cleanup.stop_what_it_started(operation_id)


def reap() -> int:
    return reaper.reap()


def refresh_health() -> int:
    return health.refresh_all()


def check_drift() -> int:
    return drift.check_all()


def request_migration(version_id: int, user_id: int | None, label: str | None = None) -> dict:
    """Queue the re-syncs of a migration started from the dashboard, on behalf of who started it."""
    actor = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    return request_migration_resyncs(TemplateVersion.objects.get(pk=version_id), actor=actor, label=label)
