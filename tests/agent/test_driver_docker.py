"""The docker driver's commands and how it reads their output (a real engine is tested elsewhere)."""

import json

import pytest

from agent.api import FileSpec
from agent.client import AgentError
from agent.drivers.docker import summarise_ps
from agent.errors import CommandFailed


def calls(docker_agent) -> list[str]:
    return (docker_agent.fake_docker / "calls").read_text().splitlines()


def test_lifecycle_runs_compose_with_the_runtime_as_project(docker_agent):
    client, ref = docker_agent.client(), "stack001"
    client.put_files(
        ref,
        [
            FileSpec("runtime.toml", b'driver = "docker"\ncompose_file = "compose/stack.yml"\n'),
            FileSpec("compose/stack.yml", b"services: {}\n"),
        ],
    )
    compose = f"compose -p {ref} -f {docker_agent.root / ref / 'compose/stack.yml'}"

    assert client.up(ref).output_tail == "started\n"
    client.down(ref)
    client.delete(ref, purge_data=True)

    lifecycle = [call for call in calls(docker_agent) if call.startswith("compose -p")]
    assert lifecycle == [
        f"{compose} up -d --remove-orphans",
        f"{compose} down --remove-orphans",
        f"{compose} down --remove-orphans --volumes",
    ]


def test_status_reads_compose_ps(docker_agent):
    client, ref = docker_agent.client(), "stack002"
    client.put_files(ref, [FileSpec("runtime.toml", b'driver = "docker"\ncompose_file = "dc.yml"\n')])
    ps = [{"Service": "db", "State": "running"}, {"Service": "rest", "State": "running"}]
    (docker_agent.fake_docker / "ps.json").write_text("\n".join(json.dumps(item) for item in ps))

    status = client.status(ref)

    assert (status.state, status.detail) == ("running", "db: running, rest: running")


def test_info_reports_compose_and_local_postgres_images(docker_agent):
    info = docker_agent.client().info()
    assert (info.driver, info.compose, info.postgres_versions) == ("docker", "docker compose", [15])


def test_a_runtime_for_another_driver_is_refused(docker_agent):
    client, ref = docker_agent.client(), "stack003"
    client.put_files(ref, [FileSpec("runtime.toml", b'driver = "process"\n')])
    with pytest.raises(AgentError) as refused:
        client.up(ref)
    assert refused.value.status == 422 and "driver" in refused.value.message


def test_a_compose_file_outside_the_runtime_is_refused(docker_agent):
    client, ref = docker_agent.client(), "stack004"
    client.put_files(ref, [FileSpec("runtime.toml", b'driver = "docker"\ncompose_file = "../other/dc.yml"\n')])
    with pytest.raises(AgentError) as refused:
        client.up(ref)
    assert refused.value.status == 422


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("", ("stopped", "no containers")),
        ('[{"Service": "db", "State": "running"}]', ("running", "db: running")),
        (
            '{"Service": "db", "State": "running"}\n{"Service": "auth", "State": "exited"}\n',
            ("stopped", "auth: exited, db: running"),
        ),
    ],
)
def test_summarise_ps_reads_both_compose_formats(output, expected):
    assert summarise_ps(output) == expected


def test_summarise_ps_refuses_what_is_not_container_json():
    with pytest.raises(CommandFailed):
        summarise_ps("Error response from daemon")


def test_every_call_refuses_a_runtime_folder_that_is_a_symlink(docker_agent, tmp_path):
    client, ref = docker_agent.client(), "stack009"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "runtime.toml").write_text('driver = "docker"\ncompose_file = "stack.yml"\n')
    (elsewhere / "stack.yml").write_text("services: {}\n")
    (docker_agent.root / ref).symlink_to(elsewhere)
    attempts = {
        "files": lambda: client.put_files(ref, [FileSpec("stack.yml", b"services: {x: {}}\n")]),
        "digests": lambda: client.digests(ref, ["stack.yml"]),
        "status": lambda: client.status(ref),
        "up": lambda: client.up(ref),
        "down": lambda: client.down(ref),
        "restart": lambda: client.restart(ref),
        "delete": lambda: client.delete(ref, purge_data=True),
    }
    for name, attempt in attempts.items():
        with pytest.raises(AgentError) as refused:
            attempt()
        assert refused.value.status == 422, name
        assert "is a symlink" in refused.value.message, name
    ran = calls(docker_agent) if (docker_agent.fake_docker / "calls").exists() else []
    assert not [call for call in ran if call.startswith("compose -p")], "no compose command ran"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["runtime.toml", "stack.yml"]
    assert (elsewhere / "stack.yml").read_text() == "services: {}\n"
    assert (docker_agent.root / ref).is_symlink()
