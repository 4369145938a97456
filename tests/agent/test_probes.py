"""Probe host resolution and the health probes (risk 4: never probe a host that cannot exist)."""

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from agent import probes
from agent.api import Probe
from agent.config import ConfigError
from agent.probes import ProbeHost, resolve_probe_host

# /proc/net/route of a container on a Docker bridge: default route via 172.17.0.1.
ROUTES = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    "eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
)


@pytest.fixture
def route_file(tmp_path):
    path = tmp_path / "route"
    path.write_text(ROUTES)
    return path


@pytest.fixture
def no_docker_host_name(monkeypatch):
    real = probes.resolves
    monkeypatch.setattr(probes, "resolves", lambda host: host != probes.DOCKER_HOST_NAME and real(host))


def test_this_machine_probes_on_loopback(shared_agent):
    info = shared_agent.client().info()
    assert (info.probe_host, info.probe_host_source) == ("127.0.0.1", "loopback")


def test_bare_metal_probes_on_loopback():
    assert resolve_probe_host(None, "docker", in_container=False) == ProbeHost("127.0.0.1", "loopback")


def test_the_process_driver_probes_on_loopback_even_in_a_container(route_file):
    # Its runtimes are the agent's own children and share its network.
    assert resolve_probe_host(None, "process", in_container=True, route_file=route_file).host == "127.0.0.1"


def test_in_a_container_without_host_docker_internal_the_gateway_is_probed(route_file, no_docker_host_name):
    resolved = resolve_probe_host(None, "docker", in_container=True, route_file=route_file)
    assert resolved == ProbeHost("172.17.0.1", "default-gateway")


def test_in_a_container_host_docker_internal_wins_when_it_resolves(route_file, monkeypatch):
    monkeypatch.setattr(probes, "resolves", lambda host: True)
    resolved = resolve_probe_host(None, "docker", in_container=True, route_file=route_file)
    assert resolved == ProbeHost("host.docker.internal", "host.docker.internal")


def test_a_container_with_no_way_to_the_host_stops_startup(tmp_path, no_docker_host_name):
    (tmp_path / "route").write_text(ROUTES.splitlines()[0] + "\n")
    with pytest.raises(ConfigError, match="BERTH_AGENT_PROBE_HOST"):
        resolve_probe_host(None, "docker", in_container=True, route_file=tmp_path / "route")


def test_the_override_wins_and_must_resolve():
    assert resolve_probe_host("localhost", "docker", in_container=True) == ProbeHost("localhost", "override")
    with pytest.raises(ConfigError, match="BERTH_AGENT_PROBE_HOST='no-such-host.invalid' does not resolve"):
        resolve_probe_host("no-such-host.invalid", "process")


def test_an_unresolvable_probe_host_is_misconfigured_not_failed(shared_agent):
    [result] = shared_agent.client().health([Probe("api", "tcp", 8000, host="no-such-host.invalid")])
    assert result.status == "misconfigured"


def test_tcp_and_http_probes_pass_and_fail(shared_agent):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    try:
        results = shared_agent.client().health(
            [
                Probe("tcp-up", "tcp", port),
                Probe("tcp-down", "tcp", closed_port),
                Probe("http-ok", "http", port, path="/health", expect_status=200),
                Probe("http-bad", "http", port, path="/other", expect_status=200),
            ]
        )
    finally:
        server.shutdown()
    assert [(result.name, result.status) for result in results] == [
        ("tcp-up", "pass"),
        ("tcp-down", "fail"),
        ("http-ok", "pass"),
        ("http-bad", "fail"),
    ]
    assert "503" in results[3].detail


def test_a_probe_that_hangs_fails_by_the_deadline(shared_agent):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        [result] = shared_agent.client().health([Probe("stuck", "http", port)], deadline_s=1)
    assert result.status == "fail"


def test_probes_that_hang_never_keep_another_from_running():
    # Hanging probes enough to fill a 16-thread pool twice over: the live one must still pass.
    with socket.socket() as silent, socket.socket() as live:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        live.bind(("127.0.0.1", 0))
        live.listen()
        hanging = [Probe(f"stuck{i}", "http", silent.getsockname()[1]) for i in range(40)]
        alive = Probe("alive", "tcp", live.getsockname()[1])
        results = probes.run_probes([*hanging, alive], "127.0.0.1", 1.0)
    assert results[-1].status == "pass", results[-1]
    assert {result.status for result in results[:-1]} == {"fail"}
