"""What the metrics tests share: a host on the real agent with two running projects."""

from django.conf import settings

from projects.models import Status
from tests.factories import make_port_block, make_project, make_reported_host
from tests.stack import free_port_range

TOKEN = "metrics-token-0123456789"
SECRETS = {"postgres_password": "unused-under-trust"}


def database_port() -> int:
    return int(settings.DATABASES["default"]["PORT"] or 5432)


def host_with_projects(agent, version, org=None):
    """A host on the real agent with two running projects: one whose database slot is the test
    PostgreSQL server (its block starts at that port), one whose port nothing listens on."""
    live_port, dead_port = database_port(), free_port_range(10)
    host = make_reported_host(
        name="metered", agent_url=agent.base_url, agent_token=agent.token, port_range_start=1024, port_range_end=65529
    )
    projects = []
    for first in (live_port, dead_port):
        extra = {"organization": org} if org else {}
        project = make_project(
            host=host, template_version=version, status=Status.ACTIVE_HEALTHY, secrets=SECRETS, **extra
        )
        make_port_block(project, first_port=first)
        projects.append(project)
    return host, projects
