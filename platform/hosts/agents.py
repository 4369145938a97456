"""The one place the control plane builds agent clients, so every call carries a deadline
and is counted for /metrics (latency and errors by host and route)."""

from functools import partial

from agent.client import AgentClient
from telemetry.record import agent_call


def client_for(host, *, deadline: float, operation=None) -> AgentClient:
    """A client for the host's agent; with `operation`, its lifecycle commands name it, so
    cancelling the operation on the agent stops them."""
    tag = None if operation is None else str(operation.pk)
    return AgentClient(
        host.agent_url, host.agent_token, deadline=deadline, operation=tag, observe=partial(agent_call, host.name)
    )
