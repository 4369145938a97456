"""The process driver provisions a real PostgreSQL 15 through a real agent process."""

import os
import shutil
import signal
import socket
import time

import psycopg
import pytest

from agent.api import FileSpec, Probe
from agent.client import AgentError
from agent.commands import Deadline
from agent.drivers.process import ClusterPaths, ProcessDriver, listen_addresses, shutting_down
from tests.agent_fixtures import installed_server_bindir, make_root, postgres_path_with_pg_ctl_in_front
from tests.stack import free_port_range, wait_for

PASSWORD = "correct-horse-battery"


def runtime_toml(port: int, major: int = 15) -> FileSpec:
    text = f'driver = "process"\n\n[postgres]\nmajor = {major}\nport = {port}\npassword = "{PASSWORD}"\n'
    return FileSpec("runtime.toml", text.encode())


def db_probe(port: int, password: str = PASSWORD) -> Probe:
    return Probe("db", "postgres", port, password=password, expect_major=15)


def connect(port: int) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=PASSWORD, dbname="postgres")


def test_provision_stop_start_and_delete_a_real_postgres(agent):
    client, ref, port = agent.client(), "shopdb01", free_port_range(1)
    client.put_files(ref, [runtime_toml(port)])

    assert client.up(ref).state == "running"
    [result] = client.health([db_probe(port)])
    assert (result.status, result.server_major) == ("pass", 15), result.detail
    with connect(port) as conn:
        conn.execute("create table kept (note text)")
        conn.execute("insert into kept values ('survives a stop')")
    assert client.check_ports([port]).taken == [port]
    assert client.status(ref).state == "running"

    assert client.down(ref).state == "stopped"
    assert client.status(ref).state == "stopped"
    assert client.health([db_probe(port)])[0].status == "fail"

    assert client.up(ref).state == "running"
    with connect(port) as conn:
        assert conn.execute("select note from kept").fetchone() == ("survives a stop",)

    assert client.delete(ref) == "absent"
    assert client.status(ref).state == "absent"
    assert client.check_ports([port]).free == [port]
    [kept] = (agent.root / ".deleted").iterdir()
    assert (kept / ".berth-pg" / "data" / "PG_VERSION").read_text().strip() == "15"


def test_cluster_runs_as_an_unprivileged_user_with_password_auth(agent):
    client, ref, port = agent.client(), "authdb01", free_port_range(1)
    client.put_files(ref, [runtime_toml(port)])
    client.up(ref)

    [wrong] = client.health([db_probe(port, password="wrong-password")])
    assert wrong.status == "fail" and "password" in wrong.detail
    state = agent.root / ref / ".berth-pg"
    if os.geteuid() == 0:
        # initdb and postgres refuse root: the agent runs them as the postgres user.
        assert state.owner() == "postgres"
    assert not (state / "initdb-password").exists()
    assert client.delete(ref, purge_data=True) == "absent"
    assert not (agent.root / ref).exists()
    assert not (agent.root / ".deleted").exists()


def test_restart_picks_up_a_new_port(agent):
    client, ref = agent.client(), "movedb01"
    first = free_port_range(2)
    second = first + 1
    client.put_files(ref, [runtime_toml(first)])
    client.up(ref)
    client.put_files(ref, [runtime_toml(second)])

    assert client.restart(ref).state == "running"
    assert client.health([db_probe(second)])[0].status == "pass"
    assert client.check_ports([first]).free == [first]
    client.delete(ref, purge_data=True)


def test_up_of_a_cluster_left_shutting_down_waits_for_its_stop_and_starts_it_again(agent):
    """A stop cut short (a cancel kills its pg_ctl) leaves the postmaster shutting down while
    pg_ctl status still says it runs. A smart shutdown, held by an open session, stands in for
    it here: `up` must not answer "already running" for a cluster about to be gone."""
    client, ref, port = agent.client(), "stopping01", free_port_range(1)
    client.put_files(ref, [runtime_toml(port)])
    client.up(ref)
    data = agent.root / ref / ".berth-pg" / "data"
    held = connect(port)
    try:
        os.kill(int((data / "postmaster.pid").read_text().split("\n")[0]), signal.SIGTERM)
        wait_for(lambda: shutting_down(data), timeout=10, interval=0.05, what="the smart shutdown")
        assert client.status(ref).state == "running"  # as pg_ctl status sees it

        assert client.up(ref).state == "running"
        assert not shutting_down(data)
        with connect(port) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError):
            held.execute("select 1")  # the stop seen through ended it
    finally:
        held.close()
        client.delete(ref, purge_data=True)


def test_up_of_a_cluster_whose_shutdown_ends_right_after_status_answered_starts_it(agent_factory):
    """A postmaster left shutting down ends whenever its shutdown is done, also between `up`'s
    look at it and pg_ctl status's. Here a pg_ctl in front of the real one answers status, then
    ends the shutdown's last session and waits for the postmaster's pid file to go: `up` must
    start the cluster, not answer "already running" for one that is gone."""
    real = installed_server_bindir(15) / "pg_ctl"
    end = 'kill -TERM "$(cat "${0%/*}/marks/held-pid")"; while [ -e "$2/postmaster.pid" ]; do sleep 0.01; done'
    then = f'{real} "$@"; said=$?; {end}; exit $said'  # pg_ctl -D DATA status: $2 is the data folder
    bindir, postgres_path, once = postgres_path_with_pg_ctl_in_front(15, '*" status "', then)
    try:
        agent = agent_factory(env={"BERTH_AGENT_POSTGRES_PATH": postgres_path})
        client, ref, port = agent.client(), "endsstatus", free_port_range(1)
        client.put_files(ref, [runtime_toml(port)])
        client.up(ref)
        data = agent.root / ref / ".berth-pg" / "data"
        with connect(port) as held:
            (once.parent / "held-pid").write_text(str(held.info.backend_pid))
            os.kill(int((data / "postmaster.pid").read_text().split("\n")[0]), signal.SIGTERM)
            wait_for(lambda: shutting_down(data), timeout=10, interval=0.05, what="the smart shutdown")
            once.touch()

            assert client.up(ref).state == "running"
        assert not once.exists(), "up's pg_ctl status went through the one in front"
        with connect(port) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        assert client.status(ref).state == "running"
        client.delete(ref, purge_data=True)
    finally:
        shutil.rmtree(bindir, ignore_errors=True)


def test_a_stop_of_a_cluster_whose_postmaster_is_gone_is_no_failure():
    """A shutdown already under way can end between the caller's look and pg_ctl stop's, which
    then exits 1 saying the PID file does not exist: the cluster is stopped, as asked."""
    root = make_root()
    try:
        driver = ProcessDriver.for_root(root, ["127.0.0.1"])  # as the agent makes it: root runs as postgres
        paths = ClusterPaths.of(root / "gone01")
        paths.state.parent.mkdir()
        driver.ensure_state_dir(paths)
        paths.data.mkdir()
        (paths.data / "PG_VERSION").write_text("15\n")  # a cluster's folder, as pg_ctl knows one

        said = driver.stop_cluster(installed_server_bindir(15), paths, Deadline(20))
        assert "does not exist" in said
    finally:
        shutil.rmtree(root)


def test_a_major_version_that_is_not_installed_is_refused_with_what_is(agent):
    client, ref = agent.client(), "olddb001"
    client.put_files(ref, [runtime_toml(free_port_range(1), major=9)])

    with pytest.raises(AgentError) as refused:
        client.up(ref)
    assert (refused.value.status, refused.value.code) == (422, "invalid")
    assert "PostgreSQL 9 is not installed" in refused.value.message and "15" in refused.value.message
    assert 15 in client.info().postgres_versions


def test_up_of_an_unknown_runtime_is_not_found(agent):
    with pytest.raises(AgentError) as missing:
        agent.client().up("nosuchdb")
    assert missing.value.status == 404


def test_it_serves_tls_with_the_certificate_from_runtime_toml(agent):
    from templating.secrets import generate_tls_secrets

    client, ref, port = agent.client(), "tlsdb01", free_port_range(1)
    tls = generate_tls_secrets(ref, "db.example.test")
    text = (
        f'driver = "process"\n\n[postgres]\nmajor = 15\nport = {port}\npassword = "{PASSWORD}"\n'
        f'tls_cert = """\n{tls["tls_cert"]}"""\ntls_key = """\n{tls["tls_key"]}"""\n'
    )
    client.put_files(ref, [FileSpec("runtime.toml", text.encode())])
    assert client.up(ref).state == "running"
    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", password=PASSWORD, dbname="postgres", sslmode="require"
    ) as conn:
        assert conn.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone() == (True,)
    key = agent.root / ref / ".berth-pg" / "server.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    client.delete(ref, purge_data=True)


def test_it_refuses_half_a_tls_pair(agent):
    client, ref, port = agent.client(), "tlsdb02", free_port_range(1)
    text = f'driver = "process"\n\n[postgres]\nmajor = 15\nport = {port}\npassword = "{PASSWORD}"\ntls_cert = "x"\n'
    client.put_files(ref, [FileSpec("runtime.toml", text.encode())])
    with pytest.raises(AgentError, match="go together"):
        client.up(ref)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_a_cluster_listens_only_where_the_agent_serves_by_default_loopback(agent):
    client, ref, port = agent.client(), "loopdb01", free_port_range(1)
    client.put_files(ref, [runtime_toml(port)])
    client.up(ref)
    with connect(port) as conn:
        assert conn.execute("show listen_addresses").fetchone() == ("127.0.0.1",)
    client.delete(ref, purge_data=True)


def test_a_start_whose_ipv4_address_is_taken_fails_at_once_with_postgres_own_message(agent):
    client, ref, port = agent.client(), "bounddb1", free_port_range(1)
    client.put_files(ref, [runtime_toml(port)])
    # An outgoing connection holding the port on IPv4 looks like this to the server.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        started = time.monotonic()
        with pytest.raises(AgentError) as failed:
            client.up(ref)
        took = time.monotonic() - started
    assert took < 20, took
    assert failed.value.code == "command_failed"
    assert 'could not bind IPv4 address "127.0.0.1": Address already in use' in failed.value.message
    assert client.status(ref).state == "stopped"

    assert client.up(ref).state == "running"  # the port is free again: the same runtime starts
    assert client.health([db_probe(port)])[0].status == "pass"
    client.delete(ref, purge_data=True)


def test_a_start_that_binds_only_some_of_its_addresses_is_stopped_and_failed(agent_factory):
    if not ipv6_loopback():
        pytest.skip("this host has no IPv6 loopback to bind beside 127.0.0.1")
    # Probed on ::1, reached (the agent) on 127.0.0.1: the cluster must answer on both.
    agent = agent_factory(env={"BERTH_AGENT_PROBE_HOST": "::1"})
    client, ref, port = agent.client(), "halfdb01", free_port_range(1)
    client.put_files(ref, [runtime_toml(port)])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        with pytest.raises(AgentError) as failed:
            client.up(ref)
    # PostgreSQL itself went on with ::1 alone (a warning); the agent stopped it and failed the start.
    assert 'could not bind IPv4 address "127.0.0.1"' in failed.value.message
    assert "could not listen on every address it serves (::1, 127.0.0.1)" in failed.value.message
    assert client.status(ref).state == "stopped"

    client.up(ref)
    for host in ("::1", "127.0.0.1"):
        with psycopg.connect(host=host, port=port, user="postgres", password=PASSWORD, dbname="postgres") as conn:
            assert conn.execute("show listen_addresses").fetchone() == ("::1,127.0.0.1",)
    client.delete(ref, purge_data=True)


def test_listen_addresses_resolve_names_and_let_a_wildcard_stand_for_its_family():
    assert listen_addresses(["127.0.0.1", "127.0.0.1"]) == ("127.0.0.1",)
    assert listen_addresses(["127.0.0.1", "0.0.0.0"]) == ("0.0.0.0",)
    assert listen_addresses(["::1", "127.0.0.1", "::"]) == ("127.0.0.1", "::")
    assert "127.0.0.1" in listen_addresses(["localhost"])


def fake_installation(folder, pg_ctl: str):
    """A bin folder with the three tools discovery looks for; pg_ctl runs the given shell."""
    folder.mkdir(parents=True)
    for tool, body in (("initdb", "exit 0"), ("postgres", "exit 0"), ("pg_ctl", pg_ctl)):
        (folder / tool).write_text(f"#!/bin/sh\n{body}\n")
        (folder / tool).chmod(0o755)
    return folder


def test_a_version_lookup_that_times_out_is_an_error_not_a_missing_installation(tmp_path, monkeypatch):
    from agent.drivers import process
    from agent.errors import CommandTimeout

    monkeypatch.setattr(process, "_DISCOVERY_DEADLINE_S", 0.5)
    slow = fake_installation(tmp_path / "slow", "sleep 5")
    with pytest.raises(CommandTimeout):
        process._major_of(slow, process.SERVER_TOOLS)
    broken = fake_installation(tmp_path / "broken", "exit 1")
    assert process._major_of(broken, process.SERVER_TOOLS) is None
    working = fake_installation(tmp_path / "working", 'echo "pg_ctl (PostgreSQL) 16.4"')
    assert process._major_of(working, process.SERVER_TOOLS) == 16
