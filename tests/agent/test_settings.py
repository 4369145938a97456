"""A process runtime's database settings applied by the agent to its running cluster
(agent.drivers.settings): Postgres parameters by reload or restart, SSL enforcement and
allowed address ranges in pg_hba.conf, and a refused value leaving the old ones running.

One agent, one PostgreSQL 15 runtime serving TLS; clients from 127.0.0.2 (a socket bound
there) stand for a client elsewhere, since this host's own addresses are never restricted."""

import psycopg
import pytest

from agent.api import FileSpec, SettingsRequest
from agent.client import AgentError
from templating.secrets import generate_tls_secrets
from tests.agent_fixtures import AgentPool
from tests.pg_wire import startup, wrong_password
from tests.stack import PORT_BASE, free_port_range

REF = "settings0001"
PASSWORD = "settings-password-1"
ELSEWHERE = "127.0.0.2"


class Runtime:
    def __init__(self, pool: AgentPool, port: int):
        self.agent, self.port = pool.agents[0], port

    def apply(self, **fields):
        return self.agent.client(deadline=90).apply_settings(REF, SettingsRequest(**fields))

    def show(self, name: str) -> str:
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", password=PASSWORD, dbname="postgres"
        ) as connection:
            return connection.execute(f"show {name}").fetchone()[0]

    def startup(self, source: str, *, tls: bool) -> tuple[bytes, str]:
        return startup(self.port, source, tls=tls)


@pytest.fixture(scope="module")
def runtime():
    port = free_port_range(4, PORT_BASE + 580)
    pool = AgentPool()
    client = pool.start().client(deadline=90)
    tls = generate_tls_secrets(REF, "berth.test")
    text = (
        f'driver = "process"\n[postgres]\nmajor = 15\nport = {port}\npassword = "{PASSWORD}"\n'
        f'tls_cert = """\n{tls["tls_cert"]}"""\ntls_key = """\n{tls["tls_key"]}"""\n'
    )
    client.put_files(REF, [FileSpec("runtime.toml", text.encode())], private_paths=["runtime.toml"])
    assert client.up(REF).state == "running"
    yield Runtime(pool, port)
    pool.close()


def test_a_reloadable_parameter_is_running_when_the_call_returns(runtime):
    reply = runtime.apply(parameters={"work_mem": "12MB", "statement_timeout": "8s"})
    assert reply.values == {"work_mem": "12MB", "statement_timeout": "8s"}
    assert reply.pending_restart == [] and not reply.restarted
    assert runtime.show("work_mem") == "12MB"


def test_a_parameter_needing_a_restart_waits_for_one_unless_asked(runtime):
    before = runtime.show("max_connections")
    reply = runtime.apply(parameters={"max_connections": "77"})
    assert reply.pending_restart == ["max_connections"] and not reply.restarted
    assert runtime.show("max_connections") == before
    reply = runtime.apply(parameters={"max_connections": "77"}, restart=True)
    assert reply.restarted and reply.pending_restart == []
    assert runtime.show("max_connections") == "77"


def test_a_value_postgres_rejects_leaves_the_old_settings_running(runtime):
    runtime.apply(parameters={"work_mem": "12MB"})
    with pytest.raises(AgentError) as refused:
        runtime.apply(parameters={"work_mem": "lots"})
    assert refused.value.code == "settings_rejected"
    assert "work_mem" in refused.value.message
    assert runtime.show("work_mem") == "12MB"
    # The files hold the old settings too: the next reload or start keeps them.
    assert runtime.apply(parameters={"work_mem": "12MB"}).values == {"work_mem": "12MB"}


def test_a_value_only_a_start_would_take_is_refused_with_the_servers_words(runtime):
    runtime.apply(parameters={"shared_buffers": "128MB"}, restart=True)
    with pytest.raises(AgentError) as refused:
        runtime.apply(parameters={"shared_buffers": "900000GB"}, restart=True)
    assert refused.value.code == "settings_rejected"
    assert 'invalid value for parameter "shared_buffers"' in refused.value.message
    assert runtime.show("shared_buffers") == "128MB"
    assert runtime.apply(parameters={"shared_buffers": "128MB"}).pending_restart == []


def test_only_allowed_ranges_reach_the_server_and_this_host_always_does(runtime):
    runtime.apply(allowed_cidrs=["127.0.0.1/32"])
    kind, message = runtime.startup(ELSEWHERE, tls=True)
    assert kind == b"E" and "no pg_hba.conf entry" in message and ELSEWHERE in message
    assert runtime.startup("127.0.0.1", tls=False)[0] == b"R"
    runtime.apply(allowed_cidrs=["127.0.0.2/32"])
    assert runtime.startup(ELSEWHERE, tls=True)[0] == b"R"
    runtime.apply()  # the defaults: every address
    assert runtime.startup(ELSEWHERE, tls=False)[0] == b"R"


def test_ssl_enforcement_refuses_connections_without_tls(runtime):
    runtime.apply(ssl_enforced=True)
    kind, message = runtime.startup(ELSEWHERE, tls=False)
    assert kind == b"E" and "no encryption" in message
    assert runtime.startup(ELSEWHERE, tls=True)[0] == b"R"
    # The agent's own connections (this host) still work: the next apply connects without TLS.
    runtime.apply(ssl_enforced=False)
    assert runtime.startup(ELSEWHERE, tls=False)[0] == b"R"


def test_an_invalid_range_is_refused_and_changes_nothing(runtime):
    runtime.apply(allowed_cidrs=["127.0.0.1/32", "127.0.0.2/32"])
    with pytest.raises(AgentError) as refused:
        runtime.apply(allowed_cidrs=["127.0.0.300/32"])
    assert refused.value.code == "invalid"
    assert runtime.startup(ELSEWHERE, tls=False)[0] == b"R"


def test_repeated_failed_passwords_ban_an_address_until_it_is_unbanned(runtime):
    client = runtime.agent.client()
    assert client.bans(REF) == []
    for _ in range(4):
        assert "password authentication failed" in wrong_password(runtime.port, ELSEWHERE)
    assert client.bans(REF) == []  # under the threshold
    assert "password authentication failed" in wrong_password(runtime.port, ELSEWHERE)
    assert client.bans(REF) == [ELSEWHERE]
    kind, message = runtime.startup(ELSEWHERE, tls=False)
    assert kind == b"E" and "rejects connection" in message
    # This host's own failures never ban it; a settings change keeps the ban.
    for _ in range(6):
        wrong_password(runtime.port, "127.0.0.1")
    runtime.apply(parameters={"work_mem": "12MB"})
    assert client.bans(REF) == [ELSEWHERE]
    assert runtime.startup(ELSEWHERE, tls=False)[0] == b"E"
    assert runtime.startup("127.0.0.1", tls=False)[0] == b"R"
    assert client.bans(REF, unban=[ELSEWHERE]) == []
    assert runtime.startup(ELSEWHERE, tls=False)[0] == b"R"
