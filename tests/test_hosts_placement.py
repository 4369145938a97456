"""Placement: a project goes only where its template's driver and Postgres major can run."""

from unittest import mock

import pytest
from django.core.exceptions import ValidationError

from agent.api import AgentInfo
from hosts.placement import candidates, place_project
from operations.runner import StepFailed
from projects.actions import create_project
from templating.actions import sync_templates
from tests.factories import make_host

pytestmark = pytest.mark.django_db

PROCESS_15 = {"driver": "process", "postgres_versions": [15]}
DOCKER = {"driver": "docker", "postgres_versions": []}


class InfoAgent:
    def __init__(self, capabilities):
        self.capabilities = capabilities

    def __call__(self, host, *, deadline):
        return self

    def info(self):
        return AgentInfo("0.1.0", 1, self.capabilities["driver"], "127.0.0.1", "loopback", [15], None)


@pytest.fixture(autouse=True)
def templates():
    with mock.patch("django_q.tasks.async_task"):
        sync_templates()
        yield


def test_it_never_places_a_docker_template_on_a_process_host():
    process_host = make_host(name="proc", capabilities=PROCESS_15)
    docker_host = make_host(name="dock", capabilities=DOCKER)
    project = create_project(name="Stack", postgres_major=15, template="docker-test")
    assert candidates(project) == [docker_host]
    assert process_host not in candidates(project)


def test_it_places_on_the_host_with_most_free_blocks_whose_agent_answers():
    make_host(name="small", capabilities=PROCESS_15, port_range_start=20000, port_range_end=20019, block_size=10)
    big = make_host(name="big", capabilities=PROCESS_15, port_range_start=21000, port_range_end=21999, block_size=10)
    project = create_project(name="Orders", postgres_major=15, template="postgres")
    with mock.patch("operations.agents.client_for", InfoAgent(PROCESS_15)):
        assert place_project(project, deadline=1) == big
    project.refresh_from_db()
    assert project.host == big


def test_it_names_why_no_host_could_take_the_project():
    make_host(name="proc", capabilities=PROCESS_15)
    project = create_project(name="Orders", postgres_major=15, template="postgres")
    with mock.patch("operations.agents.client_for", InfoAgent({"driver": "docker"})):
        with pytest.raises(StepFailed, match="proc: its docker driver cannot run Postgres 15"):
            place_project(project, deadline=1)


def test_creation_refuses_a_major_no_known_host_can_run():
    make_host(name="proc", capabilities=PROCESS_15)
    with pytest.raises(ValidationError) as refused:
        create_project(name="Orders", postgres_major=17, template="postgres")
    assert refused.value.message_dict["postgres_major"] == ["No host can run postgres with Postgres 17; supported: 15"]


def test_creation_refuses_when_no_host_accepts_projects():
    with pytest.raises(ValidationError, match="No runtime host accepts projects"):
        create_project(name="Orders", postgres_major=15, template="postgres")


def test_creation_trusts_a_host_whose_agent_has_not_reported_yet():
    make_host(name="fresh", capabilities={})
    project = create_project(name="Orders", postgres_major=17, template="postgres")
    assert project.operations.count() == 1
