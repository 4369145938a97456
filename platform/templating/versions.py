"""Which Postgres majors a template version (and a host) can run.

Checked when a project is created, before anything is leased or started, so the
requested major is either the one that runs or refused with the supported list.
"""

from django.core.exceptions import ValidationError

from templating.manifest import PostgresRunner, manifest_of


class UnsupportedPostgresVersion(ValidationError):
    """The requested major cannot run here; `supported` lists the majors that can."""

    def __init__(self, message: str, supported: list[int]):
        self.supported = supported
        super().__init__(message, code="version")

    def __str__(self):
        # The message itself, not ValidationError's list repr: it reaches people as it is.
        return self.message


def _listed(majors: list[int]) -> str:
    return ", ".join(str(m) for m in majors) or "none"


def supported_majors(version, host=None) -> list[int]:
    """Majors the version supports, narrowed to what the host can run when a host is given.

    The docker driver runs any image, so a docker host narrows nothing; a process host
    runs only the local PostgreSQL majors its agent reported.
    """
    manifest = manifest_of(version)
    if host is None:
        return manifest.postgres_majors
    if host.driver != manifest.driver:
        return []
    if manifest.driver == "docker":
        return manifest.postgres_majors
    local = set(host.postgres_versions)
    return [major for major, runner in sorted(manifest.postgres.items()) if runner.local_major in local]


def check_postgres_major(version, major: int, host=None) -> PostgresRunner:
    """The runner (image or local major) for `major`, or UnsupportedPostgresVersion."""
    manifest = manifest_of(version)
    if major not in manifest.postgres:
        raise UnsupportedPostgresVersion(
            f"Postgres {major} is not supported by template {version.name} r{version.revision}; "
            f"supported: {_listed(manifest.postgres_majors)}",
            manifest.postgres_majors,
        )
    if host is not None:
        if host.driver != manifest.driver:
            raise UnsupportedPostgresVersion(
                f"host {host.name} runs the {host.driver or 'unknown'} driver, but template {version.name} "
                f"needs {manifest.driver}; it supports no Postgres version there",
                [],
            )
        supported = supported_majors(version, host)
        if major not in supported:
            raise UnsupportedPostgresVersion(
                f"Postgres {major} cannot run on host {host.name} (local PostgreSQL: "
                f"{_listed(host.postgres_versions)}); supported there: {_listed(supported)}",
                supported,
            )
    return manifest.postgres[major]
