"""Migration operations 0004 gives the operations that ran before it their typed outcomes,
read once from the events that held them."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("operations", "0003_list_indexes"), ("projects", "0008_sort_indexes")]
AFTER = [("operations", "0004_typed_outcomes")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_each_operation_takes_its_outcome_from_its_events():
    apps = migrate(BEFORE)
    Project = apps.get_model("projects", "Project")
    Operation = apps.get_model("operations", "Operation")
    Event = apps.get_model("operations", "OperationEvent")
    TemplateVersion = apps.get_model("templating", "TemplateVersion")
    version = TemplateVersion.objects.create(name="postgres", revision=1, digest="0" * 64, manifest="")
    project = Project.objects.create(name="Old", postgres_major=15, template="postgres", template_version=version)

    def operation(state, *, params=None, error_code="", events=()):
        made = Operation.objects.create(
            project=project, kind="resync", state=state, deadline=timezone.now(), params=params or {}
        )
        Operation.objects.filter(pk=made.pk).update(error_code=error_code)
        for step, message, data in events:
            Event.objects.create(operation=made, step=step, message=message, data=data)
        return made.pk

    queued = {"desired_before": "stopped"}
    claimed = {"status_before": "ACTIVE_UNHEALTHY", "status_reason_before": "db: slow"}
    updated = operation(
        "succeeded",
        events=[
            ("queued", "Re-sync requested", queued),
            ("claimed", "A worker started the operation", claimed),
            ("resync", "postgres r2: 1 written, 0 removed", {"status": "updated", "changed": True}),
            ("restart", "Restarting so the new files take effect", {}),
        ],
    )
    unchanged = operation("succeeded", events=[("resync", "postgres r2: 0 written", {"status": "unchanged"})])
    resolved = operation("succeeded", params={"resolve": "keep-local"}, events=[("resync", "kept", {})])
    conflicted = operation(
        "failed", error_code="conflict", events=[("conflict", "conflict: a.toml", {"paths": ["a.toml", "b.toml"]})]
    )
    unhealthy_after = operation("failed", events=[("resync", "postgres r2: 1 written", {"status": "updated"})])
    never_claimed = operation("cancelled", events=[("queued", "Re-sync requested", {"desired_before": "running"})])
    try:
        apps = migrate(AFTER)
        Operation = apps.get_model("operations", "Operation")
        columns = ["desired_before", "status_before", "status_reason_before", "restarted", "result", "result_message"]
        rows = {row["pk"]: row for row in Operation.objects.values("pk", "conflict_paths", *columns)}
        assert rows[updated] == {
            "pk": updated,
            "desired_before": "stopped",
            "status_before": "ACTIVE_UNHEALTHY",
            "status_reason_before": "db: slow",
            "restarted": True,
            "result": "updated",
            "result_message": "postgres r2: 1 written, 0 removed",
            "conflict_paths": [],
        }
        assert (rows[unchanged]["result"], rows[unchanged]["restarted"]) == ("unchanged", False)
        assert (rows[resolved]["result"], rows[resolved]["result_message"]) == ("resolved", "kept")
        assert (rows[conflicted]["result"], rows[conflicted]["conflict_paths"]) == ("conflicted", ["a.toml", "b.toml"])
        assert (rows[unhealthy_after]["result"], rows[unhealthy_after]["result_message"]) == (
            "updated",
            "postgres r2: 1 written",
        )
        assert rows[never_claimed]["desired_before"] == "running"
        assert (rows[never_claimed]["status_before"], rows[never_claimed]["result"]) == ("", "")
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
