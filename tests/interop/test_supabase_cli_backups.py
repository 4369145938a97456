"""The official Supabase CLI (pinned, see package.json) lists a Berth project's backups and
restores it to a point in time: `supabase backups list -o json` and `supabase backups restore
--timestamp`, against a live Berth with a worker and a real agent, into a file:// repository."""

import time

import pytest

from backups.models import Backup, BackupStatus, Protection
from berth.env import parse_repository_url
from operations import protection
from operations.creation import create_project
from operations.models import Kind, Operation, State
from orgs.actions import create_token
from orgs.models import Role
from projects.models import Project, Status
from tests.api_helpers import join, make_org, make_user
from tests.stack import Worker, agent_host, connect, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stack(live_server, agent_factory, tmp_path, repository_folder, settings):
    from hosts.actions import refresh_host
    from tests.interop.conftest import Stack

    url = f"file://{repository_folder}"
    settings.BERTH_BACKUP_URL = parse_repository_url(url)
    agent = agent_factory()
    host = agent_host(agent)
    assert refresh_host(host, deadline=10)
    worker = Worker(
        tmp_path,
        BERTH_OPERATION_DEADLINE=240,
        BERTH_AGENT_CALL_DEADLINE=30,
        BERTH_BACKUP_URL=url,
        BERTH_WAL_ARCHIVE_TIMEOUT=1,
    )
    yield Stack(live_server, host, agent, tmp_path)
    worker.stop()


def rows(project: Project) -> int | None:
    with connect(project) as conn:
        if not conn.execute("select to_regclass('public.notes') is not null").fetchone()[0]:
            return None
        return conn.execute("select count(*) from notes").fetchone()[0]


def sql(project: Project, *statements: str) -> None:
    with connect(project) as conn:
        for statement in statements:
            conn.execute(statement)


def finished(operation: Operation, timeout: float = 240) -> Operation:
    return wait_for(
        lambda: Operation.objects.filter(pk=operation.pk).exclude(state__in=[State.QUEUED, State.RUNNING]).first(),
        timeout=timeout,
        interval=1,
        what=f"operation {operation.pk} to finish",
    )


def test_the_cli_lists_backups_and_restores_to_a_point_in_time(stack):
    alice = make_user("alice")
    org = make_org("Acme")
    join(alice, org, Role.DEVELOPER)
    token = create_token(alice, name="cli")[1]
    project = create_project(name="Notes", postgres_major=15, template="postgres", organization=org)
    assert finished(project.operations.get()).state == State.SUCCEEDED
    assert Protection.objects.get(project=project).configured_at is not None

    sql(project, "create table notes (id bigserial primary key, body text)", "insert into notes (body) values ('a')")
    backup_op = finished(protection.request_backup(project))
    assert backup_op.state == State.SUCCEEDED, backup_op.error_message
    sql(project, "insert into notes (body) values ('b')")
    time.sleep(1.5)
    point = int(time.time())
    time.sleep(1.5)
    sql(project, "drop table notes", "select pg_switch_wal()")

    def archived_past_point():
        protection.read_all_archivers()
        latest = Protection.objects.get(project=project).latest_restorable_at
        return latest is not None and latest.timestamp() > point

    wait_for(archived_past_point, timeout=60, interval=1, what="WAL past the point to be archived")

    listed = stack.cli_json("backups", "list", "--project-ref", project.ref, token=token)
    assert listed["pitr_enabled"] is True and listed["walg_enabled"] is True
    assert [b["status"] for b in listed["backups"]] == ["COMPLETED"]
    assert listed["backups"][0]["is_physical_backup"] is True
    window = listed["physical_backup_data"]
    assert window["earliest_physical_backup_date_unix"] <= point <= window["latest_physical_backup_date_unix"]

    refused = stack.cli(
        "backups", "restore", "--project-ref", project.ref, "--timestamp", "1000", token=token, check=False
    )
    assert refused.returncode != 0
    assert "restorable window is" in refused.stdout + refused.stderr

    started = stack.cli("backups", "restore", "--project-ref", project.ref, "--timestamp", str(point), token=token)
    assert "Started PITR restore" in started.stderr
    restore = Operation.objects.get(project=project, kind=Kind.RESTORE)
    assert finished(restore).state == State.SUCCEEDED, restore.error_message
    assert Project.objects.get(pk=project.pk).status == Status.ACTIVE_HEALTHY
    assert rows(project) == 2
    assert Backup.objects.filter(project=project, status=BackupStatus.COMPLETED).exists()
