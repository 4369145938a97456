"""create_project: what it refuses before anything is leased, starting from a host whose agent
never reported (the state right after setup)."""

import shutil
from unittest import mock

import pytest
from django.core.exceptions import ValidationError

from hosts.models import RuntimeHost
from operations.creation import create_project
from projects.models import Project
from templating.actions import sync_templates
from tests.dashboard_helpers import process_host
from tests.factories import make_host
from tests.stack import RUNTIMES
from tests.standin_agent import InfoAgent

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("templates")]


def refusal(**kwargs) -> dict:
    with pytest.raises(ValidationError) as refused:
        create_project(**{"name": "Orders", "template": "postgres", **kwargs})
    assert not Project.objects.exists()
    return refused.value.message_dict


def test_it_asks_a_chosen_host_that_never_reported_and_refuses_with_its_real_list(settings):
    settings.BERTH_AGENT_PAGE_DEADLINE = 0.5
    fresh = make_host(name="fresh")  # as registered: no capabilities yet
    agent = InfoAgent([15])
    with mock.patch("hosts.agents.client_for", agent):
        errors = refusal(postgres_major=17, host=fresh)
    assert errors == {
        "postgres_major": ["Postgres 17 cannot run on host fresh (local PostgreSQL: 15); supported there: 15"]
    }
    assert agent.asked == ["fresh"] and agent.deadlines == [0.5]
    fresh.refresh_from_db()
    assert fresh.driver == "process" and fresh.last_seen_at is not None


def test_it_creates_on_a_chosen_host_once_it_answered():
    fresh = make_host(name="fresh")
    with mock.patch("hosts.agents.client_for", InfoAgent([15])):
        project = create_project(name="Orders", postgres_major=15, template="postgres", host=fresh)
    assert project.host == fresh and project.operations.count() == 1


def test_it_refuses_without_a_host_what_no_host_runs_once_asked(settings):
    make_host(name="fresh")
    with mock.patch("hosts.agents.client_for", InfoAgent([15])):
        errors = refusal(postgres_major=17)
    assert errors == {"postgres_major": ["No host can run postgres with Postgres 17; supported: 15"]}
    assert RuntimeHost.objects.get(name="fresh").postgres_versions == [15]


def test_it_says_plainly_when_a_chosen_hosts_agent_cannot_be_reached():
    fresh = make_host(name="fresh")
    with mock.patch("hosts.agents.client_for", InfoAgent(None)):
        errors = refusal(postgres_major=15, host=fresh)
    [message] = errors["host"]
    assert message.startswith("The agent of host fresh has never answered and could not be reached now")
    assert "connection refused" in message and "manage.py hosts refresh fresh" in message
    assert "unknown driver" not in message


def test_it_says_plainly_when_no_hosts_agent_can_be_reached():
    make_host(name="fresh")
    with mock.patch("hosts.agents.client_for", InfoAgent(None)):
        errors = refusal(postgres_major=15)
    assert "the agent of host fresh has never answered and could not be reached now" in errors["host"][0]


def test_an_unknown_major_names_the_templates_majors_as_a_plain_message():
    east = process_host(name="east")  # runs 15 and 16
    errors = refusal(postgres_major=12, host=east)
    assert errors == {
        "postgres_major": ["Postgres 12 is not supported by template postgres r1; supported: 14, 15, 16, 17, 18"]
    }


def test_a_major_the_template_has_but_the_host_lacks_names_the_hosts_list():
    east = process_host(name="east")
    errors = refusal(postgres_major=17, host=east)
    assert errors["postgres_major"] == [
        "Postgres 17 cannot run on host east (local PostgreSQL: 15, 16); supported there: 15, 16"
    ]


@pytest.mark.parametrize("name", ["Orders\nDROP", "Tab\there", "Bell\x07", "Esc\x1b[31m"])
def test_it_refuses_control_characters_in_names(name):
    process_host(name="east")
    errors = refusal(postgres_major=15, name=name)
    assert errors == {"name": ["A name cannot contain control characters such as line breaks or tabs."]}


def wide_template(tmp_path, slots: int) -> None:
    folder = tmp_path / "runtimes" / "postgres"
    shutil.copytree(RUNTIMES / "postgres", folder)
    manifest = (folder / "manifest.toml").read_text().replace("db = 0", f"db = 0\nextra = {slots - 1}")
    (folder / "manifest.toml").write_text(manifest)
    sync_templates(tmp_path / "runtimes")


def test_it_refuses_a_template_whose_ports_no_hosts_block_holds(tmp_path):
    process_host(name="east", block_size=10)
    wide_template(tmp_path, 25)
    errors = refusal(postgres_major=15)
    assert errors == {
        "template": [
            "Template postgres needs 25 ports per project, but no host that accepts projects leases blocks "
            "that large (the largest are 10)."
        ]
    }


def test_it_refuses_a_chosen_host_whose_blocks_cannot_hold_the_templates_ports(tmp_path):
    east = process_host(name="east", block_size=10)
    wide_template(tmp_path, 25)
    errors = refusal(postgres_major=15, host=east)
    assert errors == {"host": ["Template postgres needs 25 ports per project, but host east leases blocks of 10."]}


def test_with_a_region_it_judges_only_the_hosts_that_serve_it():
    make_host(name="eu", region="eu-west-1")
    make_host(name="us", region="us-east-1")
    agent = InfoAgent([15])
    with mock.patch("hosts.agents.client_for", agent):
        errors = refusal(postgres_major=15, region="ap-south-1")
    assert errors == {"region": ["No host serves region 'ap-south-1'; regions: eu-west-1, us-east-1"]}
    assert agent.asked == []  # the region is refused before any agent is asked

    RuntimeHost.objects.filter(name="us").update(
        capabilities={**RuntimeHost.objects.get(name="us").capabilities, "postgres_versions": [16]}
    )
    with mock.patch("hosts.agents.client_for", InfoAgent([15])) as asked:
        errors = refusal(postgres_major=16, region="eu-west-1")
    assert errors == {"postgres_major": ["No host can run postgres with Postgres 16; supported: 15"]}
    assert asked.asked == ["eu"]
