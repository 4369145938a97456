"""What the backup tests end to end through a real agent (test_backups_e2e.py, process driver;
test_docker_backups_e2e.py, docker driver) share: the settings of a file:// repository, an
operation run as a worker runs it, the rows a project holds, the wait for its WAL archived."""

from pathlib import Path

from backups.models import Protection
from berth.env import parse_repository_url
from operations import protection, tasks
from operations.models import Operation, State
from projects.models import Project
from tests.stack import connect, wait_for


def use_repository(settings, folder: Path) -> None:
    """Backups into a file:// repository at `folder`, WAL archived every second, and deadlines
    a loaded machine meets."""
    settings.BERTH_BACKUP_URL = parse_repository_url(f"file://{folder}")
    settings.BERTH_WAL_ARCHIVE_TIMEOUT = 1
    settings.BERTH_OPERATION_DEADLINE = 240
    settings.BERTH_AGENT_CALL_DEADLINE = 60
    settings.BERTH_HEALTH_POLL_INITIAL = 0.2


def run(operation: Operation) -> Operation:
    assert tasks.run_operation(operation.pk) is True
    operation.refresh_from_db()
    assert operation.state == State.SUCCEEDED, f"{operation.kind}: {operation.error_code} {operation.error_message}"
    return operation


def count(project: Project) -> int | None:
    with connect(project) as conn:
        exists = conn.execute("select to_regclass('public.orders') is not null").fetchone()[0]
        return conn.execute("select count(*) from orders").fetchone()[0] if exists else None


def archived_past(project: Project, moment: float) -> None:
    """Wait until the archiving pass reads the project's latest restorable point past `moment`."""

    def past() -> bool:
        protection.read_all_archivers()
        latest = Protection.objects.get(project=project).latest_restorable_at
        return latest is not None and latest.timestamp() > moment

    wait_for(past, timeout=60, interval=1, what="the WAL past that moment to be archived")
