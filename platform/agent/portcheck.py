"""Which ports are free to bind on this host.

A port counts as taken when binding it on any address fails, on IPv4 or (where the host
has it) IPv6: the wildcards cover every address a runtime may listen on.
SO_REUSEADDR is set as servers set it, so a port lingering in TIME_WAIT reads as free.
"""

import errno
import socket

from agent.api import PortCheck

_WILDCARDS = ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::"))


def check_ports(ports: list[int]) -> PortCheck:
    """Each port once, in the order asked, as free or taken."""
    free, taken = [], []
    for port in dict.fromkeys(ports):
        (free if _bindable(port) else taken).append(port)
    return PortCheck(free, taken)


def _bindable(port: int) -> bool:
    for family, wildcard in _WILDCARDS:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            if exc.errno == errno.EAFNOSUPPORT:
                continue  # no IPv6 on this host: nothing can hold the port there
            raise
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((wildcard, port))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                if exc.errno == errno.EADDRNOTAVAIL:
                    continue  # IPv6 exists but is disabled on every interface
                raise
    return True


EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"


def ephemeral_ports(path: str = EPHEMERAL_RANGE_FILE) -> list[int] | None:
    """The kernel's ephemeral port range [low, high], or None where it cannot be read (not Linux)."""
    try:
        with open(path) as f:
            low, high = (int(part) for part in f.read().split())
    except (OSError, ValueError):
        return None
    return [low, high]
