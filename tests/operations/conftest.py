import pytest

from templating.actions import sync_templates
from tests.factories import make_host


@pytest.fixture
def templates(enqueued):
    """The shipped templates registered, with nothing enqueued then or later in the test."""
    sync_templates()


@pytest.fixture
def host():
    """The shipped templates registered, and a process host with Postgres 15 and 25 blocks of 4
    ports, at an agent address the tests stand in for."""
    sync_templates()
    return make_host(
        agent_url="http://agent.example:8470",
        capabilities={"driver": "process", "postgres_versions": [15]},
        port_range_start=30000,
        port_range_end=30099,
        block_size=4,
    )
