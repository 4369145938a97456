from django.db import migrations, models

# PostgreSQL only: the database itself forbids two blocks of one host from overlapping,
# whatever their state. SQLite (the embedded default) has no exclusion constraints; there
# the layout code (ports.actions.sync_port_blocks) is what keeps blocks apart.
ADD_NO_OVERLAP = [
    "CREATE EXTENSION IF NOT EXISTS btree_gist",
    "ALTER TABLE ports_portblock ADD CONSTRAINT port_block_no_overlap"
    " EXCLUDE USING gist (host_id WITH =, int4range(first_port, last_port, '[]') WITH &&)",
]
DROP_NO_OVERLAP = ["ALTER TABLE ports_portblock DROP CONSTRAINT port_block_no_overlap"]


def _on_postgresql(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for sql in statements:
                schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):

    dependencies = [
        ('hosts', '0001_initial'),
        ('ports', '0001_initial'),
        ('projects', '0001_initial'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='portblock',
            index=models.Index(fields=['host', 'state', 'released_at'], name='port_block_cooling_idx'),
        ),
        migrations.RunPython(_on_postgresql(ADD_NO_OVERLAP), _on_postgresql(DROP_NO_OVERLAP), elidable=False),
    ]
