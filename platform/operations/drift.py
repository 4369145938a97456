"""The periodic drift check: which managed files were edited on their hosts ("locally modified").

Re-syncs and the dashboard's plan record drift whenever they read a host's digests; this
check keeps it current for projects nobody re-syncs. It only reads: nothing on a host is
ever changed because of drift.
"""

import logging
import time

from django.conf import settings
from django.db.models import F

from agent.client import AgentError, AgentTimeout, AgentUnreachable
from hosts import agents
from hosts.models import RuntimeHost
from operations.fanout import for_each_host
from projects.actions import record_drifts
from projects.models import DesiredState, Project

log = logging.getLogger(__name__)

# Answers recorded together: a locked read and an UPDATE for each such batch rather than for
# each project (those were half of a large fleet's round).
RECORD_TOGETHER = 100


def checkable_projects():
    """Running projects with pushed files and no operation in flight, longest unchecked first
    (so a round cut short by its time budget still moves on to the others next time)."""
    return (
        Project.objects.live()
        .idle()
        .filter(desired_state=DesiredState.RUNNING, host__isnull=False)
        .exclude(file_digests={})
        .defer("secrets")
        .order_by(F("drift_checked_at").asc(nulls_first=True), "pk")
    )


def check_all() -> int:
    """Ask each host's agent for the digests of its projects' managed files and record drift.

    One call per project (the agent reads one runtime per call), each within
    BERTH_AGENT_CALL_DEADLINE; BERTH_HOST_THREADS hosts are asked at once, each host's
    projects one after another. A host whose agent does not answer is left for the next
    round after its first failure, so a dead host costs one deadline, not one per project;
    and no call starts past BERTH_OPERATION_DEADLINE, so the round ends before django-q2's
    timeout. Answers are recorded RECORD_TOGETHER at a time, and what a host answered
    before its round ended is recorded too. Returns how many projects were checked.
    """
    budget_ends = time.monotonic() + settings.BERTH_OPERATION_DEADLINE
    by_host: dict[int, list[Project]] = {}
    for project in checkable_projects():
        by_host.setdefault(project.host_id, []).append(project)
    # Hosts are few: each is loaded (and its token decrypted) once, not joined into every row.
    hosts = RuntimeHost.objects.in_bulk(by_host)
    for host_id, projects in by_host.items():
        for project in projects:
            project.host = hosts[host_id]
    return for_each_host(by_host, lambda projects: _check_host(projects, budget_ends))


def _check_host(projects: list[Project], budget_ends: float) -> int:
    checked = 0
    answers = []
    for project in projects:
        left = budget_ends - time.monotonic()
        if left <= 0:
            log.warning("drift check ran out of time on host %s; the rest wait for the next round", project.host.name)
            break
        client = agents.client_for(project.host, deadline=min(settings.BERTH_AGENT_CALL_DEADLINE, left))
        try:
            host_digests = client.digests(project.ref, sorted(project.file_digests))
        except (AgentUnreachable, AgentTimeout) as error:
            log.warning("drift check: host %s did not answer (%s); skipped this round", project.host.name, error)
            break
        except AgentError as error:
            log.warning("drift check of %s failed: %s", project.ref, error)
            continue
        answers.append((project, host_digests))
        if len(answers) == RECORD_TOGETHER:
            checked += record_drifts(answers)
            answers = []
    return checked + record_drifts(answers)
