"""Major upgrades on a real agent with real clusters of 15 (Debian's), 16 and 17 (pgbin/):
the logical path carries data, roles with their passwords, extensions and sequences with a
client writing through the switch-over; the dump path carries what logical replication
cannot (large objects, tables without a key); the check refuses what would not survive; a
failure at the last step leaves the old major serving; rollback and discard.
"""

import os
import subprocess
import threading
import time

import psycopg
import pytest

from agent.api import FileSpec, SettingsRequest
from agent.client import AgentError
from tests.agent_fixtures import pg_ctl_for
from tests.pg_wire import startup
from tests.stack import free_port_range, wait_for

PASSWORD = "correct-horse-battery"


def runtime_toml(major: int, port: int) -> FileSpec:
    text = f'driver = "process"\n\n[postgres]\nmajor = {major}\nport = {port}\npassword = "{PASSWORD}"\n'
    return FileSpec("runtime.toml", text.encode())


def connect(port: int, user: str = "postgres", password: str = PASSWORD) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1", port=port, user=user, password=password, dbname="postgres", autocommit=True, connect_timeout=3
    )


def provision(client, ref: str, major: int) -> int:
    port = free_port_range(1)
    client.put_files(ref, [runtime_toml(major, port)])
    client.up(ref)
    return port


def wait_ready(client, ref: str):
    return wait_for(lambda: client.upgrade_state(ref).phase == "ready", timeout=120, what="the copy to be ready")


class Writer:
    """A client that inserts a row every 50 ms, reconnecting after each error; it keeps the
    writes the server acknowledged (each its own note) and when its errors happened."""

    def __init__(self, port: int):
        self.port, self.acknowledged, self.errors = port, [], []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.is_set():
            try:
                with connect(self.port) as conn:
                    while not self.stopped.is_set():
                        # A note of its own per write: an id the new major hands out again
                        # (its sequence behind) must not pass for a write that was lost.
                        note = f"live {len(self.acknowledged) + len(self.errors)}"
                        conn.execute("insert into orders (note) values (%s)", (note,))
                        self.acknowledged.append(note)
                        time.sleep(0.05)
            except psycopg.Error:
                self.errors.append(time.monotonic())
                time.sleep(0.05)

    def stop(self):
        self.stopped.set()
        self.thread.join(timeout=10)


def fill(port: int, rows: int = 20_000) -> None:
    with connect(port) as conn:
        conn.execute('create extension pgcrypto; create extension "uuid-ossp"')
        conn.execute(
            "create table orders (id bigserial primary key, note text, token uuid default uuid_generate_v4(), "
            "digest bytea default digest('x', 'sha256'))"
        )
        conn.execute("insert into orders (note) select md5(i::text) from generate_series(1, %s) i", (rows,))
        conn.execute("create materialized view order_count as select count(*) from orders")
        conn.execute("create role app login password 'app-password-12'")
        conn.execute("grant select on orders to app")


def checksum(port: int) -> tuple:
    with connect(port) as conn:
        return conn.execute(
            "select count(*), md5(string_agg(id::text || note, ',' order by id)) from orders"
        ).fetchone()


@pytest.mark.parametrize("source", [15, 16])
def test_logical_upgrade_to_17_carries_everything_with_seconds_of_downtime_and_rolls_back(agent, source):
    client, ref = agent.client(deadline=120), f"logic{source}db"
    port = provision(client, ref, source)
    fill(port)
    check = client.upgrade_check(ref, 17)
    assert (check.blockers, check.methods) == ([], ["logical", "dump"])

    assert client.upgrade_prepare(ref, 17, "logical").phase in ("copying", "ready")
    with connect(port) as conn:  # the old major serves while the copy runs
        conn.execute("insert into orders (note) values ('during the copy')")
    wait_ready(client, ref)
    writer = Writer(port)
    time.sleep(0.5)
    before_switch = list(writer.acknowledged)
    switched = client.upgrade_step(ref, "switch")
    time.sleep(1)
    writer.stop()
    before = checksum(port)
    client.put_files(ref, [runtime_toml(17, port)])

    assert (switched.phase, switched.current_major, switched.previous_major) == ("switched", 17, source)
    assert switched.downtime_s < 10
    with connect(port) as conn:
        assert conn.execute("select current_setting('server_version_num')::int / 10000").fetchone() == (17,)
        # Every acknowledged write is there; the sequence goes on after the last one.
        notes = {note for (note,) in conn.execute("select note from orders where note like 'live %'")}
        assert set(writer.acknowledged) <= notes and writer.acknowledged
        (after,) = conn.execute("insert into orders (note) values ('on 17') returning id").fetchone()
        assert after == conn.execute("select max(id) from orders").fetchone()[0]
        assert conn.execute("select count(*) from orders where note = 'during the copy'").fetchone() == (1,)
        assert conn.execute("select count from order_count").fetchone()[0] >= 20_001
        assert conn.execute("select extname from pg_extension order by 1").fetchall() == [
            ("pgcrypto",),
            ("plpgsql",),
            ("uuid-ossp",),
        ]
        assert conn.execute("select count(*) from pg_roles where rolname = 'berth_upgrade'").fetchone() == (0,)
        assert conn.execute("select count(*) from pg_subscription").fetchone() == (0,)
    with connect(port, "app", "app-password-12") as conn:  # roles come with their passwords
        assert conn.execute("select count(*) > 20000 from orders").fetchone() == (True,)
    assert client.status(ref).state == "running"
    assert before[0] >= 20_001

    rolled = client.upgrade_step(ref, "rollback")
    client.put_files(ref, [runtime_toml(source, port)])
    assert (rolled.phase, rolled.current_major, rolled.rolled_back_from) == ("none", source, 17)
    with connect(port) as conn:
        assert conn.execute("select current_setting('server_version_num')::int / 10000").fetchone() == (source,)
        # The old cluster as the switch left it: the writes made before it, none made on 17.
        assert conn.execute("select count(*) from orders where note = 'on 17'").fetchone() == (0,)
        notes = {note for (note,) in conn.execute("select note from orders where note like 'live %'")}
        assert before_switch and set(before_switch) <= notes
        # Nothing of the upgrade is left in it.
        assert conn.execute("select count(*) from pg_roles where rolname = 'berth_upgrade'").fetchone() == (0,)
        assert conn.execute("select count(*) from pg_publication").fetchone() == (0,)
        assert conn.execute("select count(*) from pg_replication_slots").fetchone() == (0,)
    client.delete(ref, purge_data=True)


def test_the_dump_path_carries_large_objects_and_tables_without_a_key(agent):
    client, ref = agent.client(deadline=120), "dumpdb16"
    port = provision(client, ref, 16)
    with connect(port) as conn:
        conn.execute("create table notes (body text)")  # no primary key
        conn.execute("insert into notes select 'note ' || i from generate_series(1, 1000) i")
        (blob,) = conn.execute("select lo_from_bytea(0, 'a large object')").fetchone()

    check = client.upgrade_check(ref, 17)
    assert check.methods == ["dump"]
    assert "public.notes has no primary key" in check.unusable["logical"]
    with pytest.raises(AgentError) as refused:
        client.upgrade_prepare(ref, 17, "logical")
    assert refused.value.status == 422 and "public.notes has no primary key" in refused.value.message

    client.upgrade_prepare(ref, 17, "dump")
    switched = client.upgrade_step(ref, "switch")
    assert (switched.current_major, switched.previous_major) == (17, 16)
    with connect(port) as conn:
        assert conn.execute("select count(*) from notes").fetchone() == (1000,)
        assert conn.execute("select convert_from(lo_get(%s), 'UTF8')", (blob,)).fetchone() == ("a large object",)

    discarded = client.upgrade_step(ref, "discard")
    assert (discarded.phase, discarded.previous_major) == ("none", None)
    with pytest.raises(AgentError, match="no earlier cluster kept"):
        client.upgrade_step(ref, "rollback")
    client.delete(ref, purge_data=True)


def test_the_check_refuses_what_would_not_survive_and_changes_nothing(agent):
    client, ref = agent.client(deadline=120), "refusedb"
    port = provision(client, ref, 16)
    with connect(port) as conn:
        conn.execute("create extension adminpack")  # shipped with 16, dropped from 17
    check = client.upgrade_check(ref, 17)
    assert check.methods == []
    assert [(b.kind, b.subject) for b in check.blockers] == [("unsupported_extension", "adminpack")]
    assert "lacks extension adminpack" in check.blockers[0].message
    assert [b.kind for b in client.upgrade_check(ref, 15).blockers] == ["not_newer"]
    [not_installed] = client.upgrade_check(ref, 18).blockers
    assert not_installed.kind == "not_installed" and "PostgreSQL 18 is not installed" in not_installed.message
    with pytest.raises(AgentError) as refused:
        client.upgrade_prepare(ref, 17, "dump")
    assert refused.value.status == 422 and "adminpack" in refused.value.message
    assert client.upgrade_state(ref).phase == "none"
    assert not (agent.root / ref / ".berth-pg" / "next").exists()
    client.delete(ref, purge_data=True)


def test_a_cluster_started_without_logical_wal_needs_a_restart_for_the_logical_path(agent):
    client, ref = agent.client(deadline=120), "walrestart"
    port = provision(client, ref, 15)
    with connect(port) as conn:
        conn.execute("create table t (id int primary key)")
    # As a cluster started before Berth set wal_level = logical: its settings say replica.
    data = agent.root / ref / ".berth-pg" / "data"
    conf = data / "berth.conf"
    conf.write_text(conf.read_text().replace("wal_level = logical", "wal_level = replica"))
    with connect(port) as conn:
        conn.execute("select pg_reload_conf()")
    client.down(ref)
    pg_ctl_start(data)
    check = client.upgrade_check(ref, 17)
    assert check.methods == ["dump"]
    assert "wal_level = replica" in check.unusable["logical"] and "restart" in check.unusable["logical"]

    client.restart(ref)
    assert client.upgrade_check(ref, 17).methods == ["logical", "dump"]
    client.delete(ref, purge_data=True)


def pg_ctl_start(data) -> None:
    user = {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}
    started = subprocess.run(
        [pg_ctl_for(data), "-D", data, "-w", "start", "-l", data.parent / "postgres.log"],
        cwd=data.parent,
        capture_output=True,
        text=True,
        **user,
    )
    assert started.returncode == 0, started.stdout + started.stderr


def test_a_switch_that_fails_at_its_last_step_leaves_the_old_major_serving(agent):
    client, ref = agent.client(deadline=120), "failswitch"
    port = provision(client, ref, 15)
    fill(port, rows=1000)
    client.upgrade_prepare(ref, 17, "logical")
    wait_ready(client, ref)
    # The new cluster will not start on the project's port: every step before that runs.
    next_conf = agent.root / ref / ".berth-pg" / "next" / "data" / "postgresql.conf"
    next_conf.write_text(next_conf.read_text() + "\nno_such_setting = 1\n")

    with pytest.raises(AgentError) as failed:
        client.upgrade_step(ref, "switch")
    assert "did not start" in failed.value.message
    with connect(port) as conn:  # the old major serves again, clients are let in, nothing lost
        assert conn.execute("select current_setting('server_version_num')::int / 10000").fetchone() == (15,)
        conn.execute("insert into orders (note) values ('after the failure')")
        assert conn.execute("select count(*) from orders").fetchone() == (1001,)
    state = client.upgrade_state(ref)  # the new cluster waits in next/ for abort
    assert state.phase == "failed" and "did not start" in state.detail
    with pytest.raises(AgentError, match="abort it"):
        client.upgrade_step(ref, "switch")

    aborted = client.upgrade_step(ref, "abort")
    assert (aborted.phase, aborted.current_major) == ("none", 15)
    assert not (agent.root / ref / ".berth-pg" / "next").exists()
    with connect(port) as conn:
        assert conn.execute("select count(*) from pg_roles where rolname = 'berth_upgrade'").fetchone() == (0,)
        assert conn.execute("select count(*) from pg_publication").fetchone() == (0,)
        assert conn.execute("select count(*) from pg_replication_slots").fetchone() == (0,)
    client.delete(ref, purge_data=True)


def test_deleting_a_runtime_mid_upgrade_stops_the_new_cluster_too(agent):
    client, ref = agent.client(deadline=120), "midupgrade"
    provision(client, ref, 16)
    client.upgrade_prepare(ref, 17, "dump")
    pid_file = agent.root / ref / ".berth-pg" / "next" / "data" / "postmaster.pid"
    pid = int(pid_file.read_text().split()[0])
    client.delete(ref, purge_data=True)
    wait_for(lambda: not _alive(pid), timeout=10, what="the new cluster's postmaster to stop")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_projects_own_settings_go_on_to_the_new_major(agent):
    client, ref = agent.client(deadline=120), "tuned16"
    port = provision(client, ref, 16)
    client.apply_settings(ref, SettingsRequest(parameters={"work_mem": "12MB"}, allowed_cidrs=["127.0.0.2/32"]))
    assert startup(port, "127.0.0.3", tls=False)[0] == b"E"
    client.upgrade_prepare(ref, 17, "dump")
    assert client.upgrade_step(ref, "switch").current_major == 17
    with connect(port) as conn:
        assert conn.execute("show server_version_num").fetchone()[0].startswith("17")
        assert conn.execute("show work_mem").fetchone() == ("12MB",)
    kind, message = startup(port, "127.0.0.3", tls=False)
    assert kind == b"E" and "no pg_hba.conf entry" in message
    assert startup(port, "127.0.0.2", tls=False)[0] == b"R"
    client.delete(ref, purge_data=True)
