"""The docker driver: a runtime's compose file run as compose project `<ref>`.

runtime.toml says which file to run (a path inside the runtime folder):

    driver = "docker"
    compose_file = "docker-compose.yml"

`docker compose` is used when it works, else `docker-compose` (v1, the one Debian
bookworm ships). Stopping keeps volumes; only a delete that asks to purge data removes them.
When `.berth-docker/compose.override.yml` exists (agent.docker_backups writes it: the WAL
outbox's bind mount), it is given to compose after the runtime's file, so templates stay as they are.

Status comes from `docker compose ps --all --format json` with compose v2. Compose v1 has no
JSON output, so with v1 the engine itself is asked for the containers labelled with the
compose project (`docker ps --all --filter label=com.docker.compose.project=<ref>`), which
also needs no compose file.
"""

import functools
import json
import re
from typing import TYPE_CHECKING

from agent.commands import Deadline, run, run_checked
from agent.errors import CommandFailed, CommandTimeout, Invalid
from agent.files import validate_path

if TYPE_CHECKING:
    from agent.runtimes import Runtime

COMPOSE_CANDIDATES = (("docker", "compose"), ("docker-compose",))
POSTGRES_IMAGE = "supabase/postgres"
PS_OUTPUT_LIMIT = 1 << 20  # the full `ps` listing is parsed, not only a tail
PROJECT_LABEL = "com.docker.compose.project"
OVERRIDE_FILE = ".berth-docker/compose.override.yml"
# One JSON object per container, the keys `compose ps --format json` uses.
_ENGINE_PS_FORMAT = (
    '{"Service":{{json (.Label "com.docker.compose.service")}},'
    '"State":{{json .State}},"Status":{{json .Status}},"Name":{{json .Names}}}'
)
_HEALTH_IN_STATUS = re.compile(r"\((healthy|unhealthy|health: starting)\)")
_DETECT_DEADLINE_S = 5.0


def engine_answers(deadline: Deadline) -> bool:
    try:
        return run(["docker", "info", "--format", "{{.ServerVersion}}"], deadline).returncode == 0
    except (CommandFailed, CommandTimeout):
        return False


@functools.cache
def compose_command() -> tuple[str, ...] | None:
    """The compose invocation that works on this host, or None.

    Found once per agent process (probing costs up to a second); restart the agent after
    installing compose.
    """
    for candidate in COMPOSE_CANDIDATES:
        try:
            if run([*candidate, "version"], Deadline(_DETECT_DEADLINE_S)).returncode == 0:
                return candidate
        except (CommandFailed, CommandTimeout):
            continue
    return None


class DockerDriver:
    name = "docker"

    def folder_group(self) -> None:
        # Compose runs as the agent; containers open bind mounts from the mount point.
        return None

    def postgres_versions(self) -> list[int]:
        """Majors of the local supabase/postgres images; others are pulled on `up`.

        A listing that outlives its deadline raises CommandTimeout rather than reporting none."""
        listing = ["docker", "image", "ls", "--filter", f"reference={POSTGRES_IMAGE}", "--format", "{{.Tag}}"]
        try:
            result = run(listing, Deadline(_DETECT_DEADLINE_S))
        except CommandFailed:
            return []
        if result.returncode != 0:
            return []
        return sorted({int(tag.split(".")[0]) for tag in result.output_tail.split() if tag.split(".")[0].isdigit()})

    def up(self, runtime: "Runtime", deadline: Deadline) -> str:
        command = self._project(runtime, with_file=True) + ["up", "-d", "--remove-orphans"]
        return run_checked(command, deadline, cwd=runtime.folder).output_tail

    def down(self, runtime: "Runtime", deadline: Deadline) -> str:
        command = self._project(runtime, with_file=runtime.has_manifest()) + ["down", "--remove-orphans"]
        return run_checked(command, deadline, cwd=runtime.folder).output_tail

    def status(self, runtime: "Runtime", deadline: Deadline) -> tuple[str, str]:
        if compose_command() == COMPOSE_CANDIDATES[0]:
            command = self._project(runtime, with_file=runtime.has_manifest()) + ["ps", "--all", "--format", "json"]
        else:  # compose v1 prints no JSON: ask the engine for the project's containers
            label = f"label={PROJECT_LABEL}={runtime.ref}"
            command = ["docker", "ps", "--all", "--no-trunc", "--filter", label, "--format", _ENGINE_PS_FORMAT]
        result = run_checked(command, deadline, cwd=runtime.folder, output_limit=PS_OUTPUT_LIMIT)
        return summarise_ps(result.output_tail)

    def create(self, runtime: "Runtime", deadline: Deadline) -> str:
        """The runtime's containers and volumes made, none started (a restore into a runtime
        that never ran needs its database volume)."""
        command = self._project(runtime, with_file=True) + ["up", "--no-start"]
        return run_checked(command, deadline, cwd=runtime.folder).output_tail

    def remove(self, runtime: "Runtime", purge_data: bool, deadline: Deadline) -> None:
        command = self._project(runtime, with_file=runtime.has_manifest()) + ["down", "--remove-orphans"]
        run_checked(command + (["--volumes"] if purge_data else []), deadline, cwd=runtime.folder)

    def _project(self, runtime: "Runtime", *, with_file: bool) -> list[str]:
        """`<compose> -p <ref> [-f <file>]`; without a file compose finds the project by its name."""
        compose = compose_command()
        if compose is None:
            raise CommandFailed("neither `docker compose` nor `docker-compose` works on this host")
        command = [*compose, "-p", runtime.ref]
        if with_file:
            command += ["-f", str(runtime.folder / compose_file(runtime.manifest()))]
            if (runtime.folder / OVERRIDE_FILE).is_file():
                command += ["-f", str(runtime.folder / OVERRIDE_FILE)]
        return command


def compose_file(manifest: dict) -> str:
    path = manifest.get("compose_file")
    if not isinstance(path, str):
        raise Invalid("runtime.toml needs compose_file, the compose file's path inside the runtime folder")
    return str(validate_path(path))


def summarise_ps(output: str) -> tuple[str, str]:
    """(running | stopped, detail) from `compose ps --format json`.

    Compose v2 prints one JSON object per line; older releases print one JSON array.
    Running means at least one container and every container running.
    """
    text = output.strip()
    if not text:
        return "stopped", "no containers"
    try:
        parsed = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line]
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, list) or not all(isinstance(item, dict) for item in parsed):
        raise CommandFailed("compose ps printed something other than container JSON", output_tail=output[-2048:])
    states = {str(item.get("Service") or item.get("Name")): _state(item) for item in parsed}
    detail = ", ".join(f"{service}: {state}" for service, state in sorted(states.items()))
    running = bool(states) and all(state.split(" ", 1)[0] == "running" for state in states.values())
    return ("running" if running else "stopped"), detail or "no containers"


def _state(item: dict) -> str:
    """`running`, `exited`, ...; with the healthcheck's verdict when there is one: `running (healthy)`."""
    state = str(item.get("State", "unknown"))
    health = item.get("Health")
    if not health:
        found = _HEALTH_IN_STATUS.search(str(item.get("Status", "")))
        health = found.group(1) if found else None
    return f"{state} ({health})" if health else state
