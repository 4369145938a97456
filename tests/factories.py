"""Small helpers that build rows for tests with sensible defaults."""

import itertools

from hosts.models import RuntimeHost
from operations.runtime_files import RuntimeFiles
from ports.models import BlockState, PortBlock
from projects.models import Project
from templating.models import TemplateVersion
from templating.render import render_project, sha256

_counter = itertools.count(1)


def make_host(**fields) -> RuntimeHost:
    """A host as registered: its agent has never reported (no capabilities, never seen)."""
    n = next(_counter)
    values = {
        "name": f"host{n}",
        "agent_url": "http://127.0.0.1:8470",
        "agent_token": "token",
        "port_range_start": 20000,
        "port_range_end": 20999,
        "block_size": 10,
    }
    values.update(fields)
    return RuntimeHost.objects.create(**values)


REPORTED_CAPABILITIES = {
    "agent_version": "0.1.0",
    "api_version": 1,
    "driver": "process",
    "probe_host": "127.0.0.1",
    "probe_host_source": "loopback",
    "postgres_versions": [15, 16],
    "compose": None,
}


def make_reported_host(**fields) -> RuntimeHost:
    """A host whose agent has answered: only for tests that need one, and say so."""
    from django.utils import timezone

    fields.setdefault("capabilities", REPORTED_CAPABILITIES)
    fields.setdefault("last_seen_at", timezone.now())
    return make_host(**fields)


def make_template_version(**fields) -> TemplateVersion:
    n = next(_counter)
    values = {"name": "postgres", "revision": n, "digest": f"{n:064x}", "manifest": "", "files": {}}
    values.update(fields)
    return TemplateVersion.objects.create(**values)


def make_project(**fields) -> Project:
    n = next(_counter)
    if "template_version" not in fields:
        fields["template_version"] = make_template_version()
    values = {"name": f"Project {n}", "postgres_major": 15, "template": fields["template_version"].name}
    values.update(fields)
    return Project.objects.create(**values)


class FakePortChecker:
    """A port checker that reports `busy` ports as taken and records every question."""

    def __init__(self, busy=()):
        self.busy = set(busy)
        self.asked: list[list[int]] = []

    def taken(self, host, ports) -> set[int]:
        ports = list(ports)
        self.asked.append(ports)
        return self.busy.intersection(ports)


def make_port_block(project: Project, *, first_port: int = 20000, size: int = 10) -> PortBlock:
    """A block leased to `project` (on its host, which must be set)."""
    return PortBlock.objects.create(
        host=project.host,
        first_port=first_port,
        last_port=first_port + size - 1,
        state=BlockState.LEASED,
        project=project,
    )


def register_template(folder) -> TemplateVersion:
    """Register a template folder as the next revision of its name (what `templates sync` does for one)."""
    from templating.models import encode_file
    from templating.registry import read_template

    source = read_template(folder)
    latest = TemplateVersion.objects.latest_of(source.name)
    return TemplateVersion.objects.create(
        name=source.name,
        revision=latest.revision + 1 if latest else 1,
        digest=source.digest,
        manifest=source.manifest_text,
        files={path: encode_file(content) for path, content in source.files.items()},
    )


def make_runtime_project(version: TemplateVersion, *, postgres_major: int = 15, first_port: int = 20000, **fields):
    """A provisioned-looking project of `version`: on a host whose driver fits, with secrets and a port block."""
    from templating.manifest import manifest_of
    from templating.secrets import generate_project_secrets

    manifest = manifest_of(version)
    capabilities = {"driver": manifest.driver, "postgres_versions": [14, 15, 16, 17, 18]}
    host = fields.pop("host", None) or make_host(capabilities=capabilities, block_size=manifest.slots_needed)
    project = make_project(
        template_version=version,
        postgres_major=postgres_major,
        host=host,
        secrets=generate_project_secrets(now=1_700_000_000),
        **fields,
    )
    make_port_block(project, first_port=first_port, size=manifest.slots_needed)
    return project


class FakeRuntimeFiles(RuntimeFiles):
    """The hosts' runtime folders in memory, behind the same interface as the agent gateway."""

    def __init__(self):
        self.folders: dict[str, dict[str, bytes]] = {}
        self.puts: list[tuple[str, list[str], list[str]]] = []
        self.broken: set[str] = set()
        self.corrupting = False

    def provision(self, project: Project) -> None:
        rendered = render_project(project, project.template_version)
        self.folders[project.ref] = dict(rendered.files)
        Project.objects.filter(pk=project.pk).update(file_digests=rendered.managed_digests)
        project.file_digests = rendered.managed_digests

    def digests(self, project, paths):
        if project.ref in self.broken:
            raise ConnectionError(f"agent of {project.host.name} unreachable")
        folder = self.folders.get(project.ref, {})
        return {path: sha256(folder[path]) if path in folder else None for path in paths}

    def contents(self, project, paths):
        folder = self.folders.get(project.ref, {})
        return {path: folder.get(path) for path in paths}

    def put_files(self, project, rendered, paths, remove, *, backup=(), backup_suffix=None):
        self.puts.append((project.ref, list(paths), list(remove)))
        folder = self.folders.setdefault(project.ref, {})
        for path in backup:
            if path in folder:
                folder.setdefault(f"{path}.{backup_suffix}", folder[path])
        for path in paths:
            folder[path] = rendered.files[path]
        for path in remove:
            folder.pop(path, None)
        return {path: sha256(folder[path] + (b"!" if self.corrupting else b"")) for path in paths}
