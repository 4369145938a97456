"""What the backup tests on a real agent (test_backups.py, process driver; test_docker_backups.py,
docker driver) do to a runtime's database and its jobs: rows written under a label and counted
back, a backup job waited for, everything committed archived."""

import psycopg

from tests.stack import wait_for

PASSWORD = "correct-horse-battery"


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


def insert(port: int, label: str, rows: int) -> None:
    with connect(port) as conn:
        conn.execute("create table if not exists marks (id serial primary key, label text)")
        conn.execute("insert into marks (label) select %s from generate_series(1, %s)", (label, rows))


def labels(port: int, password: str = PASSWORD) -> dict[str, int]:
    with connect(port, password) as conn:
        return dict(conn.execute("select label, count(*) from marks group by label").fetchall())


def finished(client, ref: str, timeout: float = 240):
    return wait_for(lambda: (job := client.backup_job(ref)).state != "running" and job, timeout=timeout, what="the job")


def archive_everything(client, ref: str, port: int) -> None:
    """Switch to a new segment and wait until the one holding everything committed so far is
    archived (the archive timeout would switch too, but not at a moment a test can wait for).
    A commit goes first: with nothing written since the last switch (a base backup ends with
    one) pg_switch_wal switches nothing and names a segment no one fills (PostgreSQL 17
    writes nothing while idle)."""
    with connect(port) as conn:
        conn.execute("select txid_current()")
        (segment,) = conn.execute("select pg_walfile_name(pg_switch_wal())").fetchone()
    wait_for(
        lambda: (client.backup_archiver(ref).last_archived_wal or "") >= segment,
        timeout=60,
        what=f"{segment} to be archived",
    )
