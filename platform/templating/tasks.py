"""django-q2 entry points for templates; thin callers of templating.actions."""

from django.contrib.auth import get_user_model

from templating.actions import request_migration_resyncs
from templating.models import TemplateVersion


def request_migration(version_id: int, user_id: int | None, label: str | None = None) -> dict:
    """Queue the re-syncs of a migration started from the dashboard, on behalf of who started it."""
    actor = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    return request_migration_resyncs(TemplateVersion.objects.get(pk=version_id), actor=actor, label=label)
