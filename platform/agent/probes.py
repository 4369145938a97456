"""Where and how the agent probes runtimes.

Probe host (resolved once at startup, validated, reported in info):
1. BERTH_AGENT_PROBE_HOST when set; it must resolve.
2. Loopback for the process driver: its runtimes are the agent's own child processes and
   share its network, wherever the agent runs.
3. For the docker driver inside a container: loopback when the engine's daemon shares the
   agent's network namespace (an engine started inside the same container, where it
   publishes ports); else `host.docker.internal` when it resolves, else the container's
   default gateway, because published ports live on the Docker host.
4. Loopback otherwise (bare metal).

A probe that cannot run because of configuration (a host that does not resolve) answers
`misconfigured`, never `fail`: the control plane must not tear a stack down for it.
"""

import http.client
import os
import socket
import struct
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import psycopg

from agent.api import Probe, ProbeResult
from agent.config import ConfigError

LOOPBACK = "127.0.0.1"
DOCKER_HOST_NAME = "host.docker.internal"
ROUTE_FILE = Path("/proc/net/route")
CONTAINER_MARKERS = (Path("/.dockerenv"), Path("/run/.containerenv"))
_CGROUP_HINTS = ("docker", "kubepods", "containerd", "libpod", "lxc")
_RTF_GATEWAY = 0x2


@dataclass(frozen=True)
class ProbeHost:
    host: str
    source: str  # override | loopback | host.docker.internal | default-gateway


def resolve_probe_host(
    override: str | None,
    driver: str,
    *,
    in_container: bool | None = None,
    route_file: Path = ROUTE_FILE,
    engine_shares_network: bool = False,
) -> ProbeHost:
    """`engine_shares_network`: the docker engine's daemon runs in the agent's network namespace."""
    if override:
        if not resolves(override):
            raise ConfigError(f"BERTH_AGENT_PROBE_HOST={override!r} does not resolve")
        return ProbeHost(override, "override")
    if driver == "process":
        return ProbeHost(LOOPBACK, "loopback")
    if in_container is None:
        in_container = running_in_container()
    if not in_container:
        return ProbeHost(LOOPBACK, "loopback")
    if engine_shares_network:
        return ProbeHost(LOOPBACK, "engine-network")
    if resolves(DOCKER_HOST_NAME):
        return ProbeHost(DOCKER_HOST_NAME, DOCKER_HOST_NAME)
    gateway = default_gateway(route_file)
    if gateway is None:
        raise ConfigError(
            f"the agent runs in a container where {DOCKER_HOST_NAME} does not resolve and there is no default "
            "gateway; set BERTH_AGENT_PROBE_HOST to the address where runtimes publish their ports"
        )
    return ProbeHost(gateway, "default-gateway")


def engine_shares_network(proc: Path = Path("/proc")) -> bool:
    """True when a Docker daemon visible here runs in this process's network namespace.

    Then the engine publishes ports where the agent is, even inside a container (an engine
    started in the same container). A daemon in another namespace, or none visible (the
    usual container with the host's socket mounted), gives False.
    """
    try:
        own = os.readlink(proc / "self" / "ns" / "net")
    except OSError:
        return False
    for comm in proc.glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "dockerd" and os.readlink(comm.parent / "ns" / "net") == own:
                return True
        except OSError:  # gone, or another user's process
            continue
    return False


def running_in_container() -> bool:
    if any(marker.exists() for marker in CONTAINER_MARKERS):
        return True
    try:
        cgroups = Path("/proc/1/cgroup").read_text()
    except OSError:
        return False
    return any(hint in cgroups for hint in _CGROUP_HINTS)


def default_gateway(route_file: Path = ROUTE_FILE) -> str | None:
    """The IPv4 default gateway from the kernel's routing table, if there is one."""
    try:
        lines = route_file.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[1] == "00000000" and int(fields[3], 16) & _RTF_GATEWAY:
            return socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
    return None


def resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    return True


def run_probes(specs: list[Probe], default_host: str, deadline_s: float) -> list[ProbeResult]:
    """Run every probe in parallel; one that has not answered by the deadline fails."""
    # One thread per probe (at most api.MAX_PROBES): a probe that hangs until the deadline must
    # never keep another from starting, or healthy runtimes would read as failed.
    executor = ThreadPoolExecutor(max_workers=len(specs), thread_name_prefix="probe")
    futures = [executor.submit(run_probe, spec, spec.host or default_host, deadline_s) for spec in specs]
    wait(futures, timeout=deadline_s)
    # Unfinished probes are abandoned; each one's own timeout ends its thread soon after.
    executor.shutdown(wait=False, cancel_futures=True)
    return [
        future.result() if future.done() else _result(spec, "fail", f"no answer within {deadline_s:g}s")
        for spec, future in zip(specs, futures, strict=True)
    ]


def run_probe(spec: Probe, host: str, timeout_s: float) -> ProbeResult:
    try:
        socket.getaddrinfo(host, spec.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return _result(spec, "misconfigured", f"probe host {host!r} does not resolve: {exc}")
    where = f"{host}:{spec.port}"
    try:
        return _PROBES[spec.kind](spec, host, where, timeout_s)
    except (OSError, http.client.HTTPException, psycopg.Error) as exc:
        return _result(spec, "fail", f"{spec.kind} {where}: {str(exc).strip() or type(exc).__name__}")


def _tcp(spec: Probe, host: str, where: str, timeout_s: float) -> ProbeResult:
    with socket.create_connection((host, spec.port), timeout=timeout_s):
        return _result(spec, "pass", f"connected to {where}")


def _http(spec: Probe, host: str, where: str, timeout_s: float) -> ProbeResult:
    connection = http.client.HTTPConnection(host, spec.port, timeout=timeout_s)
    try:
        connection.request("GET", spec.path)
        status = connection.getresponse().status
    finally:
        connection.close()
    if status != spec.expect_status:
        return _result(spec, "fail", f"GET {where}{spec.path} answered {status}, expected {spec.expect_status}")
    return _result(spec, "pass", f"GET {where}{spec.path} answered {status}")


def _postgres(spec: Probe, host: str, where: str, timeout_s: float) -> ProbeResult:
    with psycopg.connect(
        host=host,
        port=spec.port,
        user=spec.user,
        password=spec.password,
        dbname=spec.dbname,
        connect_timeout=max(2, int(timeout_s)),  # libpq's minimum is 2 seconds
        application_name="berth-agent-probe",
    ) as connection:
        major = connection.info.server_version // 10000
    if spec.expect_major is not None and major != spec.expect_major:
        return _result(spec, "fail", f"{where} runs PostgreSQL {major}, expected {spec.expect_major}", major)
    return _result(spec, "pass", f"{where} runs PostgreSQL {major}", major)


_PROBES = {"tcp": _tcp, "http": _http, "postgres": _postgres}


def _result(spec: Probe, status: str, detail: str, server_major: int | None = None) -> ProbeResult:
    return ProbeResult(spec.name, status, detail, server_major)
