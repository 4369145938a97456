"""The one place the control plane builds agent clients, so every call carries a deadline."""

from agent.client import AgentClient


def client_for(host, *, deadline: float, operation=None) -> AgentClient:
    """A client for the host's agent; with `operation`, its lifecycle commands name it, so
    cancelling the operation on the agent stops them."""
    tag = None if operation is None else str(operation.pk)
    return AgentClient(host.agent_url, host.agent_token, deadline=deadline, operation=tag)
