"""Port checkers: a loopback bind for this machine, the agent for a remote host."""

import socket
import types

import pytest

from agent.client import AgentError
from ports.checkers import AgentPortChecker, LoopbackPortChecker, checker_for
from ports.errors import PortCheckFailed
from tests.factories import make_host

pytestmark = pytest.mark.django_db


def test_it_reports_a_port_a_listener_holds_as_taken_and_others_free():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        assert LoopbackPortChecker().taken(None, [busy, free]) == {busy}


def test_it_sees_a_listener_on_all_interfaces_too():
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        assert LoopbackPortChecker().taken(None, [busy]) == {busy}


class FakeClient:
    def __init__(self, taken=(), error=None):
        self.taken, self.error, self.asked = list(taken), error, []

    def check_ports(self, ports):
        self.asked.append(ports)
        if self.error:
            raise self.error
        return types.SimpleNamespace(free=[p for p in ports if p not in self.taken], taken=self.taken)


def test_it_asks_the_agent_of_a_remote_host():
    host = make_host(agent_url="http://10.0.0.7:8470")
    client = FakeClient(taken=[20001])
    made = []
    checker = AgentPortChecker(client_for=lambda h, deadline: made.append((h, deadline)) or client)
    assert checker.taken(host, range(20000, 20003)) == {20001}
    assert client.asked == [[20000, 20001, 20002]]
    assert made[0][0] == host and made[0][1] > 0


def test_it_turns_an_agent_error_into_a_port_check_failure():
    host = make_host(name="far", agent_url="http://10.0.0.7:8470")
    checker = AgentPortChecker(client_for=lambda h, deadline: FakeClient(error=AgentError("timed out")))
    with pytest.raises(PortCheckFailed, match="far: timed out"):
        checker.taken(host, [20000])


@pytest.mark.parametrize(
    "agent_url,local",
    [
        ("http://127.0.0.1:8470", True),
        ("http://localhost:8470", True),
        ("http://[::1]:8470", True),
        ("http://10.0.0.7:8470", False),
        ("https://runtime-3.example.com", False),
    ],
)
def test_it_binds_locally_only_for_a_host_whose_agent_is_on_loopback(agent_url, local):
    checker = checker_for(make_host(agent_url=agent_url))
    assert isinstance(checker, LoopbackPortChecker if local else AgentPortChecker)
