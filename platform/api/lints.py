"""The advisors' lints: what `GET /v1/projects/{ref}/advisors/security|performance` checks in a
project's database, in the platform's lint shape (`name`, `title`, `level`, `facing`,
`categories`, `description`, `detail`, `remediation`, `metadata`, `cache_key`), so
`supabase db advisors --linked` reads them as it reads supabase.com's.

Each lint is its fixed text here and a query of the catalogs that yields one row per finding
(`detail`, `metadata`, `cache_key`); a kind's lints run as one read-only statement. Written by
Berth after the lints Supabase documents (docs/guides/database/database-linter); the names,
levels and cache keys are theirs, so a dashboard that remembers dismissed lints matches.

Schemas: "exposed" ones are those PostgREST serves (`pgrst.db_schemas` when the database sets
it, else `public`, PostgREST's default); the platform's own schemas are never linted, since a
project's owner cannot change them.
"""

from dataclasses import dataclass

SECURITY, PERFORMANCE = "security", "performance"
KINDS = (SECURITY, PERFORMANCE)

# The platform's and extensions' schemas: what a project's owner does not write.
PLATFORM_SCHEMAS = (
    "_analytics",
    "_realtime",
    "_supavisor",
    "auth",
    "cron",
    "extensions",
    "graphql",
    "graphql_public",
    "information_schema",
    "net",
    "pg_catalog",
    "pg_toast",
    "pgbouncer",
    "pgmq",
    "pgsodium",
    "pgsodium_masks",
    "pgtle",
    "realtime",
    "repack",
    "storage",
    "supabase_functions",
    "supabase_migrations",
    "tiger",
    "topology",
    "vault",
)
_PLATFORM = "array[" + ", ".join(f"'{name}'" for name in PLATFORM_SCHEMAS) + "]::text[]"
_EXPOSED = (
    "array(select trim(s) from unnest(string_to_array("
    "coalesce(nullif(current_setting('pgrst.db_schemas', true), ''), 'public'), ',')) s)"
)
# Readable by a request role: joined as `api` (no row when the roles do not exist, never an error).
_API_ROLES = "(select oid from pg_catalog.pg_roles where rolname in ('anon', 'authenticated'))"
_NOT_OF_EXTENSION = "not exists (select 1 from pg_catalog.pg_depend d where d.objid = {oid} and d.deptype = 'e')"


@dataclass(frozen=True)
class Lint:
    name: str
    kind: str
    title: str
    level: str  # ERROR | WARN | INFO
    facing: str  # EXTERNAL: about what the API exposes; INTERNAL: about the database alone
    description: str
    remediation_page: str  # the lint's section of Supabase's database linter guide
    findings: str  # SQL: one row per finding with detail, metadata, cache_key

    @property
    def categories(self) -> list[str]:
        return [self.kind.upper()]

    @property
    def remediation(self) -> str:
        return f"https://supabase.com/docs/guides/database/database-linter?lint={self.remediation_page}"


LINTS = (
    Lint(
        name="rls_disabled_in_public",
        kind=SECURITY,
        title="RLS Disabled in Public",
        level="ERROR",
        facing="EXTERNAL",
        description="Detects cases where row level security (RLS) has not been enabled on tables in schemas "
        "exposed to PostgREST",
        remediation_page="0013_rls_disabled_in_public",
        findings=f"""
select format('Table `%s.%s` is public, but RLS has not been enabled.', n.nspname, c.relname),
       jsonb_build_object('schema', n.nspname, 'name', c.relname, 'type', 'table'),
       format('rls_disabled_in_public_%s_%s', n.nspname, c.relname)
from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and not c.relispartition and not c.relrowsecurity
  and n.nspname = any({_EXPOSED}) and n.nspname <> all({_PLATFORM})
  and exists (select 1 from {_API_ROLES} api where pg_catalog.has_table_privilege(api.oid, c.oid, 'SELECT'))
""",
    ),
    Lint(
        name="rls_enabled_no_policy",
        kind=SECURITY,
        title="RLS Enabled No Policy",
        level="INFO",
        facing="EXTERNAL",
        description="Detects cases where row level security (RLS) has been enabled on a table but no RLS policies "
        "have been created.",
        remediation_page="0008_rls_enabled_no_policy",
        findings=f"""
select format('Table `%s.%s` has RLS enabled, but no policies exist', n.nspname, c.relname),
       jsonb_build_object('schema', n.nspname, 'name', c.relname, 'type', 'table'),
       format('rls_enabled_no_policy_%s_%s', n.nspname, c.relname)
from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and c.relrowsecurity
  and not exists (select 1 from pg_catalog.pg_policy p where p.polrelid = c.oid)
  and n.nspname <> all({_PLATFORM}) and n.nspname not like 'pg\\_temp%'
  and {_NOT_OF_EXTENSION.format(oid="c.oid")}
""",
    ),
    Lint(
        name="security_definer_view",
        kind=SECURITY,
        title="Security Definer View",
        level="ERROR",
        facing="EXTERNAL",
        description="Detects views defined with the SECURITY DEFINER property. These views enforce Postgres "
        "permissions and row level security policies (RLS) of the view creator, rather than that of the querying user",
        remediation_page="0010_security_definer_view",
        # A view runs as its owner unless it says security_invoker (PostgreSQL 15 and later).
        findings=f"""
select format('View `%s.%s` is defined with the SECURITY DEFINER property', n.nspname, c.relname),
       jsonb_build_object('schema', n.nspname, 'name', c.relname, 'type', 'view'),
       format('security_definer_view_%s_%s', n.nspname, c.relname)
from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.relkind = 'v' and current_setting('server_version_num')::int >= 150000
  and n.nspname = any({_EXPOSED}) and n.nspname <> all({_PLATFORM})
  and exists (select 1 from {_API_ROLES} api where pg_catalog.has_table_privilege(api.oid, c.oid, 'SELECT'))
  and {_NOT_OF_EXTENSION.format(oid="c.oid")}
  and not (lower(coalesce(c.reloptions, '{{}}')::text)::text[] && array[
      'security_invoker=1', 'security_invoker=true', 'security_invoker=yes', 'security_invoker=on'])
""",
    ),
    Lint(
        name="function_search_path_mutable",
        kind=SECURITY,
        title="Function Search Path Mutable",
        level="WARN",
        facing="EXTERNAL",
        description="Detects functions where the search_path parameter is not set.",
        remediation_page="0011_function_search_path_mutable",
        findings=f"""
select format('Function `%s.%s` has a role mutable search_path', n.nspname, p.proname),
       jsonb_build_object('schema', n.nspname, 'name', p.proname, 'type', 'function'),
       format('function_search_path_mutable_%s_%s_%s', n.nspname, p.proname, md5(p.prosrc))
from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
where p.prokind in ('f', 'p') and n.nspname <> all({_PLATFORM}) and n.nspname not like 'pg\\_temp%'
  and {_NOT_OF_EXTENSION.format(oid="p.oid")}
  and not exists (select 1 from unnest(coalesce(p.proconfig, '{{}}')) setting where setting like 'search\\_path=%')
""",
    ),
    Lint(
        name="extension_in_public",
        kind=SECURITY,
        title="Extension in Public",
        level="WARN",
        facing="EXTERNAL",
        description="Detects extensions installed in the `public` schema.",
        remediation_page="0014_extension_in_public",
        findings="""
select format('Extension `%s` is installed in the public schema. Move it to another schema.', e.extname),
       jsonb_build_object('schema', 'public', 'name', e.extname, 'type', 'extension'),
       format('extension_in_public_%s', e.extname)
from pg_catalog.pg_extension e
where e.extnamespace = 'public'::regnamespace
""",
    ),
    Lint(
        name="auth_rls_initplan",
        kind=PERFORMANCE,
        title="Auth RLS Initialization Plan",
        level="WARN",
        facing="EXTERNAL",
        description="Detects if calls to `current_setting()` and `auth.<function>()` in RLS policies are being "
        "unnecessarily re-evaluated for each row",
        remediation_page="0003_auth_rls_initplan",
        # A call not wrapped in a scalar subquery (`(select auth.uid())`, which PostgreSQL runs once
        # per statement) runs once per row.
        findings=rf"""
select format('Table `%s.%s` has a row level security policy `%s` that re-evaluates current_setting() or '
              'auth.<function>() for each row. This produces suboptimal query performance at scale. Resolve '
              'the issue by replacing `auth.<function>()` with `(select auth.<function>())`. See [docs]'
              '(https://supabase.com/docs/guides/database/postgres/row-level-security#call-functions-with-select) '
              'for more info.', n.nspname, c.relname, p.polname),
       jsonb_build_object('schema', n.nspname, 'name', c.relname, 'type', 'table'),
       format('auth_rls_init_plan_%s_%s_%s', n.nspname, c.relname, p.polname)
from pg_catalog.pg_policy p
  join pg_catalog.pg_class c on c.oid = p.polrelid
  join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  cross join lateral (select lower(concat_ws(' ', pg_catalog.pg_get_expr(p.polqual, p.polrelid),
                                             pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid))) as expr) e
where n.nspname <> all({_PLATFORM})
  and regexp_replace(e.expr, 'select\s+(auth\.(uid|jwt|role|email)\(\)|current_setting\([^)]*\))', '', 'g')
      ~ '(auth\.(uid|jwt|role|email)\(\)|current_setting\()'
""",
    ),
    Lint(
        name="no_primary_key",
        kind=PERFORMANCE,
        title="No Primary Key",
        level="INFO",
        facing="EXTERNAL",
        description="Detects if a table does not have a primary key. Tables without a primary key can be "
        "inefficient to interact with at scale.",
        remediation_page="0004_no_primary_key",
        findings=f"""
select format('Table `%s.%s` does not have a primary key', n.nspname, c.relname),
       jsonb_build_object('schema', n.nspname, 'name', c.relname, 'type', 'table'),
       format('no_primary_key_%s_%s', n.nspname, c.relname)
from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.relkind = 'r' and n.nspname <> all({_PLATFORM}) and n.nspname not like 'pg\\_temp%'
  and {_NOT_OF_EXTENSION.format(oid="c.oid")}
  and not exists (select 1 from pg_catalog.pg_index i where i.indrelid = c.oid and i.indisprimary)
""",
    ),
    Lint(
        name="unindexed_foreign_keys",
        kind=PERFORMANCE,
        title="Unindexed foreign keys",
        level="INFO",
        facing="EXTERNAL",
        description="Identifies foreign key constraints without a covering index, which can impact database "
        "performance.",
        remediation_page="0001_unindexed_foreign_keys",
        # Covered when an index's leading columns are the key's columns, in the key's order.
        findings=f"""
select format('Table `%s.%s` has a foreign key `%s` without a covering index. This can lead to suboptimal '
              'query performance.', n.nspname, c.relname, k.conname),
       jsonb_build_object('schema', n.nspname, 'name', c.relname, 'type', 'table',
                          'fkey_name', k.conname, 'fkey_columns', k.conkey),
       format('unindexed_foreign_keys_%s_%s_%s', n.nspname, c.relname, k.conname)
from pg_catalog.pg_constraint k
  join pg_catalog.pg_class c on c.oid = k.conrelid
  join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where k.contype = 'f' and n.nspname <> all({_PLATFORM}) and {_NOT_OF_EXTENSION.format(oid="c.oid")}
  and not exists (
      select 1 from pg_catalog.pg_index i
      where i.indrelid = k.conrelid and i.indisvalid
        and (string_to_array(i.indkey::text, ' ')::smallint[])[1:cardinality(k.conkey)] = k.conkey)
""",
    ),
    Lint(
        name="duplicate_index",
        kind=PERFORMANCE,
        title="Duplicate Index",
        level="WARN",
        facing="EXTERNAL",
        description="Detects cases where two ore more identical indexes exist.",
        remediation_page="0009_duplicate_index",
        # Identical: same table, columns, operator classes, collations, expressions and predicate.
        findings=f"""
select format('Table `%s.%s` has identical indexes %s. Drop all except one of them', n.nspname, c.relname, names),
       jsonb_build_object('schema', n.nspname, 'name', c.relname,
                          'type', case c.relkind when 'm' then 'materialized view' else 'table' end,
                          'indexes', names),
       format('duplicate_index_%s_%s_%s', n.nspname, c.relname, names)
from (
    select i.indrelid, array_agg(x.relname::text order by x.relname) as names
    from pg_catalog.pg_index i join pg_catalog.pg_class x on x.oid = i.indexrelid
    group by i.indrelid, i.indkey::text, i.indclass::text, i.indcollation::text, i.indoption::text,
             pg_catalog.pg_get_expr(i.indexprs, i.indrelid), pg_catalog.pg_get_expr(i.indpred, i.indrelid),
             x.relam
    having count(*) > 1
) d
  join pg_catalog.pg_class c on c.oid = d.indrelid
  join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p', 'm') and n.nspname <> all({_PLATFORM}) and {_NOT_OF_EXTENSION.format(oid="c.oid")}
""",
    ),
    Lint(
        name="unused_index",
        kind=PERFORMANCE,
        title="Unused Index",
        level="INFO",
        facing="EXTERNAL",
        description="Detects if an index has never been used and may be a candidate for removal.",
        remediation_page="0005_unused_index",
        # Never scanned since statistics were last reset; unique and primary-key indexes enforce
        # something and are never candidates.
        findings=f"""
select format('Index `%s` on table `%s.%s` has not been used', s.indexrelname, s.schemaname, s.relname),
       jsonb_build_object('schema', s.schemaname, 'name', s.relname, 'type', 'table'),
       format('unused_index_%s_%s_%s', s.schemaname, s.relname, s.indexrelname)
from pg_catalog.pg_stat_user_indexes s join pg_catalog.pg_index i on i.indexrelid = s.indexrelid
where s.idx_scan = 0 and not i.indisunique and not i.indisprimary
  and s.schemaname <> all({_PLATFORM}) and {_NOT_OF_EXTENSION.format(oid="s.relid")}
""",
    ),
)


def lints_sql(kind: str) -> str:
    """One statement: every finding of the kind's lints, a row each, in the lint shape."""
    if kind not in KINDS:
        raise ValueError(f"unknown advisor kind {kind!r}")
    parts = []
    for lint in (lint for lint in LINTS if lint.kind == kind):
        fixed = ", ".join(
            _literal(value) for value in (lint.name, lint.title, lint.level, lint.facing, lint.description)
        )
        parts.append(
            f"select {fixed}, array[{_literal(lint.categories[0])}]::text[] as categories, "
            f"f.detail, {_literal(lint.remediation)} as remediation, f.metadata, f.cache_key "
            f"from ({lint.findings.strip()}) as f(detail, metadata, cache_key)"
        )
    return (
        "select name, title, level, facing, categories, description, detail, remediation, metadata, cache_key "
        "from (" + "\nunion all\n".join(parts) + ") as lints(name, title, level, facing, description, categories, "
        "detail, remediation, metadata, cache_key) order by name, cache_key"
    )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
