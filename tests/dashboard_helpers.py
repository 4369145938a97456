"""Rows the dashboard tests build on: real registered templates and projects in each state."""

import shutil
from pathlib import Path

from django.utils import timezone

from operations.models import Kind, Operation, OperationEvent, State
from ports.models import BlockState, PortBlock
from projects.models import Project, Status
from templating.actions import sync_templates
from templating.models import TemplateVersion
from templating.secrets import generate_project_secrets
from tests.factories import make_host
from tests.stack import RUNTIMES

PROCESS_CAPABILITIES = {
    "driver": "process",
    "postgres_versions": [15, 16],
    "probe_host": "127.0.0.1",
    "probe_host_source": "loopback",
}


def register_template(tmp_path: Path, name: str = "postgres", *, readme: str | None = None) -> TemplateVersion:
    """Register runtimes/<name> as it is (or with its README changed: a new revision)."""
    folder = tmp_path / "runtimes" / name
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(RUNTIMES / name, folder)
    if readme is not None:
        (folder / "README.md").write_text(readme)
    sync_templates(tmp_path / "runtimes")
    return TemplateVersion.objects.latest_of(name)


def process_host(**fields):
    """A host whose agent has reported (process driver, Postgres 15 and 16); `make_host()` is one that never did."""
    return make_host(capabilities=PROCESS_CAPABILITIES, last_seen_at=timezone.now(), **fields)


def placed_project(
    version: TemplateVersion, host, *, status=Status.ACTIVE_HEALTHY, first_port=None, **fields
) -> Project:
    """A provisioned project: on a host, with a leased block and a succeeded provisioning."""
    project = Project.objects.create(
        name=fields.pop("name", "Orders"),
        postgres_major=fields.pop("postgres_major", 15),
        template=version.name,
        template_version=version,
        host=host,
        status=status,
        secrets=generate_project_secrets(),
        **fields,
    )
    if first_port is None:
        first_port = host.port_range_start + host.block_size * (PortBlock.objects.filter(host=host).count())
    PortBlock.objects.create(
        host=host,
        first_port=first_port,
        last_port=first_port + host.block_size - 1,
        state=BlockState.LEASED,
        project=project,
        leased_at=timezone.now(),
    )
    operation = Operation.objects.create(
        project=project, kind=Kind.PROVISION, state=State.SUCCEEDED, deadline=timezone.now(), finished_at=timezone.now()
    )
    OperationEvent.objects.create(operation=operation, step="health", message="All probes pass")
    return project
