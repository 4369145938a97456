"""Registering template versions: `sync_templates` records what runtimes/ holds.

Taking projects to a version (re-sync, migrations) runs work on hosts, so it lives in
operations.resync; this app stays pure template logic plus its own table.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction

from audit.actions import record
from audit.models import Action
from templating.models import TemplateVersion, encode_file
from templating.registry import read_templates
from templating.render import trial_render

log = logging.getLogger(__name__)


class SyncRace(Exception):
    """Another sync registered a revision of the same template at the same moment."""


@dataclass(frozen=True)
class SyncResult:
    version: TemplateVersion
    created: bool


def sync_templates(root: Path | None = None, *, actor=None, label: str | None = None) -> list[SyncResult]:
    """Register a new revision of every template whose content differs from its latest.

    Every template is read and validated before anything is written, and all are
    registered in one transaction: a malformed manifest, or a template that fails its
    trial render for a sample project (templating.render.trial_render), registers nothing.
    """
    sources = read_templates(Path(root or settings.BERTH_RUNTIMES_DIR))
    results = []
    try:
        with transaction.atomic():
            for source in sources:
                # Locking the latest revision serialises concurrent syncs of a known template;
                # the unique (name, revision) constraint settles the race on a new one.
                latest = (
                    TemplateVersion.objects.select_for_update().filter(name=source.name).order_by("-revision").first()
                )
                if latest is not None and latest.digest == source.digest:
                    results.append(SyncResult(latest, created=False))
                    continue
                version = TemplateVersion.objects.create(
                    name=source.name,
                    revision=(latest.revision + 1) if latest else 1,
                    digest=source.digest,
                    manifest=source.manifest_text,
                    files={path: encode_file(content) for path, content in source.files.items()},
                )
                # Raises RenderError, which rolls back every registration of this sync.
                trial_render(version)
                record(
                    actor,
                    Action.TEMPLATE_REGISTER,
                    detail={"name": version.name, "revision": version.revision, "digest": version.digest},
                    label=label,
                )
                log.info("registered template %s r%s (%s)", version.name, version.revision, version.digest[:12])
                results.append(SyncResult(version, created=True))
    except IntegrityError:
        raise SyncRace("another sync registered a template revision at the same time; run sync again") from None
    return results
