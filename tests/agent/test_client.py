"""The client's overall deadline holds whatever the server does (risk 2: calls that hang)."""

import hashlib
import socket
import threading
import time

import pytest

from agent.api import FileSpec, Probe
from agent.client import AgentClient, AgentProtocolError, AgentTimeout, AgentUnreachable

DEADLINE_S = 1.0
SLACK_S = 1.0  # scheduling noise on a loaded 2-core machine; a hang would be tens of seconds


class RawServer:
    """Accepts connections and hands each to `serve(conn)` on its own thread."""

    def __init__(self, serve):
        self.serve = serve
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            try:
                conn.recv(65536)
                self.serve(conn, self.stopped)
            except OSError:
                pass

    def close(self):
        self.stopped.set()
        self.sock.close()


@pytest.fixture
def raw_server():
    servers = []

    def start(serve):
        servers.append(RawServer(serve))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def never_answer(conn, stopped):
    stopped.wait(60)


def trickle_headers(conn, stopped):
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
        if stopped.wait(0.2):
            return
        conn.sendall(bytes([byte]))


def trickle_body(conn, stopped):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
    while not stopped.wait(0.2):
        conn.sendall(b" ")


def answer(body: bytes, headers: bytes = b""):
    def serve(conn, stopped):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), headers) + body)

    return serve


def timed(call) -> tuple[type, float]:
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        call()
    return raised.type, time.monotonic() - started


@pytest.mark.parametrize("serve", [never_answer, trickle_headers, trickle_body], ids=lambda serve: serve.__name__)
def test_the_overall_deadline_holds(raw_server, serve):
    client = AgentClient(raw_server(serve).url, "token", deadline=DEADLINE_S)
    kind, elapsed = timed(client.info)
    assert kind is AgentTimeout
    assert elapsed < DEADLINE_S + SLACK_S


def test_a_command_call_waits_for_its_command_deadline_plus_a_margin_only(raw_server):
    client = AgentClient(raw_server(never_answer).url, "token", deadline=30)
    kind, elapsed = timed(lambda: client.up("shopdb01", deadline_s=0.5))
    assert kind is AgentTimeout
    assert elapsed < 0.5 + 2.0 + SLACK_S


def test_a_reply_larger_than_the_cap_is_refused(raw_server):
    declared = AgentClient(raw_server(answer(b"{}" + b" " * 5000)).url, "token", max_reply_bytes=1024)
    with pytest.raises(AgentProtocolError, match="cap"):
        declared.info()


def test_an_undeclared_reply_larger_than_the_cap_is_refused(raw_server):
    def endless(conn, stopped):
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while not stopped.is_set():
            conn.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")

    client = AgentClient(raw_server(endless).url, "token", deadline=5, max_reply_bytes=64 * 1024)
    with pytest.raises(AgentProtocolError, match="cap"):
        client.info()


def test_a_reply_that_is_not_json_is_a_protocol_error(raw_server):
    with pytest.raises(AgentProtocolError):
        AgentClient(raw_server(answer(b"<html>")).url, "token").info()


def test_a_reply_missing_fields_is_a_protocol_error(raw_server):
    with pytest.raises(AgentProtocolError, match="missing required field `agent_version`"):
        AgentClient(raw_server(answer(b'{"driver": "process"}')).url, "token").info()


def test_a_reply_with_a_field_of_the_wrong_type_is_a_protocol_error(raw_server):
    reply = b'{"results": [{"name": "db", "status": "pass", "detail": "", "server_major": "15"}]}'
    with pytest.raises(
        AgentProtocolError, match=r"Expected `int \| null`, got `str` - at `\$.results\[0\].server_major`"
    ):
        AgentClient(raw_server(answer(reply)).url, "token").health([Probe("db", "tcp", 5432)])


def test_an_error_reply_that_is_not_the_agents_names_its_status(raw_server):
    def too_large(conn, stopped):
        body = b"Request Entity Too Large"
        conn.sendall(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    with pytest.raises(AgentProtocolError, match="answered 413: Request Entity Too Large") as refused:
        AgentClient(raw_server(too_large).url, "token").status("shopdb01")
    assert refused.value.status == 413


def test_nothing_listening_is_unreachable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(AgentUnreachable):
        AgentClient(f"http://127.0.0.1:{port}", "token", deadline=2).info()


def test_the_clients_deadline_caps_a_longer_command_deadline(raw_server):
    client = AgentClient(raw_server(never_answer).url, "token", deadline=DEADLINE_S)
    kind, elapsed = timed(lambda: client.up("shopdb01", deadline_s=30))
    assert kind is AgentTimeout
    assert elapsed < DEADLINE_S + SLACK_S


def test_typed_files_and_probes_round_trip(shared_agent):
    client = shared_agent.client()
    digests = client.put_files("wire0001", [FileSpec("a.txt", b"hello")])
    assert digests == {"a.txt": hashlib.sha256(b"hello").hexdigest()}
    [result] = client.health([Probe("nowhere", "tcp", 9, host="no-such-host.invalid")])
    assert result.as_dict() == {
        "name": "nowhere",
        "status": "misconfigured",
        "detail": result.detail,
        "server_major": None,
    }
    assert "no-such-host.invalid" in result.detail
    assert client.info().as_capabilities()["driver"] == "process"
    client.delete("wire0001", purge_data=True)
