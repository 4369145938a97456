"""Trigram indexes for the projects list's search, on PostgreSQL only.

The search is `ref` or `name` containing the words typed, case-insensitively (Django's
icontains/istartswith: UPPER(column) LIKE UPPER(pattern)); a GIN trigram index on the
same UPPER expression answers it without reading the whole table. On SQLite (the
embedded default) this migration does nothing and search reads the table, which is fine
at the sizes SQLite serves. Where the database user may not create the pg_trgm
extension, the indexes are left out with a warning rather than failing the upgrade.
"""

import logging

from django.db import DatabaseError, migrations, transaction

log = logging.getLogger(__name__)

INDEXES = {
    "project_name_trgm": "UPPER((name)::text) gin_trgm_ops",
    "project_ref_trgm": "UPPER((ref)::text) gin_trgm_ops",
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DatabaseError as error:
        log.warning("pg_trgm is not available (%s); project search will read the whole table", error)
        return
    for name, expression in INDEXES.items():
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON projects_project USING gin ({expression})")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("projects", "0004_organization")]

    operations = [migrations.RunPython(create, drop)]
