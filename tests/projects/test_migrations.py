"""Data migrations of the projects app, run from the state before them."""

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("projects", "0007_search_costs"), ("operations", "0003_list_indexes")]
AFTER = [("projects", "0008_sort_indexes")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_last_activity_is_the_latest_operation_request_else_the_creation():
    apps = migrate(BEFORE)
    Project = apps.get_model("projects", "Project")
    Operation = apps.get_model("operations", "Operation")
    TemplateVersion = apps.get_model("templating", "TemplateVersion")
    version = TemplateVersion.objects.create(name="postgres", revision=1, digest="0" * 64, manifest="")
    busy = Project.objects.create(name="Busy", postgres_major=15, template="postgres", template_version=version)
    quiet = Project.objects.create(name="Quiet", postgres_major=15, template="postgres", template_version=version)
    latest = timezone.now() - timedelta(hours=1)
    for created in (latest - timedelta(days=2), latest):
        operation = Operation.objects.create(project=busy, kind="restart", state="succeeded", deadline=created)
        Operation.objects.filter(pk=operation.pk).update(created_at=created)
    try:
        apps = migrate(AFTER)
        Project = apps.get_model("projects", "Project")
        assert Project.objects.get(pk=busy.pk).last_activity_at == latest
        assert Project.objects.get(pk=quiet.pk).last_activity_at == quiet.created_at
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
