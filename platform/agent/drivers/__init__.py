"""Runtime drivers: how a runtime folder becomes running services on this host.

`process` runs a project's Postgres from local PostgreSQL binaries; `docker` runs the
runtime's compose file. Both read what to run from the runtime's runtime.toml.
"""

from typing import TYPE_CHECKING, Protocol

from agent.commands import Deadline
from agent.config import AgentConfig
from agent.drivers.docker import DockerDriver, engine_answers
from agent.drivers.process import ProcessDriver
from agent.drivers.settings import ProcessSettings
from agent.drivers.upgrade import ProcessUpgrades
from agent.probes import resolve_probe_host

if TYPE_CHECKING:
    from agent.runtimes import Runtime

ENGINE_CHECK_DEADLINE_S = 5.0


class Driver(Protocol):
    name: str

    def postgres_versions(self) -> list[int]:
        """The Postgres majors this host can run."""

    def folder_group(self) -> int | None:
        """The group whose members must traverse a runtime folder (the user services run as
        when it is not the agent's), or None: the folder is then the agent's alone."""

    def up(self, runtime: "Runtime", deadline: Deadline) -> str:
        """Start the runtime (idempotent); returns the commands' output tail."""

    def down(self, runtime: "Runtime", deadline: Deadline) -> str:
        """Stop the runtime, keeping its data (idempotent); returns the output tail."""

    def status(self, runtime: "Runtime", deadline: Deadline) -> tuple[str, str]:
        """(running | stopped, detail) of an existing runtime folder."""

    def remove(self, runtime: "Runtime", purge_data: bool, deadline: Deadline) -> None:
        """Stop the runtime and release what the driver holds outside its folder."""


def select_driver(config: AgentConfig) -> Driver:
    """The configured driver; `auto` takes docker when an engine answers, else process."""
    choice = config.driver
    if choice == "auto":
        choice = "docker" if engine_answers(Deadline(ENGINE_CHECK_DEADLINE_S)) else "process"
    if choice == "docker":
        return DockerDriver()
    # Process runtimes share the agent's network. They answer where the agent probes them
    # and where callers reach the agent, whose URL's host is the runtime's published address.
    probe_host = resolve_probe_host(config.probe_host_override, "process").host
    return ProcessDriver.for_root(
        config.root, serve_hosts=(probe_host, config.listen_host), search_path=config.postgres_path
    )


def upgrades_for(driver: Driver) -> ProcessUpgrades | None:
    """The driver's major upgrades; only the process driver upgrades a cluster in place (a
    docker runtime's major is its image's)."""
    return ProcessUpgrades(driver) if isinstance(driver, ProcessDriver) else None


def settings_for(driver: Driver) -> ProcessSettings | None:
    """The driver's database settings; only the process driver applies them (a docker
    runtime's server is configured by its image and compose file)."""
    return ProcessSettings(driver) if isinstance(driver, ProcessDriver) else None
