"""Backups on a real agent with real clusters (process driver), into a real S3-compatible store
(SeaweedFS) and a file:// folder: WAL archiving, base backups, point-in-time restore in place
and onto another runtime (a lost host), and restores that fail leaving the old data serving.
"""

import time

import psycopg
import pytest

from agent.api import FileSpec
from tests.stack import free_port_range, wait_for

PASSWORD = "correct-horse-battery"


def runtime_toml(major: int, port: int, password: str = PASSWORD) -> FileSpec:
    text = f'driver = "process"\n\n[postgres]\nmajor = {major}\nport = {port}\npassword = "{password}"\n'
    return FileSpec("runtime.toml", text.encode())


def connect(port: int, password: str = PASSWORD) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user="postgres",
        password=password,
        dbname="postgres",
        autocommit=True,
        connect_timeout=3,
    )


def provision(client, ref: str, major: int) -> int:
    port = free_port_range(1)
    client.put_files(ref, [runtime_toml(major, port)])
    client.up(ref)
    return port


def insert(port: int, label: str, rows: int) -> None:
    with connect(port) as conn:
        conn.execute(
            "create table if not exists marks (id serial primary key, label text, at timestamptz default now())"
        )
        conn.execute("insert into marks (label) select %s from generate_series(1, %s)", (label, rows))


def labels(port: int, password: str = PASSWORD) -> dict[str, int]:
    with connect(port, password) as conn:
        return dict(conn.execute("select label, count(*) from marks group by label").fetchall())


def finished(client, ref: str, timeout: float = 180):
    job = wait_for(lambda: (j := client.backup_job(ref)).state != "running" and j, timeout=timeout, what="the job")
    return job


def archived_after(client, ref: str, since: float) -> None:
    """Wait until a segment was archived after `since` (the archive timeout switches segments)."""
    wait_for(
        lambda: (client.backup_archiver(ref).last_archived_unix or 0) > since,
        timeout=60,
        what="a segment archived after the mark",
    )


@pytest.mark.parametrize("major", [16])
def test_it_restores_in_place_to_a_point_in_time_with_exactly_the_rows_committed_before(agent, repository, major):
    client, ref = agent.client(deadline=60), f"pitr{major}db"
    port = provision(client, ref, major)
    status = client.backup_archiving(ref, repository, archive_timeout_s=1)
    assert (status.enabled, status.restarted) == (True, True)
    insert(port, "before backup", 10)

    started = client.backup_start(ref, repository, job_s=20)
    assert started.state == "running"
    job = finished(client, ref)
    assert (job.kind, job.state) == ("base_backup", "succeeded"), (job.error, client.backup_archiver(ref))

    insert(port, "after backup", 5)
    time.sleep(1.5)
    target = time.time()
    time.sleep(1.5)
    insert(port, "too late", 7)
    archived_after(client, ref, time.time())

    catalog = client.backup_catalog(repository, ref)
    assert [backup.id for backup in catalog.backups] == [job.backup.id]
    assert catalog.earliest_unix <= target <= catalog.latest_unix

    client.restore_start(ref, repository, target_unix=target)
    restored = finished(client, ref)
    assert restored.state == "succeeded", restored.error
    assert labels(port) == {"before backup": 10, "after backup": 5}
    assert restored.restored_to_unix <= target
    assert client.status(ref).state == "running"
