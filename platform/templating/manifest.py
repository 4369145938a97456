"""Parse and validate a template's manifest.toml against the files beside it.

A manifest that parses here can be registered, rendered and merged: every file in the
template folder is listed, every listed file exists, Jinja files compile, TOML files
parse and hold every key the manifest sets. Every error names the file and the key.
"""

import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import PurePosixPath

MANIFEST_NAME = "manifest.toml"
# The file every template renders so the agent's driver knows how to run it.
RUNTIME_FILE = "runtime.toml"

DRIVERS = ("process", "docker")
POLICIES = ("managed", "seed", "user")
RENDERERS = ("toml", "jinja", "copy")
PROBE_KINDS = ("tcp", "http", "postgres")
SLOT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
GLOB_CHARS = set("*?[")


class ManifestError(Exception):
    """A template that cannot be registered; the message names the file and the key."""

    def __init__(self, source: str, key: str | None, message: str):
        self.source, self.key = source, key
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")


@dataclass(frozen=True)
class PostgresRunner:
    """What runs one supported Postgres major: a docker image, or the host's local installation."""

    major: int
    image: str | None = None
    local_major: int | None = None


@dataclass(frozen=True)
class Probe:
    name: str
    kind: str
    slot: str
    path: str | None = None
    expect_status: int | None = None


@dataclass(frozen=True)
class FileSpec:
    path: str
    policy: str
    render: str | None = None
    # Dotted TOML key -> Jinja expression (render = "toml" only).
    set: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    description: str
    driver: str
    ports: dict[str, int]
    postgres: dict[int, PostgresRunner]
    probes: tuple[Probe, ...]
    files: dict[str, FileSpec]
    user_paths: tuple[str, ...]

    @property
    def slots_needed(self) -> int:
        """Ports a project's block must hold: the highest slot offset plus one."""
        return max(self.ports.values()) + 1

    @property
    def postgres_majors(self) -> list[int]:
        return sorted(self.postgres)

    def is_user_path(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.user_paths)


def _table(value, source: str, key: str) -> dict:
    if not isinstance(value, dict):
        raise ManifestError(source, key, "must be a table")
    return value


def _unknown(table: dict, allowed: set[str], source: str, prefix: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise ManifestError(source, f"{prefix}{extra[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _int(value, source: str, key: str, *, minimum: int = 0) -> int:
    # bool is an int in Python; a TOML `true` is never a port offset or a status.
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ManifestError(source, key, f"must be an integer >= {minimum}")
    return value


def _str(value, source: str, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ManifestError(source, key, "must be a non-empty string")
    return value


def _choice(value, choices, source: str, key: str) -> str:
    if value not in choices:
        raise ManifestError(source, key, f"must be one of {', '.join(choices)} (got {value!r})")
    return value


def _relative_path(path: str, source: str, key: str) -> str:
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or str(pure) != path or "\\" in path:
        raise ManifestError(source, key, "must be a normalised relative path inside the template")
    if path == MANIFEST_NAME:
        raise ManifestError(source, key, "the manifest is not a runtime file")
    if pure.parts[0].startswith(".berth"):
        # The agent keeps its own state under .berth* names and refuses to write there.
        raise ManifestError(source, key, "names starting with .berth are reserved for the agent")
    return path


def parse_manifest(text: str, *, source: str) -> Manifest:
    """Parse and check a manifest on its own (without the template's files)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ManifestError(source, None, f"not valid TOML ({error})") from None
    _unknown(data, {"template", "ports", "postgres", "probes", "files"}, source, "")

    template = _table(data.get("template"), source, "template")
    _unknown(template, {"description", "driver"}, source, "template.")
    description = template.get("description", "")
    if not isinstance(description, str):
        raise ManifestError(source, "template.description", "must be a string")
    driver = _choice(template.get("driver"), DRIVERS, source, "template.driver")

    ports_table = _table(data.get("ports"), source, "ports")
    if not ports_table:
        raise ManifestError(source, "ports", "must name at least one slot")
    ports: dict[str, int] = {}
    for slot, offset in ports_table.items():
        if not SLOT_NAME.match(slot):
            raise ManifestError(source, f"ports.{slot}", "slot names are lowercase letters, digits and _")
        ports[slot] = _int(offset, source, f"ports.{slot}")
    taken: dict[int, str] = {}
    for slot, offset in ports.items():
        if offset in taken:
            raise ManifestError(source, f"ports.{slot}", f"offset {offset} is already slot {taken[offset]}")
        taken[offset] = slot

    postgres_table = _table(data.get("postgres"), source, "postgres")
    _unknown(postgres_table, {"versions"}, source, "postgres.")
    versions = _table(postgres_table.get("versions"), source, "postgres.versions")
    if not versions:
        raise ManifestError(source, "postgres.versions", "must list at least one supported major")
    runner_key = "image" if driver == "docker" else "local_major"
    postgres: dict[int, PostgresRunner] = {}
    for name, runner in versions.items():
        key = f"postgres.versions.{name}"
        if not name.isdigit():
            raise ManifestError(source, key, "a version key is a Postgres major number, e.g. 17")
        runner = _table(runner, source, key)
        _unknown(runner, {runner_key}, source, f"{key}.")
        major = int(name)
        if driver == "docker":
            postgres[major] = PostgresRunner(major, image=_str(runner.get("image"), source, f"{key}.image"))
        else:
            local = _int(runner.get("local_major"), source, f"{key}.local_major", minimum=1)
            postgres[major] = PostgresRunner(major, local_major=local)

    probes: list[Probe] = []
    probe_list = data.get("probes", [])
    if not isinstance(probe_list, list):
        raise ManifestError(source, "probes", "must be an array of tables ([[probes]])")
    for index, probe in enumerate(probe_list):
        key = f"probes[{index}]"
        probe = _table(probe, source, key)
        _unknown(probe, {"name", "kind", "slot", "path", "expect_status"}, source, f"{key}.")
        name = _str(probe.get("name"), source, f"{key}.name")
        if any(p.name == name for p in probes):
            raise ManifestError(source, f"{key}.name", f"probe {name!r} is listed twice")
        kind = _choice(probe.get("kind"), PROBE_KINDS, source, f"{key}.kind")
        slot = _str(probe.get("slot"), source, f"{key}.slot")
        if slot not in ports:
            raise ManifestError(source, f"{key}.slot", f"{slot!r} is not a slot in [ports]")
        path = expect_status = None
        if kind == "http":
            path = _str(probe.get("path", "/"), source, f"{key}.path")
            if not path.startswith("/"):
                raise ManifestError(source, f"{key}.path", "must start with /")
            expect_status = _int(probe.get("expect_status", 200), source, f"{key}.expect_status", minimum=100)
            if expect_status > 599:
                # The agent refuses such a probe, failing the whole host's health call with it.
                raise ManifestError(source, f"{key}.expect_status", "must be an HTTP status (100-599)")
        elif "path" in probe or "expect_status" in probe:
            raise ManifestError(source, f"{key}.path", "only http probes take path and expect_status")
        probes.append(Probe(name, kind, slot, path, expect_status))

    files: dict[str, FileSpec] = {}
    user_paths: list[str] = []
    for path, spec in _table(data.get("files"), source, "files").items():
        key = f'files."{path}"'
        spec = _table(spec, source, key)
        _unknown(spec, {"policy", "render", "set"}, source, f"{key}.")
        _relative_path(path, source, key)
        policy = _choice(spec.get("policy"), POLICIES, source, f"{key}.policy")
        if policy == "user":
            if "render" in spec or "set" in spec:
                raise ManifestError(source, f"{key}.render", "user paths are never written, so never rendered")
            user_paths.append(path)
            continue
        if GLOB_CHARS & set(path):
            raise ManifestError(source, key, "only user paths may be globs; managed and seed files are named")
        render = _choice(spec.get("render", "copy"), RENDERERS, source, f"{key}.render")
        settings = _table(spec.get("set", {}), source, f"{key}.set")
        if settings and render != "toml":
            raise ManifestError(source, f"{key}.set", 'only render = "toml" files take set')
        for dotted, expression in settings.items():
            _str(expression, source, f'{key}.set."{dotted}"')
        files[path] = FileSpec(path, policy, render, dict(settings))

    runtime = files.get(RUNTIME_FILE)
    if runtime is None or runtime.policy != "managed":
        raise ManifestError(source, f'files."{RUNTIME_FILE}"', "every template renders a managed runtime.toml")
    manifest = Manifest(description, driver, ports, postgres, tuple(probes), files, tuple(user_paths))
    for path in files:
        if manifest.is_user_path(path):
            raise ManifestError(source, f'files."{path}"', "is also covered by a user path; a path has one policy")
    return manifest


@lru_cache(maxsize=64)
def _parse_cached(text: str, source: str) -> Manifest:
    return parse_manifest(text, source=source)


def manifest_of(version) -> Manifest:
    """The parsed manifest of a registered TemplateVersion (validated when it was registered)."""
    return _parse_cached(version.manifest, f"{version.name} r{version.revision} {MANIFEST_NAME}")
