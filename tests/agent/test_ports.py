"""The port check reports which ports are free to bind here and which are taken."""

import socket

import httpx
import pytest


def test_a_port_held_open_is_taken_and_a_closed_one_free(shared_agent):
    with socket.socket() as held, socket.socket() as probe:
        held.bind(("127.0.0.1", 0))
        held.listen()
        probe.bind(("127.0.0.1", 0))
        taken, free = held.getsockname()[1], probe.getsockname()[1]
        probe.close()

        reply = shared_agent.client().check_ports([taken, free])

    assert (reply.taken, reply.free) == ([taken], [free])


@pytest.mark.parametrize("ports", [[80], [70000], ["5432"], [True], "5432"])
def test_ports_outside_the_range_are_invalid(shared_agent, ports):
    reply = httpx.post(
        f"{shared_agent.base_url}/v1/ports/check",
        headers={"Authorization": f"Bearer {shared_agent.token}"},
        json={"ports": ports},
    )
    assert reply.status_code == 422


def test_info_reports_the_kernels_ephemeral_port_range(shared_agent):
    reported = shared_agent.client().info().ephemeral_ports
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        assert reported == [int(part) for part in f.read().split()]


def test_an_unreadable_ephemeral_range_is_reported_as_unknown(tmp_path):
    from agent.portcheck import ephemeral_ports

    assert ephemeral_ports(str(tmp_path / "missing")) is None
    garbled = tmp_path / "range"
    garbled.write_text("32768\n")
    assert ephemeral_ports(str(garbled)) is None
    garbled.write_text("32768\t60999\n")
    assert ephemeral_ports(str(garbled)) == [32768, 60999]
