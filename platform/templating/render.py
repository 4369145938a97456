"""Render a template version for one project: deterministic, byte for byte.

The output depends only on the version's stored content and the context (project ref
and name, Postgres major and its runner, absolute ports, stored secrets): no clock, no
randomness, no environment. config-style TOML goes through tomlkit so the template's
comments and layout survive; other text through Jinja2 with StrictUndefined, so a
missing variable is an error rather than an empty string; the rest is copied.
"""

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import jinja2
import jinja2.meta
import tomlkit
from tomlkit.items import Item

from templating.manifest import Manifest, manifest_of
from templating.secrets import generate_project_secrets


class RenderError(Exception):
    """A version that cannot be rendered for a project; the message names the file (never a value)."""

    code = "render"


@dataclass(frozen=True)
class RenderedRuntime:
    """The files Berth writes for one project: managed and seed files, never user paths."""

    files: dict[str, bytes]
    policies: dict[str, str]
    user_paths: tuple[str, ...]
    # sha256 hex of every file above, as the agent reports digests.
    digests: dict[str, str]
    # Files whose rendering reads the project's secrets: the agent keeps them 0600.
    private: frozenset[str] = frozenset()

    @property
    def managed_digests(self) -> dict[str, str]:
        return {path: digest for path, digest in self.digests.items() if self.policies[path] == "managed"}


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@lru_cache(maxsize=1)
def jinja_environment() -> jinja2.Environment:
    # Not autoescaped: the outputs are config files, not HTML. keep_trailing_newline so a
    # rendered file ends exactly as its template does.
    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


def toml_key(document, dotted: str) -> Item | None:
    """The item at a dotted key (tables only, no quoted dots), or None."""
    node = document
    for part in dotted.split("."):
        if not hasattr(node, "get") or part not in node:
            return None
        node = node[part]
    return node


def _coerce(existing, rendered: str, where: str):
    """The rendered text as a value of the existing key's TOML type."""
    try:
        if isinstance(existing, bool):
            if rendered not in ("true", "false"):
                raise ValueError
            return rendered == "true"
        if isinstance(existing, int):
            return int(rendered)
        if isinstance(existing, float):
            return float(rendered)
    except ValueError:
        raise RenderError(f"{where}: rendered value is not a {type(existing).__name__}") from None
    if isinstance(existing, str):
        return rendered
    raise RenderError(f"{where}: only string, integer, float and boolean keys can be set")


def build_context(manifest: Manifest, *, ref: str, name: str, postgres_major: int, port_base: int, secrets: dict):
    if postgres_major not in manifest.postgres:
        raise RenderError(f"Postgres {postgres_major} is not supported (supported: {manifest.postgres_majors})")
    runner = manifest.postgres[postgres_major]
    # Only the runner field of the template's driver is present, so a template that
    # asks for the other one fails instead of rendering "None".
    postgres = {"major": postgres_major}
    if manifest.driver == "docker":
        postgres["image"] = runner.image
    else:
        postgres["local_major"] = runner.local_major
    return {
        "project": {"ref": ref, "name": name},
        "postgres": postgres,
        "ports": {slot: port_base + offset for slot, offset in manifest.ports.items()},
        "secrets": dict(secrets),
    }


def _render_file(spec, source: bytes, context: dict, where: str) -> bytes:
    if spec.render == "copy":
        return source
    environment = jinja_environment()
    try:
        if spec.render == "jinja":
            return environment.from_string(source.decode("utf-8")).render(context).encode("utf-8")
        document = tomlkit.parse(source.decode("utf-8"))
        for dotted, expression in sorted(spec.set.items()):
            key_where = f"{where}: {dotted}"
            existing = toml_key(document, dotted)
            if existing is None:
                raise RenderError(f"{key_where}: no such key to set")
            *parents, last = dotted.split(".")
            table = document
            for part in parents:
                table = table[part]
            table[last] = _coerce(existing, environment.from_string(expression).render(context), key_where)
        return tomlkit.dumps(document).encode("utf-8")
    except jinja2.UndefinedError as error:
        # Jinja names the missing variable, never a value.
        raise RenderError(f"{where}: {error.message}") from None


def uses_secrets(spec, source: bytes) -> bool:
    """Whether a file's rendering reads `secrets`: its Jinja text (render = jinja) or a `set`
    expression (render = toml) names the variable. Copied files hold no project secrets."""
    if spec.render == "copy":
        return False
    environment = jinja_environment()
    texts = [source.decode("utf-8")] if spec.render == "jinja" else list(spec.set.values())
    return any("secrets" in jinja2.meta.find_undeclared_variables(environment.parse(text)) for text in texts)


def render(version, context: dict) -> RenderedRuntime:
    manifest = manifest_of(version)
    sources = version.file_bytes()
    files: dict[str, bytes] = {}
    for path in sorted(manifest.files):
        files[path] = _render_file(manifest.files[path], sources[path], context, f"{version} {path}")
    return RenderedRuntime(
        files=files,
        policies={path: manifest.files[path].policy for path in files},
        user_paths=manifest.user_paths,
        digests={path: sha256(content) for path, content in files.items()},
        private=frozenset(path for path in files if uses_secrets(manifest.files[path], sources[path])),
    )


def project_context(project, version) -> dict:
    """The render context of a project on its leased port block."""
    manifest = manifest_of(version)
    block = getattr(project, "port_block", None)
    if block is None:
        raise RenderError(f"{project.ref} holds no port block; it is leased when the project is provisioned")
    size = block.last_port - block.first_port + 1
    if manifest.slots_needed > size:
        raise RenderError(f"{version} needs {manifest.slots_needed} ports; {project.ref}'s block holds {size}")
    return build_context(
        manifest,
        ref=project.ref,
        name=project.name,
        postgres_major=project.postgres_major,
        port_base=block.first_port,
        secrets=project.secrets,
    )


def render_project(project, version) -> RenderedRuntime:
    return render(version, project_context(project, version))


# A sample project that every template must render for before it is registered.
TRIAL_REF, TRIAL_NAME, TRIAL_PORT_BASE = "trialrender", "Trial render", 20000


def trial_render(version) -> None:
    """Render the version for a sample project with each Postgres major it supports; a
    RenderError (an undefined variable, a key that cannot be set) names template, file and cause.

    Run before a version is registered, so a template that cannot render never becomes the
    latest one that new projects lease ports for.
    """
    manifest = manifest_of(version)
    secrets = generate_project_secrets(now=0)
    for major in manifest.postgres_majors:
        context = build_context(
            manifest, ref=TRIAL_REF, name=TRIAL_NAME, postgres_major=major, port_base=TRIAL_PORT_BASE, secrets=secrets
        )
        render(version, context)
