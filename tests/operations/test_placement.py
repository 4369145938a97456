"""Placement: a project goes only where its template's driver and Postgres major can run."""

import shutil
import time
from unittest import mock

import pytest
from django.core.exceptions import ValidationError

from agent.client import AgentUnreachable
from operations.creation import create_project
from operations.placement import NoHost, candidates, place_project, unplace_if_unfit
from projects.models import Status
from templating.actions import sync_templates
from templating.models import TemplateVersion
from tests.factories import make_host, make_port_block, make_project
from tests.stack import RUNTIMES
from tests.standin_agent import InfoAgent

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("templates")]

PROCESS_15 = {"driver": "process", "postgres_versions": [15]}
DOCKER = {"driver": "docker", "postgres_versions": []}


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
    with mock.patch("hosts.agents.client_for", InfoAgent([15], ephemeral_ports=None)):
        assert place_project(project, deadline=1) == big
    project.refresh_from_db()
    assert project.host == big


def test_it_names_why_no_host_could_take_the_project():
    make_host(name="proc", capabilities=PROCESS_15)
    project = create_project(name="Orders", postgres_major=15, template="postgres")
    with mock.patch("hosts.agents.client_for", InfoAgent([15], driver="docker", ephemeral_ports=None)):
        with pytest.raises(NoHost, match="proc: its docker driver cannot run Postgres 15"):
            place_project(project, deadline=1)


def test_creation_refuses_a_major_no_known_host_can_run():
    make_host(name="proc", capabilities=PROCESS_15)
    with pytest.raises(ValidationError) as refused:
        create_project(name="Orders", postgres_major=17, template="postgres")
    assert refused.value.message_dict["postgres_major"] == ["No host can run postgres with Postgres 17; supported: 15"]


def test_creation_refuses_when_no_host_accepts_projects():
    with pytest.raises(ValidationError, match="No runtime host accepts projects"):
        create_project(name="Orders", postgres_major=15, template="postgres")


def wide_template(tmp_path, slots: int) -> None:
    """Register `postgres` again, now needing `slots` ports per project."""
    folder = tmp_path / "runtimes" / "postgres"
    shutil.copytree(RUNTIMES / "postgres", folder)
    manifest = (folder / "manifest.toml").read_text().replace("db = 0", f"db = 0\nextra = {slots - 1}")
    (folder / "manifest.toml").write_text(manifest)
    sync_templates(tmp_path / "runtimes")


def test_it_never_places_where_a_block_cannot_hold_the_templates_ports(tmp_path):
    narrow = make_host(name="narrow", capabilities=PROCESS_15, block_size=10)
    wide = make_host(name="wide", capabilities=PROCESS_15, port_range_start=21000, port_range_end=21999, block_size=40)
    wide_template(tmp_path, 25)
    project = create_project(name="Orders", postgres_major=15, template="postgres")
    assert candidates(project) == [wide]
    with mock.patch("hosts.agents.client_for", InfoAgent([15], ephemeral_ports=None)):
        assert place_project(project, deadline=1) == wide
    assert narrow not in candidates(project)


def test_a_failed_provisioning_is_placed_again_when_its_host_cannot_hold_its_ports(tmp_path):
    narrow = make_host(name="narrow", capabilities=PROCESS_15, block_size=10)
    wide_template(tmp_path, 25)
    version = TemplateVersion.objects.latest_of("postgres")
    project = make_project(host=narrow, template_version=version, status=Status.INIT_FAILED)
    assert unplace_if_unfit(project) and project.host is None
    project.refresh_from_db()
    assert project.host is None


def test_it_keeps_the_host_of_a_project_that_holds_ports_there(tmp_path):
    narrow = make_host(name="narrow", capabilities=PROCESS_15, block_size=10)
    wide_template(tmp_path, 25)
    project = make_project(host=narrow, template_version=TemplateVersion.objects.latest_of("postgres"))
    make_port_block(project, first_port=20000)
    assert not unplace_if_unfit(project)
    project.refresh_from_db()
    assert project.host == narrow


class DeadAgent:
    """An agent that never answers: each call uses up its whole deadline, then fails."""

    def __init__(self):
        self.asked = []

    def __call__(self, host, *, deadline):
        self.asked.append((host.name, deadline))
        self.deadline = deadline
        return self

    def info(self):
        time.sleep(self.deadline)
        raise AgentUnreachable("connection timed out")


def test_placement_asks_all_candidates_within_its_deadline(settings):
    settings.BERTH_AGENT_CALL_DEADLINE = 30
    for n in range(8):
        make_host(
            name=f"dead{n}", capabilities=PROCESS_15, port_range_start=20000 + 100 * n, port_range_end=20099 + 100 * n
        )
    project = create_project(name="Orders", postgres_major=15, template="postgres")
    dead = DeadAgent()
    started = time.monotonic()
    with mock.patch("hosts.agents.client_for", dead), pytest.raises(NoHost, match="No host can take"):
        place_project(project, deadline=0.8)
    # Eight full per-call deadlines would be 6.4 s; the total is bounded by the 0.8 s budget.
    assert time.monotonic() - started < 3
    assert sum(deadline for _, deadline in dead.asked) <= 0.8 + 1e-6


def test_placement_asks_a_host_whose_last_contact_failed_last(settings):
    make_host(name="dead", capabilities=PROCESS_15, last_error="connection refused", port_range_end=29999)
    live = make_host(name="live", capabilities=PROCESS_15, port_range_start=30000, port_range_end=30099)
    project = create_project(name="Orders", postgres_major=15, template="postgres")
    assert [h.name for h in candidates(project)] == ["live", "dead"]
    agent = InfoAgent([15], ephemeral_ports=None)
    asked = []
    with mock.patch("hosts.agents.client_for", lambda host, *, deadline: asked.append(host.name) or agent):
        assert place_project(project, deadline=1) == live
    assert asked == ["live"]


def test_a_retry_places_a_failed_provisioning_again_and_it_comes_up(tmp_path, settings):
    """The state an earlier Berth left: placed where the template's ports do not fit, INIT_FAILED."""
    from django.utils import timezone

    from operations import tasks
    from operations.actions import retry_project
    from operations.models import Kind, Operation, State
    from templating.secrets import generate_project_secrets
    from tests.operations.test_runner import ScriptedAgent

    settings.BERTH_HEALTH_POLL_INITIAL = 0.01
    narrow = make_host(name="narrow", capabilities=PROCESS_15, block_size=4)
    wide = make_host(name="wide", capabilities=PROCESS_15, port_range_start=21000, port_range_end=21999, block_size=10)
    wide_template(tmp_path, 6)
    version = TemplateVersion.objects.latest_of("postgres")
    project = make_project(
        host=narrow, template_version=version, status=Status.INIT_FAILED, secrets=generate_project_secrets()
    )
    Operation.objects.create(
        project=project, kind=Kind.PROVISION, state=State.FAILED, error_code="ports", deadline=timezone.now()
    )
    agent = ScriptedAgent()
    with mock.patch("hosts.agents.client_for", agent), mock.patch("django_q.tasks.async_task"):
        retry = retry_project(project)
        tasks.run_operation(retry.pk)
    project.refresh_from_db()
    retry.refresh_from_db()
    assert (retry.state, project.status, project.host) == (State.SUCCEEDED, Status.ACTIVE_HEALTHY, wide), list(
        retry.events.values_list("message", flat=True)
    )
    assert project.port_block.host == wide


def hosts_with_leases(count: int, leased_each: int):
    """`count` reported hosts, each with `leased_each` projects holding blocks and a few free blocks."""
    from ports.actions import lease_ports
    from tests.factories import FakePortChecker, make_reported_host

    version = TemplateVersion.objects.latest_of("postgres")
    for n in range(count):
        host = make_reported_host(
            name=f"fleet{n}", port_range_start=20000 + 200 * n, port_range_end=20199 + 200 * n, block_size=10
        )
        for _ in range(leased_each):
            lease_ports(make_project(host=host, template_version=version), 1, checker=FakePortChecker())


def placement_queries(django_assert_num_queries, expected):
    project = create_project(name="Orders", postgres_major=15, template="postgres")
    with django_assert_num_queries(expected), mock.patch("hosts.agents.client_for") as asked:
        place_project(project, deadline=1)
    assert not asked.called, "hosts heard from just now were asked again"


@pytest.mark.parametrize("hosts, leased_each", [(2, 1), (10, 3)])
def test_placement_costs_the_same_queries_whatever_the_number_of_hosts(hosts, leased_each, django_assert_num_queries):
    hosts_with_leases(hosts, leased_each)
    # The candidates with their blocks counted (one aggregate), then the conditional placing UPDATE.
    placement_queries(django_assert_num_queries, 2)


def test_placement_asks_a_host_only_when_its_last_answer_is_older_than_the_max_age(settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.BERTH_HOST_INFO_MAX_AGE = 60
    host = make_host(name="proc", capabilities=PROCESS_15, last_seen_at=timezone.now() - timedelta(seconds=5))
    agent = InfoAgent([15], ephemeral_ports=None)
    asked = []
    with mock.patch("hosts.agents.client_for", lambda h, *, deadline: asked.append(h.name) or agent):
        assert place_project(create_project(name="A", postgres_major=15, template="postgres"), deadline=1) == host
        assert asked == []
        host.last_seen_at = timezone.now() - timedelta(seconds=61)
        host.save()
        assert place_project(create_project(name="B", postgres_major=15, template="postgres"), deadline=1) == host
        assert asked == ["proc"]
