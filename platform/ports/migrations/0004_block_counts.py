import django.db.models.deletion
from django.db import migrations, models

# Per-host block counts kept by the database (ports.models.BlockCount): triggers change
# them in the statement that changes blocks, so no write path can forget them, and a
# lease keeps its round trips. Counted as 0/1 per state with CASE, which both databases run.
STATES = ("free", "leased", "cooling", "blocked")


def _per_state(row: str, sign: str = "") -> str:
    return ", ".join(f"{sign}CASE WHEN {row}.state = '{s}' THEN 1 ELSE 0 END AS {s}" for s in STATES)


def _sums() -> str:
    return ", ".join(f"SUM({s}) AS {s}" for s in STATES)


def _add(target: str, source: str, sign: str = "+") -> str:
    return ", ".join(f"{s} = {target}.{s} {sign} {source}.{s}" for s in STATES)


BACKFILL = (
    f"INSERT INTO ports_blockcount (host_id, {', '.join(STATES)})"
    f" SELECT host_id, {_sums()} FROM (SELECT b.host_id, {_per_state('b')} FROM ports_portblock AS b) AS each_block"
    " GROUP BY host_id"
)

# PostgreSQL: statement-level triggers over transition tables, one counts row per host a
# statement touched. A bulk layout of thousands of blocks is one upsert; an UPDATE that
# changes no state (checked_at, say) writes nothing and takes no lock, since a column list
# (UPDATE OF state) is not allowed with transition tables. Hosts are locked in id order.
POSTGRESQL = [
    f"""
    CREATE FUNCTION ports_block_count_apply() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO ports_blockcount AS c (host_id, {", ".join(STATES)})
            SELECT host_id, {_sums()} FROM (SELECT n.host_id, {_per_state("n")} FROM new_blocks AS n) AS d
            GROUP BY host_id ORDER BY host_id
            ON CONFLICT (host_id) DO UPDATE SET {_add("c", "excluded")};
        ELSIF TG_OP = 'DELETE' THEN
            UPDATE ports_blockcount AS c SET {_add("c", "d", "-")}
            FROM (SELECT host_id, {_sums()} FROM (SELECT o.host_id, {_per_state("o")} FROM old_blocks AS o) AS e
                  GROUP BY host_id) AS d
            WHERE c.host_id = d.host_id;
        ELSE
            INSERT INTO ports_blockcount AS c (host_id, {", ".join(STATES)})
            SELECT host_id, {_sums()} FROM (
                SELECT n.host_id, {_per_state("n")} FROM new_blocks AS n
                UNION ALL
                SELECT o.host_id, {_per_state("o", "-")} FROM old_blocks AS o
            ) AS d
            GROUP BY host_id
            HAVING {" OR ".join(f"SUM({s}) <> 0" for s in STATES)}
            ORDER BY host_id
            ON CONFLICT (host_id) DO UPDATE SET {_add("c", "excluded")};
        END IF;
        RETURN NULL;
    END
    $$
    """,
    "CREATE TRIGGER ports_block_count_insert AFTER INSERT ON ports_portblock"
    " REFERENCING NEW TABLE AS new_blocks FOR EACH STATEMENT EXECUTE FUNCTION ports_block_count_apply()",
    "CREATE TRIGGER ports_block_count_update AFTER UPDATE ON ports_portblock"
    " REFERENCING OLD TABLE AS old_blocks NEW TABLE AS new_blocks"
    " FOR EACH STATEMENT EXECUTE FUNCTION ports_block_count_apply()",
    "CREATE TRIGGER ports_block_count_delete AFTER DELETE ON ports_portblock"
    " REFERENCING OLD TABLE AS old_blocks FOR EACH STATEMENT EXECUTE FUNCTION ports_block_count_apply()",
]
POSTGRESQL_DROP = [
    "DROP TRIGGER ports_block_count_insert ON ports_portblock",
    "DROP TRIGGER ports_block_count_update ON ports_portblock",
    "DROP TRIGGER ports_block_count_delete ON ports_portblock",
    "DROP FUNCTION ports_block_count_apply()",
]


def _sqlite_upsert(row: str) -> str:
    values = ", ".join(f"CASE WHEN {row}.state = '{s}' THEN 1 ELSE 0 END" for s in STATES)
    return (
        f"INSERT INTO ports_blockcount (host_id, {', '.join(STATES)}) VALUES ({row}.host_id, {values})"
        f" ON CONFLICT (host_id) DO UPDATE SET {', '.join(f'{s} = {s} + excluded.{s}' for s in STATES)};"
    )


def _sqlite_subtract(row: str) -> str:
    changes = ", ".join(f"{s} = {s} - CASE WHEN {row}.state = '{s}' THEN 1 ELSE 0 END" for s in STATES)
    return f"UPDATE ports_blockcount SET {changes} WHERE host_id = {row}.host_id;"


# SQLite: row-level triggers (it has no statement-level ones); its writers run one at a time.
SQLITE = [
    f"CREATE TRIGGER ports_block_count_insert AFTER INSERT ON ports_portblock BEGIN {_sqlite_upsert('NEW')} END",
    "CREATE TRIGGER ports_block_count_update AFTER UPDATE OF state, host_id ON ports_portblock"
    " WHEN OLD.state IS NOT NEW.state OR OLD.host_id IS NOT NEW.host_id"
    f" BEGIN {_sqlite_subtract('OLD')} {_sqlite_upsert('NEW')} END",
    f"CREATE TRIGGER ports_block_count_delete AFTER DELETE ON ports_portblock BEGIN {_sqlite_subtract('OLD')} END",
]
SQLITE_DROP = [
    "DROP TRIGGER ports_block_count_insert",
    "DROP TRIGGER ports_block_count_update",
    "DROP TRIGGER ports_block_count_delete",
]


def create(apps, schema_editor):
    postgresql = schema_editor.connection.vendor == "postgresql"
    schema_editor.execute(BACKFILL)
    for sql in POSTGRESQL if postgresql else SQLITE:
        schema_editor.execute(sql)


def drop(apps, schema_editor):
    for sql in POSTGRESQL_DROP if schema_editor.connection.vendor == "postgresql" else SQLITE_DROP:
        schema_editor.execute(sql)


class Migration(migrations.Migration):

    dependencies = [
        ("hosts", "0003_runtimehost_region"),
        ("ports", "0003_free_block_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="BlockCount",
            fields=[
                (
                    "host",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="block_count",
                        serialize=False,
                        to="hosts.runtimehost",
                    ),
                ),
                ("free", models.IntegerField(default=0)),
                ("leased", models.IntegerField(default=0)),
                ("cooling", models.IntegerField(default=0)),
                ("blocked", models.IntegerField(default=0)),
            ],
        ),
        migrations.RunPython(create, drop, elidable=False),
    ]
