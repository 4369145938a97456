"""Search costs that do not grow with the fleet, on PostgreSQL only.

- The name's trigram index stops deferring inserts to a pending list
  (`fastupdate = off`): every search reads that list whole, up to
  gin_pending_list_limit (4 MB), and only autovacuum empties it, so a fleet that keeps
  creating projects paid for a few hundred pages on each search.
- The ref's trigram index goes: refs are searched by prefix (ProjectQuerySet.search),
  which the ref's `varchar_pattern_ops` index answers as a range.
Where 0005 left the indexes out (no pg_trgm), there is nothing to change.
"""

from django.db import migrations

FORWARD = """
DO $$
BEGIN
    IF to_regclass('project_name_trgm') IS NOT NULL THEN
        ALTER INDEX project_name_trgm SET (fastupdate = off);
        PERFORM gin_clean_pending_list('project_name_trgm');
    END IF;
END $$
"""

BACKWARD = """
DO $$
BEGIN
    IF to_regclass('project_name_trgm') IS NOT NULL THEN
        ALTER INDEX project_name_trgm RESET (fastupdate);
        CREATE INDEX IF NOT EXISTS project_ref_trgm ON projects_project USING gin (UPPER((ref)::text) gin_trgm_ops);
    END IF;
END $$
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)
        schema_editor.execute("DROP INDEX IF EXISTS project_ref_trgm")


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("projects", "0006_list_indexes")]

    operations = [migrations.RunPython(forward, backward)]
