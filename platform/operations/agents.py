"""The one place the control plane builds agent clients, so every call carries a deadline."""

from agent.client import AgentClient


def client_for(host, *, deadline: float) -> AgentClient:
    return AgentClient(host.agent_url, host.agent_token, deadline=deadline)
