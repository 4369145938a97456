"""The README's add-a-host recipe, run as written: it validates the host like the admin form."""

import os
import re
from unittest import mock

import pytest
from django.core.exceptions import ValidationError

from hosts.models import RuntimeHost
from tests.stack import ROOT
from tests.standin_agent import InfoAgent

pytestmark = pytest.mark.django_db

README = ROOT / "README.md"


def add_host_recipe() -> str:
    """The Python the README passes to `manage.py shell -c`."""
    [code] = re.findall(r'manage\.py shell -c "(.*?)"\n', README.read_text(), flags=re.S)
    return code


def run(code: str) -> None:
    with mock.patch.dict(os.environ, {"AGENT_TOKEN": "a-token-of-sixteen-plus"}):
        docker = InfoAgent(
            [], driver="docker", probe_host="host.docker.internal", probe_host_source="docker", compose="docker compose"
        )
        with mock.patch("hosts.agents.client_for", docker):
            exec(compile(code, "README.md", "exec"), {})


def test_the_recipe_registers_the_host_and_asks_its_agent():
    run(add_host_recipe())
    host = RuntimeHost.objects.get(name="docker1")
    assert host.driver == "docker" and host.agent_token == "a-token-of-sixteen-plus"
    assert host.port_range_end < 32768 and not host.ephemeral_overlap


@pytest.mark.parametrize(
    "change",
    [("block_size=20", "block_size=0"), ("port_range_end=29999", "port_range_end=20010"), ("'docker1'", "'docker 1'")],
)
def test_the_recipe_validates_the_host_like_the_admin_form(change):
    code = add_host_recipe()
    assert change[0] in code
    with pytest.raises(ValidationError):
        run(code.replace(*change))
    assert not RuntimeHost.objects.exists()
