"""A health refresh pass makes as many queries for 30 projects as for 3: a few per host and
per agent call, never one per project (at 100,000 projects, one per project was most of a
pass). Against a stand-in agent on loopback, the hosts one after another in this thread so
every query is counted."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from operations.health import refresh_all
from projects.models import Project, Status
from templating.actions import sync_templates
from templating.manifest import manifest_of
from templating.models import TemplateVersion
from tests.factories import make_host, make_runtime_project
from tests.standin_agent import StandInAgent

pytestmark = pytest.mark.django_db

HOSTS = 2


@pytest.fixture
def version():
    sync_templates()
    return TemplateVersion.objects.latest_of("postgres")


def standin(probe_status: str):
    return StandInAgent({"health"}, probe_status=probe_status)


def add_projects(hosts, version, total: int) -> None:
    """`total` more projects, spread over the hosts, each on a port block of its own."""
    slots = manifest_of(version).slots_needed
    for n in range(total):
        host = hosts[n % len(hosts)]
        taken = Project.objects.filter(host=host).count()
        make_runtime_project(
            version,
            host=host,
            first_port=host.port_range_start + taken * slots,
            status=Status.ACTIVE_HEALTHY,
        )


def refresh_queries(expected_probed: int) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        assert refresh_all() == expected_probed
    return [query["sql"] for query in captured.captured_queries]


@pytest.mark.parametrize("probe_status", ["pass", "fail"])
def test_a_refresh_makes_as_many_queries_for_30_projects_as_for_3(version, settings, probe_status):
    settings.BERTH_HOST_THREADS = 1
    agent = standin(probe_status)
    try:
        hosts = [
            make_host(agent_url=agent.url, port_range_start=30000 + 1000 * n, port_range_end=30999 + 1000 * n)
            for n in range(HOSTS)
        ]
        add_projects(hosts, version, 3)
        few = refresh_queries(3)
        add_projects(hosts, version, 27)
        many = refresh_queries(30)
    finally:
        agent.close()
    assert len(many) == len(few), "\n".join(many)
    writes = [sql for sql in many if sql.startswith("UPDATE")]
    if probe_status == "pass":
        assert writes == [], "a healthy fleet's refresh writes nothing"
    else:
        assert len(writes) == HOSTS, "one UPDATE per agent call, whatever each project's count of failures"
        assert set(Project.objects.values_list("probe_failures", flat=True)) == {1, 2}
