"""django-q2 entry points. Each is a thin caller of a verb and safe to run twice."""

from operations import cleanup, drift, health, login_roles, protection, reaper, rollouts, routes, upgrades
from operations.models import Operation
from operations.runner import OperationRun
from ports.actions import repair_block_counts


def run_operation(operation_id: int) -> bool:
    """Claim and run one operation. Returns whether this call did the work."""
    operation = Operation.objects.claim(operation_id)
    if operation is None:
        return False
    OperationRun(operation).run()
    # The host's router follows what the operation did (created, stopped, started, deleted).
    routes.push_after(operation.project)
    rollouts.on_operation_finished(operation)
    return True


def drive_rollout(rollout_id: int) -> int:
    return rollouts.drive(rollout_id)


def drive_rollouts() -> int:
    return rollouts.drive_all()


def clean_up(operation_id: int) -> bool:
    return cleanup.stop_what_it_started(operation_id)


def reap() -> int:
    return reaper.reap()


def refresh_health() -> int:
    return health.refresh_all()


def check_drift() -> int:
    return drift.check_all()


def push_routes() -> int:
    return routes.push_all()


def push_host_routes(host_id: int) -> bool:
    return routes.push_host(host_id)


def reap_login_roles() -> int:
    return login_roles.reap_expired()


def discard_kept_clusters() -> int:
    return upgrades.discard_expired()


def repair_port_counts() -> int:
    return len(repair_block_counts())


def queue_backups() -> int:
    return protection.queue_due_protects() + protection.queue_due_backups()


def queue_verifications() -> int:
    return protection.queue_due_verifications()


def read_archiving() -> int:
    return protection.read_all_archivers()


def prune_removed_backups() -> int:
    return protection.prune_removed()
