"""Verbs about runtime hosts that talk to their agents."""

import logging
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agent.client import AgentError
from audit.actions import record
from audit.models import Action
from hosts import agents
from hosts.models import RuntimeHost

log = logging.getLogger(__name__)


def record_contact(host: RuntimeHost, error: AgentError | None) -> None:
    """Keep how the host's agent answered a call just made: last seen now, or why it did not
    (the hosts page and the host-unreachable alert read these)."""
    if error is not None:
        host.last_error = str(error)
        RuntimeHost.objects.filter(pk=host.pk).update(last_error=host.last_error)
        return
    host.last_seen_at, host.last_error = timezone.now(), ""
    RuntimeHost.objects.filter(pk=host.pk).update(last_seen_at=host.last_seen_at, last_error="")


def refresh_host(host: RuntimeHost, *, deadline: float) -> bool:
    """Ask the host's agent for its info and keep what it reports. Returns whether it answered."""
    try:
        info = agents.client_for(host, deadline=deadline).info()
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


def save_host(host: RuntimeHost, *, actor=None, label: str | None = None) -> bool:
    """Validate and save a host (new or changed), then ask its agent what it runs, within the
    page deadline. Returns whether the agent answered; the host is saved either way.

    full_clean applies every rule the admin form applies (range, block size, leases kept);
    the save itself locks the host row (RuntimeHost.save) so no lease lands outside a new range.
    """
    host.full_clean()
    created = host.pk is None
    with transaction.atomic():
        host.save()
        record(
            actor,
            Action.HOST_CREATE if created else Action.HOST_CHANGE,
            detail={
                "name": host.name,
                "agent_url": host.agent_url,
                "ports": f"{host.port_range_start}-{host.port_range_end}",
                "block_size": host.block_size,
            },
            label=label,
        )
    return refresh_host(host, deadline=settings.BERTH_AGENT_PAGE_DEADLINE)


def refresh_unseen(hosts, *, deadline: float) -> None:
    """Ask the agents of hosts that never answered, all within `deadline` seconds in total."""
    ends = time.monotonic() + deadline
    for host in hosts:
        if host.has_reported:
            continue
        left = ends - time.monotonic()
        if left <= 0:
            return
        refresh_host(host, deadline=left)


def set_accepts_projects(host: RuntimeHost, accepts: bool, *, actor=None, label: str | None = None) -> bool:
    """Open a host to new projects or drain it (placement then skips it; its projects stay and
    keep working). Returns whether anything changed; a change is audited."""
    with transaction.atomic():
        changed = (
            RuntimeHost.objects.filter(pk=host.pk).exclude(accepts_projects=accepts).update(accepts_projects=accepts)
        )
        host.accepts_projects = accepts
        if changed:
            record(actor, Action.HOST_OPEN if accepts else Action.HOST_DRAIN, detail={"name": host.name}, label=label)
    return bool(changed)
