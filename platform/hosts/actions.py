"""Verbs about runtime hosts that talk to their agents."""

import logging

from django.utils import timezone

from hosts.models import RuntimeHost

log = logging.getLogger(__name__)


def refresh_host(host: RuntimeHost, *, deadline: float) -> bool:
    """Ask the host's agent for its info and keep what it reports. Returns whether it answered."""
    from agent.client import AgentError
    from operations.agents import client_for

    try:
        info = client_for(host, deadline=deadline).info()
    except AgentError as error:
        host.last_error = str(error)
        RuntimeHost.objects.filter(pk=host.pk).update(last_error=host.last_error)
        return False
    host.capabilities = info.as_capabilities()
    host.last_seen_at = timezone.now()
    host.last_error = ""
    RuntimeHost.objects.filter(pk=host.pk).update(
        capabilities=host.capabilities, last_seen_at=host.last_seen_at, last_error=""
    )
    return True
