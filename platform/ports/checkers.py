"""Whether ports are free on a runtime host, asked before a block is first used.

A block is checked whole (not only the slots a template uses today), so a later
template version with more slots still finds its ports free.
"""

import ipaddress
from collections.abc import Callable, Iterable
from typing import Protocol
from urllib.parse import urlsplit

from django.conf import settings

from agent.client import AgentError, check_ports_here
from hosts import agents
from ports.errors import PortCheckFailed


class PortChecker(Protocol):
    def taken(self, host, ports: Iterable[int]) -> set[int]:
        """The ports among `ports` that something on the host already uses."""


class LoopbackPortChecker:
    """For a host that is this machine: the same bind check the agent runs on its own host."""

    def taken(self, host, ports: Iterable[int]) -> set[int]:
        return set(check_ports_here(list(ports)).taken)


class AgentPortChecker:
    """For a remote host: its agent answers POST /v1/ports/check within the agent call deadline."""

    def __init__(self, client_for: Callable | None = None):
        self.client_for = client_for

    def taken(self, host, ports: Iterable[int]) -> set[int]:
        client_for = self.client_for or agents.client_for
        try:
            reply = client_for(host, deadline=settings.BERTH_AGENT_CALL_DEADLINE).check_ports(list(ports))
        except AgentError as error:
            raise PortCheckFailed(f"could not check ports on {host.name}: {error}") from error
        return set(reply.taken)


def is_this_machine(host) -> bool:
    name = urlsplit(host.agent_url).hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def checker_for(host) -> PortChecker:
    """Bind locally when the host's agent listens on loopback (the host is this machine), else ask the agent."""
    return LoopbackPortChecker() if is_this_machine(host) else AgentPortChecker()
