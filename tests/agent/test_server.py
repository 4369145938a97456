"""The agent's server bounds what a flood can take: threads, connections, body size, idle time."""

import io
import socket
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from agent import server
from agent.client import AgentTimeout
from agent.config import load_config
from agent.endpoint import Endpoint
from agent.probes import ProbeHost
from agent.server import UNAUTHORIZED, Agent, BearerAuth, respond

TOKEN = "a-token-long-enough-1234"
LOOPBACK = ProbeHost("127.0.0.1", "loopback")


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def address(agent) -> tuple[str, int]:
    host, port = agent.base_url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def open_idle(stack: ExitStack, agent, count: int, first_bytes: bytes = b"") -> list[socket.socket]:
    """Connections that send `first_bytes` (a request never finished) and then nothing."""
    sockets = []
    for _ in range(count):
        sock = stack.enter_context(socket.create_connection(address(agent), timeout=5))
        if first_bytes:
            sock.sendall(first_bytes)
        sockets.append(sock)
    return sockets


def status_line(sock: socket.socket) -> bytes:
    return sock.recv(4096).split(b"\r\n", 1)[0]


def test_idle_connections_take_no_threads(agent_factory):
    agent = agent_factory(env={"BERTH_AGENT_THREADS": "4"})
    pid = agent.process.pid
    with ExitStack() as stack:
        open_idle(stack, agent, 100)
        open_idle(stack, agent, 100, first_bytes=b"GET /v1/info HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.5)  # let the server accept them all
        # The pool's threads, the main thread (which runs the event loop), the database
        # router's loop, the pooler's worker (agent.endpoint) and the network bans' scan:
        # none per connection.
        assert threads_of(pid) <= 4 + 4
        assert agent.client(deadline=10).info().driver == "process"
        assert threads_of(pid) <= 4 + 4


def test_a_body_over_the_limit_is_refused_before_it_is_read(agent_factory):
    agent = agent_factory(env={"BERTH_AGENT_MAX_BODY_MB": "1"})
    with socket.create_connection(address(agent), timeout=10) as sock:
        # Only the headers are sent: a server that meant to read the body would wait for it.
        sock.sendall(
            b"PUT /v1/runtimes/big00001/files HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + agent.token.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % ((1 << 20) + 1)
        )
        assert status_line(sock) == b"HTTP/1.1 413 Request Entity Too Large"


def test_a_body_within_the_limit_is_read(agent_factory):
    agent = agent_factory(env={"BERTH_AGENT_MAX_BODY_MB": "1"})
    padding = "x" * ((1 << 20) - 100)
    reply = httpx.post(
        f"{agent.base_url}/v1/runtimes/big00001/digests",
        headers={"Authorization": f"Bearer {agent.token}"},
        content=b'{"paths": ["%s"]}' % padding.encode(),
    )
    # Read and decoded: the path is refused for its length, not the body for its size.
    assert reply.status_code == 422 and "1024 characters" in reply.json()["error"]["message"]


def test_a_connection_left_idle_is_closed(agent_factory):
    agent = agent_factory(env={"BERTH_AGENT_IDLE_TIMEOUT": "1"})
    with socket.create_connection(address(agent), timeout=10) as sock:
        assert sock.recv(1) == b""  # closed by the agent, well before our own 10 s timeout


def test_past_the_connection_limit_new_connections_wait_until_one_closes(agent_factory):
    agent = agent_factory(env={"BERTH_AGENT_CONNECTION_LIMIT": "3"})
    with ExitStack() as stack:
        idle = open_idle(stack, agent, 3)
        time.sleep(0.5)
        with pytest.raises(AgentTimeout):
            agent.client(deadline=1).info()
        for sock in idle:
            sock.close()
        assert agent.client(deadline=10).info().driver == "process"


@pytest.mark.parametrize(
    "path, body, named",
    [
        ("/v1/health", b'{"probes": [{"name": "db", "kind": "tcp", "port": 5432, "colour": "red"}]}', "`colour`"),
        ("/v1/health", b'{"probes": [{"name": "db", "kind": "ftp", "port": 21}]}', "$.probes[0].kind"),
        ("/v1/health", b"{}", "`probes`"),
        ("/v1/runtimes/abcdef01/up", b'{"deadline_s": "soon"}', "$.deadline_s"),
        ("/v1/runtimes/abcdef01/up", b'{"operation": "42/../x"}', "$.operation"),
        ("/v1/runtimes/abcdef01/cancel", b'{"operation": "42", "wait_s": -1}', "$.wait_s"),
        ("/v1/runtimes/abcdef01/cancel", b'{"operation": "", "wait_s": 1}', "$.operation"),
        ("/v1/runtimes/abcdef01/cancel", b'{"operation": "42", "force": true}', "`force`"),
        ("/v1/ports/check", b'{"ports": [80]}', "$.ports[0]"),
        ("/v1/ports/check", b"ports=80", "not JSON"),
    ],
)
def test_a_malformed_body_is_invalid_and_says_where(shared_agent, path, body, named):
    reply = httpx.post(
        shared_agent.base_url + path, headers={"Authorization": f"Bearer {shared_agent.token}"}, content=body
    )
    assert reply.status_code == 422
    assert reply.json()["error"]["code"] == "invalid" and named in reply.json()["error"]["message"]


@pytest.mark.parametrize("query", ["purge_data=2", "purge_data=1&deadline_s=-1", "purge=1", "operation=a%20b"])
def test_a_malformed_delete_query_is_invalid(shared_agent, query):
    reply = httpx.delete(
        f"{shared_agent.base_url}/v1/runtimes/abcdef01?{query}",
        headers={"Authorization": f"Bearer {shared_agent.token}"},
    )
    assert reply.status_code == 422 and reply.json()["error"]["code"] == "invalid"


class Unreadable(io.RawIOBase):
    def read(self, size=-1):
        raise AssertionError("the body of an unauthenticated request was read")


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-of-some-length", f"Basic {TOKEN}", TOKEN])
def test_auth_answers_401_without_calling_the_app_or_reading_the_body(authorization):
    def app(environ, start_response):
        raise AssertionError("the app was called")

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/health", "CONTENT_LENGTH": "10", "wsgi.input": Unreadable()}
    if authorization:
        environ["HTTP_AUTHORIZATION"] = authorization
    started = []
    body = BearerAuth(app, TOKEN)(environ, lambda status, headers: started.append(status))
    assert started == ["401 Unauthorized"]
    assert body == respond(lambda *_: None, 401, UNAUTHORIZED)


def test_auth_passes_the_right_token_through():
    def app(environ, start_response):
        return [b"through"]

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/v1/info", "HTTP_AUTHORIZATION": f"bearer {TOKEN}"}
    assert BearerAuth(app, TOKEN)(environ, None) == [b"through"]


class CountingDriver:
    name = "process"

    def __init__(self):
        self.lookups = 0

    def postgres_versions(self) -> list[int]:
        self.lookups += 1
        return [15]


def test_info_looks_the_postgres_majors_up_at_most_once_a_ttl(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "compose_command", lambda: None)
    driver = CountingDriver()
    agent = unstarted_agent(tmp_path, driver)
    assert [agent.info().postgres_versions for _ in range(3)] == [[15]] * 3
    assert driver.lookups == 1
    later = time.monotonic() + server.POSTGRES_VERSIONS_TTL_S
    monkeypatch.setattr(server.time, "monotonic", lambda: later)
    assert agent.info().postgres_versions == [15] and driver.lookups == 2


def unstarted_agent(tmp_path, driver) -> Agent:
    """An agent whose server and database endpoint were never started (info still answers)."""
    config = load_config({"BERTH_AGENT_TOKEN": TOKEN, "BERTH_AGENT_ROOT": str(tmp_path)})
    return Agent(config, driver, LOOPBACK, Endpoint(config, LOOPBACK.host))


class FlakyDriver(CountingDriver):
    """Its first lookup times out, as `pg_ctl --version` can on a loaded host."""

    def postgres_versions(self) -> list[int]:
        from agent.errors import CommandTimeout

        if self.lookups == 0:
            self.lookups += 1
            raise CommandTimeout("pg_ctl --version outlived its deadline")
        return super().postgres_versions()


def test_info_keeps_no_answer_from_a_lookup_that_timed_out(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "compose_command", lambda: None)
    driver = FlakyDriver()
    agent = unstarted_agent(tmp_path, driver)
    with pytest.raises(server.ApiError) as raised:
        agent.info()
    assert raised.value.status == 504
    assert agent.info().postgres_versions == [15] and driver.lookups == 2


def test_warm_looks_up_before_serving_so_the_first_info_runs_no_command(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "compose_command", lambda: None)
    driver = CountingDriver()
    agent = unstarted_agent(tmp_path, driver)
    agent.warm()
    assert driver.lookups == 1
    assert agent.info().postgres_versions == [15] and driver.lookups == 1


def test_warm_survives_a_lookup_that_timed_out_and_info_looks_again(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(server, "compose_command", lambda: None)
    driver = FlakyDriver()
    agent = unstarted_agent(tmp_path, driver)
    agent.warm()
    assert "outlived its deadline" in caplog.text
    assert agent.info().postgres_versions == [15] and driver.lookups == 2
