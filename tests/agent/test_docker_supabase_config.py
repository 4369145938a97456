"""The `supabase` template, rendered for a project, passes the compose tool's own validation.

Its images cannot be pulled here, so the stack is never started: `docker-compose -p REF
config -q` parses the file, interpolates `.env` and checks the schema, offline and with
no engine (DOCKER_HOST points nowhere). SKIPPED, with the reason, without docker-compose.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from templating.render import render_project
from tests.factories import make_runtime_project, register_template
from tests.stack import RUNTIMES

pytestmark = pytest.mark.django_db


def compose_tool() -> list[str]:
    if compose := shutil.which("docker-compose"):
        return [compose]
    pytest.skip("NO DOCKER-COMPOSE: docker-compose is not installed; `scripts/docker-engine` installs it")


def write_rendering(rendered, folder: Path) -> None:
    for path, content in rendered.files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def compose_config(folder: Path, ref: str, *args: str) -> subprocess.CompletedProcess:
    # An engine is never contacted: a host that does not exist proves it.
    env = {**os.environ, "DOCKER_HOST": "tcp://192.0.2.255:1"}
    env.pop("COMPOSE_FILE", None)
    env.pop("COMPOSE_PROJECT_NAME", None)
    return subprocess.run(
        [*compose_tool(), "-p", ref, "config", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def published_port(entry) -> int:
    """The host port of a `ports` entry: long syntax, or "[ip:]host:container[/proto]"."""
    if isinstance(entry, dict):
        return int(entry["published"])
    return int(str(entry).split(":")[-2])


@pytest.mark.parametrize("major", [15, 17])
def test_the_rendered_supabase_stack_passes_compose_config(tmp_path, major):
    compose_tool()
    version = register_template(RUNTIMES / "supabase")
    project = make_runtime_project(version, postgres_major=major, first_port=23000)
    write_rendering(render_project(project, version), tmp_path)

    checked = compose_config(tmp_path, project.ref, "-q")
    assert checked.returncode == 0, f"docker-compose config -q refused the rendering:\n{checked.stderr}"
    # No variable of the compose file is left to a blank default.
    assert "is not set" not in checked.stderr, checked.stderr

    resolved = yaml.safe_load(compose_config(tmp_path, project.ref).stdout)
    db = resolved["services"]["db"]
    assert db["image"].startswith(f"supabase/postgres:{major}.")
    # Every published host port lies in the project's block.
    ports = {published_port(p) for s in resolved["services"].values() for p in s.get("ports", [])}
    block = project.port_block
    assert ports and all(block.first_port <= p <= block.last_port for p in ports), ports
